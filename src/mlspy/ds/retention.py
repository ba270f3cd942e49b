"""What the Delivery Service keeps, and for how long (issue 18, item 3).

- A message is deleted once every recipient has acknowledged it (or it had none), in the
  ack's own transaction (``forget_delivered``). The exception is commits: the undo
  machinery (``reject_commit``) and a committer retrying a commit whose answer it lost
  (``_accepted_again``, possibly after newer commits) look them up, so they stay until the
  retention sweep.
- A message nobody acknowledged is deleted with its queue entries ``retention`` seconds after
  it was accepted (the periodic ``sweep``).
- A KeyPackage is deleted when its lifetime (§7.2) ends; a claimed (or retired last-resort)
  one — kept so the Welcome that uses it finds its owner — also after ``retention``.
- A group (its state, GroupInfo, delivery list, undo record, queued messages) is deleted when
  nobody is left on its delivery list (at the leave or revocation that empties it), or when
  nothing was accepted for it for ``group_retention`` seconds. The stored GroupInfo is the
  group's latest; it is replaced by each commit and goes with the group.
- Consumed challenges, expired tokens, pairing and invite codes, and claim and rejection
  records older than the windows that count them are deleted by the sweep.

The sweep works in batches of ``batch`` rows, one transaction each, so it never holds the
writer (SQLite's lock, PostgreSQL's row locks) for long; every batch is an index range scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mlspy.ds.db import Tx

_CHUNK = 500  # parameters per IN (...) list

DAY = 86400.0


def _chunks(items: Sequence[int] | Sequence[bytes], size: int = _CHUNK) -> list[list[object]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def forget_messages(tx: Tx, seqs: Sequence[int]) -> int:
    """Delete messages, their queue entries and their weight on their sender's quota."""
    for chunk in _chunks(sorted(set(seqs))):
        marks = ", ".join("?" for _ in chunk)
        # What the deleted rows weighed, from the DELETE itself: of two transactions that
        # delete one message at once (an ack and the sweep, on PostgreSQL), only the one
        # whose DELETE removed the row credits it back.
        charged: dict[bytes, int] = {}
        for account, n in tx.execute(
            f"DELETE FROM message_usage WHERE seq IN ({marks}) RETURNING account, bytes", chunk
        ):
            charged[bytes(account)] = charged.get(bytes(account), 0) + int(n)
        for account in sorted(charged):  # one order of row locks: no deadlock between two
            tx.execute(
                "UPDATE quota_usage SET bytes = bytes - ? WHERE account = ?",
                (charged[account], account),
            )
        for table in ("queue", "messages"):
            tx.execute(f"DELETE FROM {table} WHERE seq IN ({marks})", chunk)
    return len(set(seqs))


def forget_delivered(tx: Tx, seqs: Sequence[int]) -> int:
    """Of ``seqs``, delete the messages no queue holds any more (everyone acknowledged them,
    or they had no recipient) — but a group's latest commit (see the module docstring)."""
    done: list[int] = []
    # Acks of the same message's last receivers may commit at once on two PostgreSQL nodes;
    # each would still see the other's queue row (READ COMMITTED) and leave the message to
    # the sweep. Taking the message rows first makes the second wait for the first and then
    # read after it (a new snapshot per statement), so one of them deletes it.
    tx.lock_messages(sorted(set(seqs)))
    for chunk in _chunks(sorted(set(seqs))):
        marks = ", ".join("?" for _ in chunk)
        rows = tx.execute(
            "SELECT m.seq, m.kind, m.epoch, g.epoch FROM messages m LEFT JOIN groups g "
            f"ON g.group_id = m.group_id WHERE m.seq IN ({marks}) AND NOT EXISTS "
            "(SELECT 1 FROM queue q WHERE q.seq = m.seq)",
            chunk,
        )
        # Commits stay until the retention sweep: a committer whose answer was lost asks
        # again later (``_accepted_again``), possibly after newer commits were accepted.
        done += [int(r[0]) for r in rows if r[1] != "commit" or r[3] is None]
    return forget_messages(tx, done)


def forget_old_commits(tx: Tx, group_id: bytes, before_epoch: int) -> int:
    """A new commit was accepted: nothing goes yet — earlier commits stay until the retention
    sweep, so a committer whose answer was lost learns its commit won (``_accepted_again``)
    even after newer commits (tests/client/test_sdk.py::
    test_refusal_after_a_lost_answer_keeps_the_commit)."""
    del tx, group_id, before_epoch
    return 0


