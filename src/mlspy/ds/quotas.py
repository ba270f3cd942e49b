"""Per-user quotas (issue 18, item 2): what one user (an account, across its devices: see
``devices.account_of``) may keep on the Delivery Service.

- **Stored bytes**: the bytes of the messages (and Welcomes) the user sent that the DS still
  keeps — not yet acknowledged by every recipient, nor past retention. A maintained counter
  per account (``quota_usage``), charged in the submit's transaction by one conditional
  update of one row and credited back when the messages are deleted (``retention.py``), so
  the check on the hot path is a primary-key lookup, never a scan. Over it: 429 with
  ``Retry-After`` — the bytes come back as the recipients fetch (413 for one message larger
  than the whole quota, which waiting would not help).
- **Groups**: groups the user created that still exist (``group_meta``; counted by an index
  range that the quota bounds). Over it: 413 — leave or let go of groups first.
- **KeyPackages**: unclaimed KeyPackages the user's devices keep (an index range per device).
  Over it: 413 — upload fewer; claimed ones make room.
"""

from __future__ import annotations

from mlspy.ds.db import Tx
from mlspy.ds.errors import RateLimited, TooLarge

# Defaults: a text-messaging user stays far below them; a user pushing megabytes to
# recipients who never fetch them meets the first within seconds.
QUOTA_BYTES = 64 << 20
QUOTA_GROUPS = 1000
QUOTA_KEY_PACKAGES = 1000
# How soon to try again after the stored-bytes quota answered 429: recipients fetching
# their queues is what frees it.
BYTES_RETRY_AFTER = 60


def charge_bytes(tx: Tx, account: bytes, n: int, limit: int) -> None:
    """Add ``n`` stored bytes to ``account``, or refuse (429) past ``limit``. One conditional
    update: concurrent submits of one user (PostgreSQL) cannot overshoot together."""
    if n > limit:
        raise TooLarge(f"{n} bytes exceed your {limit}-byte quota of stored messages: send less")
    charged = tx.execute(
        "UPDATE quota_usage SET bytes = bytes + ? WHERE account = ? AND bytes + ? <= ? "
        "RETURNING bytes",
        (n, account, n, limit),
    )
    if charged:
        return
    first = tx.execute(
        "INSERT INTO quota_usage (account, bytes) VALUES (?, ?) "
        "ON CONFLICT (account) DO NOTHING RETURNING bytes",
        (account, n),
    )
    if first:
        return
    rows = tx.execute("SELECT bytes FROM quota_usage WHERE account = ?", (account,))
    used = int(rows[0][0]) if rows else 0
    raise RateLimited(
        f"your messages waiting for delivery take {used} bytes of your {limit}-byte quota, "
        f"and this one needs {n} more: try again once your recipients have fetched them",
        retry_after=BYTES_RETRY_AFTER,
    )


def record_message(tx: Tx, account: bytes, seq: int, n: int) -> None:
    """What stored message ``seq`` weighs on ``account`` (credited back when it goes)."""
    tx.execute(
        "INSERT INTO message_usage (seq, account, bytes) VALUES (?, ?, ?)", (seq, account, n)
    )


def credit_bytes(tx: Tx, account: bytes, n: int) -> None:
    """Give back bytes charged for something that was not stored after all."""
    tx.execute("UPDATE quota_usage SET bytes = bytes - ? WHERE account = ?", (n, account))


def check_groups(tx: Tx, account: bytes, limit: int) -> None:
    rows = tx.execute("SELECT COUNT(*) FROM group_meta WHERE account = ?", (account,))
    if int(rows[0][0]) >= limit:
        raise TooLarge(
            f"you have created {limit} groups that still exist, your quota: leave groups you "
            "no longer use (a group goes when nobody is left on it) before creating more"
        )


def check_key_packages(tx: Tx, account: bytes, adding: int, limit: int) -> None:
    rows = tx.execute(
        "SELECT COUNT(*) FROM devices d JOIN key_packages k ON k.owner = d.client_id "
        "WHERE d.account = ? AND k.claimed = 0 AND k.last_resort IN (0, 1)",
        (account,),
    )
    stored = int(rows[0][0])
    if stored + adding > limit:
        raise TooLarge(
            f"your devices keep {stored} unclaimed KeyPackages and this upload adds {adding}: "
            f"the quota is {limit}; upload fewer (claimed ones make room)"
        )
