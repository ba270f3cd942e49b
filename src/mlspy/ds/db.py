"""The Delivery Service's database: one schema, SQLite (default) or PostgreSQL.

Every request that changes state runs in one transaction that is durable before the request is
acknowledged. SQLite serializes writers (``BEGIN IMMEDIATE``, WAL, ``synchronous=FULL``);
PostgreSQL runs transactions at SERIALIZABLE-safe row locks (``SELECT … FOR UPDATE`` on the
group row), so several DS processes can share one database. SQL is written once with ``?``
placeholders and translated for psycopg.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from mlspy.errors import StorageError

Row = tuple[Any, ...]

_TABLES = [
    """CREATE TABLE IF NOT EXISTS clients (
        id TEXT PRIMARY KEY,
        identity {blob} NOT NULL UNIQUE,
        signature_key {blob} NOT NULL UNIQUE,
        credential {blob} NOT NULL,
        cipher_suite INTEGER NOT NULL,
        created DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS challenges (
        nonce {blob} PRIMARY KEY,
        expires DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tokens (
        token TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS key_packages (
        ref {blob} PRIMARY KEY,
        owner TEXT NOT NULL,
        cipher_suite INTEGER NOT NULL,
        data {blob} NOT NULL,
        last_resort INTEGER NOT NULL,
        claimed INTEGER NOT NULL DEFAULT 0)""",
    """CREATE INDEX IF NOT EXISTS key_packages_owner
        ON key_packages (owner, cipher_suite, claimed)""",
    """CREATE TABLE IF NOT EXISTS key_package_claims (
        claimer TEXT NOT NULL,
        owner TEXT NOT NULL,
        ref {blob} NOT NULL,
        last_resort INTEGER NOT NULL,
        created DOUBLE PRECISION NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS key_package_claims_by_claimer
        ON key_package_claims (claimer, created)""",
    """CREATE INDEX IF NOT EXISTS key_package_claims_by_owner
        ON key_package_claims (owner, created)""",
    """CREATE TABLE IF NOT EXISTS groups (
        group_id {blob} PRIMARY KEY,
        epoch BIGINT NOT NULL,
        mode TEXT NOT NULL,
        public_state {blob},
        group_info {blob},
        created DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS group_members (
        group_id {blob} NOT NULL,
        client_id TEXT NOT NULL,
        PRIMARY KEY (group_id, client_id))""",
    """CREATE TABLE IF NOT EXISTS messages (
        seq {serial},
        group_id {blob} NOT NULL,
        epoch BIGINT NOT NULL,
        kind TEXT NOT NULL,
        sender TEXT NOT NULL,
        data {blob} NOT NULL,
        created DOUBLE PRECISION NOT NULL)""",
    # The group as it was before its latest commit, kept so that a commit the members
    # reject (what only members can check: confirmation tag, path secrets) can be undone.
    """CREATE TABLE IF NOT EXISTS group_undo (
        group_id {blob} PRIMARY KEY,
        epoch BIGINT NOT NULL,
        mode TEXT NOT NULL,
        public_state {blob},
        group_info {blob},
        roster TEXT NOT NULL,
        commit_seq BIGINT NOT NULL,
        committer TEXT NOT NULL,
        external INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rejected_commits (
        group_id {blob} NOT NULL,
        epoch BIGINT NOT NULL,
        committer TEXT NOT NULL,
        reporter TEXT NOT NULL,
        external INTEGER NOT NULL,
        created DOUBLE PRECISION NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS rejected_commits_by_group
        ON rejected_commits (group_id, created)""",
    """CREATE TABLE IF NOT EXISTS queue (
        client_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (client_id, seq))""",
    # Names as accounts (``accounts.py``): the hash of each name's recovery secret, and the
    # wrong guesses of it in the current window; invite codes (hashed), single use.
    """CREATE TABLE IF NOT EXISTS accounts (
        identity {blob} PRIMARY KEY,
        recovery_hash {blob},
        failures INTEGER NOT NULL DEFAULT 0,
        failures_since DOUBLE PRECISION NOT NULL DEFAULT 0,
        created DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS invites (
        code_hash {blob} PRIMARY KEY,
        issuer TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        used_by {blob})""",
    """CREATE INDEX IF NOT EXISTS invites_by_issuer ON invites (issuer, created)""",
    # Users and their devices (``devices.py``): each client is a device of one account (the
    # user name); pairing codes (hashed, single use) enrol a new device of an account.
    """CREATE TABLE IF NOT EXISTS devices (
        client_id TEXT PRIMARY KEY,
        account {blob} NOT NULL,
        device TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS devices_by_account ON devices (account)""",
    """CREATE TABLE IF NOT EXISTS pairings (
        code_hash {blob} PRIMARY KEY,
        account {blob} NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        used_by {blob})""",
    """CREATE INDEX IF NOT EXISTS pairings_by_account ON pairings (account, created)""",
    # A device that rotated its signature key: its old client id (the hash of the old key,
    # which its leaves keep until it commits the new one in each group) -> the current one.
    """CREATE TABLE IF NOT EXISTS client_aliases (
        old_id TEXT PRIMARY KEY,
        new_id TEXT NOT NULL)""",
    # --- Retention, quotas and stateless challenges (``retention.py``, ``quotas.py``,
    # ``challenges.py``). New facts live in new tables, so databases made before them open
    # unchanged. ``challenges`` now holds consumed challenges until they expire.
    """CREATE TABLE IF NOT EXISTS ds_secrets (
        name TEXT PRIMARY KEY,
        value {blob} NOT NULL)""",
    # Stored bytes per account (a maintained counter: the quota check on every submit is
    # one primary-key lookup), and what each stored message added to it.
    """CREATE TABLE IF NOT EXISTS quota_usage (
        account {blob} PRIMARY KEY,
        bytes BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS message_usage (
        seq BIGINT PRIMARY KEY,
        account {blob} NOT NULL,
        bytes BIGINT NOT NULL)""",
    # When each KeyPackage was stored and when its lifetime ends (§7.2), for the sweep.
    """CREATE TABLE IF NOT EXISTS key_package_times (
        ref {blob} PRIMARY KEY,
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS key_package_times_by_expiry ON key_package_times (expires)""",
    """CREATE INDEX IF NOT EXISTS key_package_times_by_created ON key_package_times (created)""",
    # Who created each group (the groups quota) and when it was last active (its lifetime).
    """CREATE TABLE IF NOT EXISTS group_meta (
        group_id {blob} PRIMARY KEY,
        account {blob} NOT NULL,
        active DOUBLE PRECISION NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS group_meta_by_account ON group_meta (account)""",
    """CREATE INDEX IF NOT EXISTS group_meta_by_activity ON group_meta (active)""",
    # So that deletions (at ack time and by the sweep) are index lookups, not scans.
    """CREATE INDEX IF NOT EXISTS queue_by_seq ON queue (seq)""",
    """CREATE INDEX IF NOT EXISTS messages_by_group ON messages (group_id, epoch)""",
    """CREATE INDEX IF NOT EXISTS messages_by_age ON messages (created)""",
    """CREATE INDEX IF NOT EXISTS challenges_by_expiry ON challenges (expires)""",
    """CREATE INDEX IF NOT EXISTS tokens_by_expiry ON tokens (expires)""",
    """CREATE INDEX IF NOT EXISTS tokens_by_client ON tokens (client_id)""",
    """CREATE INDEX IF NOT EXISTS key_package_claims_by_age ON key_package_claims (created)""",
    """CREATE INDEX IF NOT EXISTS rejected_commits_by_age ON rejected_commits (created)""",
    """CREATE INDEX IF NOT EXISTS invites_by_expiry ON invites (expires)""",
    """CREATE INDEX IF NOT EXISTS pairings_by_expiry ON pairings (expires)""",
    # Clients registered before devices existed: each the one device ("") of its name.
    """INSERT INTO devices (client_id, account, device, created)
        SELECT id, identity, '', created FROM clients
        WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.client_id = clients.id)""",
]


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int: ...

    def lock_group(self, group_id: bytes) -> Row | None: ...


class Database(Protocol):
    dialect: str

    def transaction(self) -> Any: ...

    def close(self) -> None: ...


class _SQLiteTx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int:
        cur = self._db.execute(sql, tuple(params))
        return int(cur.lastrowid or 0)

    def lock_group(self, group_id: bytes) -> Row | None:
        # BEGIN IMMEDIATE already holds the single writer lock.
        rows = self.execute(
            "SELECT epoch, mode, public_state, group_info FROM groups WHERE group_id = ?",
            (group_id,),
        )
        return rows[0] if rows else None


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._lock = threading.Lock()
        for sql in _TABLES:
            self._db.execute(sql.format(blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT"))

    @contextmanager
    def transaction(self) -> Iterator[_SQLiteTx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTx(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self._conn.execute(sql.replace("?", "%s"), tuple(params))
        if cur.description is None:
            return []
        return [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in cur.fetchall()
        ]

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int:
        rows = self.execute(sql + " RETURNING seq", params)
        return int(rows[0][0])

    def lock_group(self, group_id: bytes) -> Row | None:
        rows = self.execute(
            "SELECT epoch, mode, public_state, group_info FROM groups "
            "WHERE group_id = ? FOR UPDATE",
            (group_id,),
        )
        return rows[0] if rows else None


class PostgresDatabase:
    """PostgreSQL through psycopg 3; a small pool of connections, one per transaction."""

    dialect = "postgresql"

    def __init__(self, dsn: str, pool_size: int = 8) -> None:
        try:
            import psycopg
        except ImportError:
            raise StorageError("PostgreSQL needs psycopg: pip install -e '.[postgres]'") from None
        self._psycopg = psycopg
        self._dsn = dsn
        self._pool: queue.Queue[Any] = queue.Queue()
        try:
            for _ in range(pool_size):
                self._pool.put(psycopg.connect(dsn))
            with self.transaction() as tx:
                tx.execute("SELECT pg_advisory_xact_lock(424242)")  # one migrator at a time
                for sql in _TABLES:
                    tx.execute(sql.format(blob="BYTEA", serial="BIGSERIAL PRIMARY KEY"))
        except psycopg.Error as exc:
            raise StorageError(f"cannot use PostgreSQL at {dsn}: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        conn = self._pool.get()
        try:
            with conn.transaction():
                yield _PgTx(conn)
        finally:
            self._pool.put(conn)

    def notify(self, channel: str, payload: str) -> None:
        with self.transaction() as tx:
            tx.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def listen_connection(self) -> Any:
        return self._psycopg.connect(self._dsn, autocommit=True)

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get().close()


def open_database(url: str) -> SQLiteDatabase | PostgresDatabase:
    """``postgresql://…`` or a path / ``sqlite:///path`` for SQLite."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    return SQLiteDatabase(url.removeprefix("sqlite:///").removeprefix("sqlite://"))
