"""Operator actions on the Delivery Service's database (``mlspy admin``), run beside a live
server: each is one transaction, as a request's would be, so a server on the same database
sees it at its next request.

A user (an account, the user name) has devices; each device is one client (its id: the first
16 bytes of the hash of its signature key, in hex) with one identity (``user`` or
``user/device``). Where an action takes a *who*, it accepts a client id, an identity, or a
user name (then every device of the user).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from mlspy.ds.config import mask_url
from mlspy.ds.db import Database, Tx, open_database
from mlspy.errors import StorageError

# Tables every DS database has (a restore source must look like one).
_DS_TABLES = ("clients", "tokens", "messages", "queue", "groups")


class AdminError(Exception):
    """An action that cannot be done; ``not_found`` when what it names does not exist."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))


def open_existing(url: str) -> Any:
    """The database at ``url``; a SQLite file must exist already (an admin command never
    creates an empty database by mistyping its path)."""
    if not is_postgres(url) and not sqlite_path(url).is_file():
        raise AdminError(
            f"no database at {url}: give the server's --database (or --config FILE)",
            not_found=True,
        )
    try:
        return open_database(url)
    except StorageError as exc:  # it names the URL: mask the password
        raise AdminError(str(exc).replace(url, mask_url(url))) from None


@dataclass(frozen=True)
class Device:
    client_id: str
    identity: str
    account: str
    device: str
    created: float


def _devices(tx: Tx, where: str = "", params: tuple[Any, ...] = ()) -> list[Device]:
    rows = tx.execute(
        "SELECT c.id, c.identity, d.account, d.device, c.created FROM clients c "
        "JOIN devices d ON d.client_id = c.id " + where + " ORDER BY d.account, d.created, c.id",
        params,
    )
    return [
        Device(
            str(r[0]),
            bytes(r[1]).decode(errors="replace"),
            bytes(r[2]).decode(errors="replace"),
            str(r[3]),
            float(r[4]),
        )
        for r in rows
    ]


def resolve(tx: Tx, who: str) -> list[Device]:
    """The devices ``who`` names: a client id, an identity, or a user name (all its devices)."""
    for where, param in (
        ("WHERE c.id = ?", who),
        ("WHERE c.identity = ?", who.encode()),
        ("WHERE d.account = ?", who.encode()),
    ):
        found = _devices(tx, where, (param,))
        if found:
            return found
    raise AdminError(f"no client, identity or user {who!r} at this server", not_found=True)


def revoke_tokens(db: Database, who: str) -> tuple[list[Device], int]:
    """End every bearer token of the devices ``who`` names; returns them and how many tokens
    ended. Each device can log in again with its key (revoke the device to stop that)."""
    with db.transaction() as tx:
        devices = resolve(tx, who)
        ended = 0
        for d in devices:
            ended += len(
                tx.execute("DELETE FROM tokens WHERE client_id = ? RETURNING 1", (d.client_id,))
            )
    return devices, ended