def drop_group(tx: Tx, group_id: bytes) -> None:
    """Delete a group and everything kept for it."""
    rows = tx.execute("SELECT seq FROM messages WHERE group_id = ?", (group_id,))
    forget_messages(tx, [int(r[0]) for r in rows])
    for table in ("group_members", "group_undo", "rejected_commits", "group_meta", "groups"):
        tx.execute(f"DELETE FROM {table} WHERE group_id = ?", (group_id,))


def drop_if_empty(tx: Tx, group_id: bytes) -> bool:
    """Delete a group nobody is on the delivery list of any more."""
    if tx.execute("SELECT 1 FROM group_members WHERE group_id = ? LIMIT 1", (group_id,)):
        return False
    drop_group(tx, group_id)
    return True


# --- The periodic sweep: one step per kind of row, each returning how many it deleted. -----

Step = Callable[[Tx, float, int], int]


def _old_messages(retention: float) -> Step:
    def step(tx: Tx, now: float, batch: int) -> int:
        rows = tx.execute(
            "SELECT seq FROM messages WHERE created < ? ORDER BY created LIMIT ?",
            (now - retention, batch),
        )
        return forget_messages(tx, [int(r[0]) for r in rows])

    return step


def _key_packages(retention: float) -> Step:
    def step(tx: Tx, now: float, batch: int) -> int:
        expired = tx.execute(
            "SELECT ref FROM key_package_times WHERE expires < ? LIMIT ?", (now, batch)
        )
        # Claimed and retired ones past retention; and times of KeyPackages deleted since.
        spent = tx.execute(
            "SELECT t.ref FROM key_package_times t LEFT JOIN key_packages k ON k.ref = t.ref "
            "WHERE t.created < ? AND (k.ref IS NULL OR k.claimed = 1 OR k.last_resort = 2) "
            "LIMIT ?",
            (now - retention, batch),
        )
        refs = sorted({bytes(r[0]) for r in expired + spent})[:batch]
        for chunk in _chunks(refs):
            marks = ", ".join("?" for _ in chunk)
            tx.execute(f"DELETE FROM key_packages WHERE ref IN ({marks})", chunk)
            tx.execute(f"DELETE FROM key_package_times WHERE ref IN ({marks})", chunk)
        return len(refs)

    return step


def _idle_groups(group_retention: float) -> Step:
    def step(tx: Tx, now: float, batch: int) -> int:
        rows = tx.execute(
            "SELECT group_id FROM group_meta WHERE active < ? LIMIT ?",
            (now - group_retention, batch),
        )
        for row in rows:
            drop_group(tx, bytes(row[0]))
        return len(rows)

    return step


def _expired(table: str, key: str, column: str, age: float) -> Step:
    """Rows of ``table`` whose ``column`` is more than ``age`` seconds in the past."""

    def step(tx: Tx, now: float, batch: int) -> int:
        rows = tx.execute(
            f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} "
            f"WHERE {column} < ? LIMIT ?) RETURNING 1",
            (now - age, batch),
        )
        return len(rows)

    return step


def steps(
    *,
    dialect: str,
    retention: float,
    group_retention: float,
    claim_window: float,
    rejection_window: float,
) -> dict[str, Step]:
    """What one sweep deletes, by kind."""
    row_id = "ctid" if dialect == "postgresql" else "rowid"  # tables without a key
    return {
        "messages": _old_messages(retention),
        "key_packages": _key_packages(retention),
        "groups": _idle_groups(group_retention),
        "challenges": _expired("challenges", "nonce", "expires", 0.0),
        "tokens": _expired("tokens", "token", "expires", 0.0),
        # Kept an hour past expiry: ``create_pairing`` counts an account's codes per hour.
        "pairings": _expired("pairings", "code_hash", "expires", 3600.0),
        # Kept a day past expiry: ``create_invite`` counts a user's codes per day.
        "invites": _expired("invites", "code_hash", "expires", DAY),
        "key_package_claims": _expired("key_package_claims", row_id, "created", claim_window),
        "rejected_commits": _expired("rejected_commits", row_id, "created", rejection_window),
    }