def delete_user(db: Database, user: str) -> dict[str, Any]:
    """Delete a user: the account, its devices (bindings), their tokens, KeyPackages, queued
    messages and places on delivery lists, its pairing codes and unused invite codes.

    Groups are the members': the DS cannot take a leaf out of a group's ratchet tree, so the
    user's leaves stay until a remaining member commits a Remove (they receive nothing more).
    A group left with nobody on its delivery list is deleted with its stored messages.
    """
    account = user.encode()
    with db.transaction() as tx:
        devices = _devices(tx, "WHERE d.account = ?", (account,))
        has_account = bool(tx.execute("SELECT 1 FROM accounts WHERE identity = ?", (account,)))
        if not devices and not has_account:
            raise AdminError(f"no user {user!r} at this server", not_found=True)
        ids = [d.client_id for d in devices]
        groups: set[bytes] = set()
        queued = 0
        for cid in ids:
            groups |= {
                bytes(r[0])
                for r in tx.execute(
                    "SELECT group_id FROM group_members WHERE client_id = ?", (cid,)
                )
            }
            queued += len(tx.execute("DELETE FROM queue WHERE client_id = ? RETURNING 1", (cid,)))
            for sql in (
                "DELETE FROM clients WHERE id = ?",
                "DELETE FROM devices WHERE client_id = ?",
                "DELETE FROM tokens WHERE client_id = ?",
                "DELETE FROM key_packages WHERE owner = ?",
                "DELETE FROM group_members WHERE client_id = ?",
                "DELETE FROM client_aliases WHERE new_id = ?",
                "DELETE FROM key_package_claims WHERE owner = ?",
            ):
                tx.execute(sql, (cid,))
        tx.execute("DELETE FROM accounts WHERE identity = ?", (account,))
        tx.execute("DELETE FROM pairings WHERE account = ?", (account,))
        for d in devices:  # codes the user made for friends and nobody used yet
            tx.execute(
                "DELETE FROM invites WHERE used_by IS NULL AND issuer = ?",
                ("user:" + d.identity.encode().hex(),),
            )
        emptied = []
        for gid in sorted(groups):
            if not tx.execute("SELECT 1 FROM group_members WHERE group_id = ? LIMIT 1", (gid,)):
                emptied.append(gid)
                for sql in (
                    "DELETE FROM queue WHERE seq IN (SELECT seq FROM messages WHERE group_id = ?)",
                    "DELETE FROM messages WHERE group_id = ?",
                    "DELETE FROM group_undo WHERE group_id = ?",
                    "DELETE FROM rejected_commits WHERE group_id = ?",
                    "DELETE FROM groups WHERE group_id = ?",
                ):
                    tx.execute(sql, (gid,))
    return {
        "user": user,
        "devices": [d.identity for d in devices],
        "queued_messages_dropped": queued,
        "groups_left": len(groups) - len(emptied),
        "groups_deleted": [g.hex() for g in emptied],
    }


def queue_depth(
    db: Database, *, group: bytes | None = None, who: str | None = None
) -> dict[str, Any]:
    """Messages waiting (queued, not yet acknowledged): per client, for one group, one
    client (or user), or the whole server."""
    with db.transaction() as tx:
        params: tuple[Any, ...] = ()
        where = ""
        if who is not None:
            ids = [d.client_id for d in resolve(tx, who)]
            where = "WHERE q.client_id IN (" + ", ".join("?" * len(ids)) + ")"
            params = tuple(ids)
        if group is not None:
            if not tx.execute("SELECT 1 FROM groups WHERE group_id = ?", (group,)):
                raise AdminError(f"no group {group.hex()} at this server", not_found=True)
            where += (" AND " if where else "WHERE ") + "m.group_id = ?"
            params += (group,)
        rows = tx.execute(
            "SELECT q.client_id, COUNT(*), MIN(m.created) FROM queue q "
            "JOIN messages m ON m.seq = q.seq " + where + " GROUP BY q.client_id "
            "ORDER BY COUNT(*) DESC, q.client_id",
            params,
        )
        names = (
            {
                d.client_id: d.identity
                for d in _devices(tx, "WHERE c.id IN (SELECT client_id FROM queue)")
            }
            if rows
            else {}
        )
    clients: list[dict[str, Any]] = [
        {
            "client_id": str(r[0]),
            "identity": names.get(str(r[0])),
            "waiting": int(r[1]),
            "oldest": float(r[2]),
        }
        for r in rows
    ]
    return {"waiting": sum(int(c["waiting"]) for c in clients), "clients": clients}


def users(db: Database) -> list[dict[str, Any]]:
    """Every user with its devices."""
    with db.transaction() as tx:
        devices = _devices(tx)
        accounts = {
            bytes(r[0]).decode(errors="replace"): (r[1] is not None, float(r[2]))
            for r in tx.execute("SELECT identity, recovery_hash, created FROM accounts")
        }
    out: dict[str, dict[str, Any]] = {}
    for name, (recovery, created) in accounts.items():
        out[name] = {"user": name, "recovery": recovery, "created": created, "devices": []}
    for d in devices:
        entry = out.setdefault(
            d.account, {"user": d.account, "recovery": False, "created": d.created, "devices": []}
        )
        entry["devices"].append(
            {
                "device": d.device,
                "identity": d.identity,
                "client_id": d.client_id,
                "created": d.created,
            }
        )
    return [out[name] for name in sorted(out)]


def create_invites(db: Database, count: int) -> list[str]:
    """``count`` single-use invite codes of the operator (``registration = "invite"``)."""
    from mlspy.ds.service import DeliveryService

    service = DeliveryService(db)
    return [service.create_invite()[0] for _ in range(count)]


# --- Backup and restore ----------------------------------------------------------------------


def backup(url: str, to: Path) -> str:
    """Copy the database at ``url`` to the file ``to`` while the server may be writing;
    returns how (for the operator). SQLite: the online backup API (a consistent snapshot,
    written to a temporary file and renamed). PostgreSQL: ``pg_dump --format=custom``."""
    if to.exists():
        raise AdminError(f"{to} exists: choose a new file (a backup never overwrites)")
    if is_postgres(url):
        _run_pg("pg_dump", ["--format=custom", "--no-owner", "--file", str(to)], url)
        return f"pg_dump --format=custom of {_without_password(url)} to {to}"
    source = sqlite_path(url)
    if not source.is_file():
        raise AdminError(f"no database at {source}", not_found=True)
    to.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=to.parent, prefix=f".{to.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _sqlite_copy(source, Path(tmp))
        os.replace(tmp, to)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return f"SQLite online backup of {source} to {to}"


def restore(backup_file: Path, url: str, *, force: bool = False) -> str:
    """Put a backup made by :func:`backup` into the database at ``url`` (stop the servers
    first). SQLite: ``url`` must be a new file unless ``force``. PostgreSQL: ``pg_restore
    --clean --if-exists`` (its tables are replaced)."""
    if not backup_file.is_file():
        raise AdminError(f"no backup file {backup_file}", not_found=True)
    if is_postgres(url):
        _run_pg("pg_restore", ["--clean", "--if-exists", "--no-owner", str(backup_file)], url)
        return f"pg_restore of {backup_file} into {_without_password(url)}"
    _check_sqlite_backup(backup_file)
    target = sqlite_path(url)
    if target.exists() and not force:
        raise AdminError(
            f"{target} exists: restore into a new file (or give --force with every server "
            "on it stopped)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):  # a stale WAL of the old file must not be replayed
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    _sqlite_copy(backup_file, target)
    return f"restored {backup_file} into {target}"


def _sqlite_copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(str(target))
        try:
            # Pages in steps, so a server writing meanwhile is not held up for the whole
            # copy; the API restarts the copy if the source changes under it, and the result
            # is one consistent snapshot.
            src.backup(dst, pages=256)
        finally:
            dst.close()
    finally:
        src.close()


def _check_sqlite_backup(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.Error:
        names = set()
    if not set(_DS_TABLES) <= names:
        raise AdminError(f"{path} is not a backup of an mlspy Delivery Service database")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{host}{port}"))


def _run_pg(tool: str, args: list[str], url: str) -> None:
    """Run a PostgreSQL client tool on ``url``; the password goes in PGPASSWORD, not on the
    command line (where ``ps`` shows it to every user of the machine)."""
    exe = shutil.which(tool)
    if exe is None:
        raise AdminError(
            f"{tool} not found: install the PostgreSQL client tools (Debian: postgresql-client) "
            "of the server's major version"
        )
    env = dict(os.environ)
    password = urlsplit(url).password
    if password is not None:
        env["PGPASSWORD"] = unquote(password)
    run = subprocess.run(
        [exe, *args, "--dbname", _without_password(url)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise AdminError(f"{tool} failed: {run.stderr.strip()[-500:]}")


__all__ = [
    "AdminError",
    "Device",
    "backup",
    "create_invites",
    "delete_user",
    "is_postgres",
    "open_existing",
    "queue_depth",
    "restore",
    "revoke_tokens",
    "users",
]
