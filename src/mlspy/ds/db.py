"""The Delivery Service's database: one schema, SQLite (default) or PostgreSQL.

Every request that changes state runs in one transaction that is durable before the request is
acknowledged. SQLite serializes writers (``BEGIN IMMEDIATE``, WAL, ``synchronous=FULL``);
PostgreSQL runs transactions at SERIALIZABLE-safe row locks (``SELECT … FOR UPDATE`` on the
group row), so several DS processes can share one database. SQL is written once with ``?``
placeholders and translated for psycopg.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from mlspy.ds.errors import Unavailable
from mlspy.errors import StorageError

log = logging.getLogger("mlspy.ds.db")

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

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many rows (no result): a message's queue rows, a batch of
        acks. On PostgreSQL one round trip (psycopg pipelines it), not one per row."""
        ...

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int: ...

    def lock_group(self, group_id: bytes) -> Row | None: ...

    def lock_messages(self, seqs: Sequence[int]) -> None:
        """Hold the rows of these messages until the transaction ends (in seq order, so two
        transactions never wait for each other in a cycle)."""
        ...

    def publish(self, item: object) -> None:
        """Hand ``item`` to the database's ``on_publish`` once this transaction is durable
        (SQLite: with the other items of its COMMIT, in the order they were published;
        dropped if the transaction rolls back). PostgreSQL: nothing (see ``on_publish``)."""
        ...


class Database(Protocol):
    dialect: str

    def transaction(self) -> Any: ...

    def read(self) -> Any: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One read-only statement on its own (no explicit transaction): the hot reads —
        a socket's queue, a token — in one round trip."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


# Called on a SQLite transaction's thread once a body that published something
# (``Tx.publish``: it queued a message) has run and left the writer, before it waits for its
# COMMIT: an ordered stream of transactions (one socket's submissions) can start the next
# then, so the two share a COMMIT, and still run in order. Other transactions of the same
# call (a token read on a database in memory) do not call it. PostgreSQL does not call it (a
# transaction there holds its locks until its COMMIT).
BODY_RAN: ContextVar[Callable[[], object] | None] = ContextVar("body_ran", default=None)

# How long a client should wait before trying again when the database is away (seconds).
RETRY_AFTER = 1


def _unavailable(why: str) -> Unavailable:
    """503 for the client; the reason (which names hosts and ports) goes to the log only."""
    log.warning("database unavailable: %s", why)
    return Unavailable("the database is unavailable; try again", retry_after=RETRY_AFTER)


class _SQLiteTx:
    def __init__(self, db: sqlite3.Connection, published: list[object] | None = None) -> None:
        self._db = db
        self._published = published

    def publish(self, item: object) -> None:
        if self._published is not None:
            self._published.append(item)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._db.executemany(sql, rows)

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int:
        cur = self._db.execute(sql, tuple(params))
        return int(cur.lastrowid or 0)

    def lock_messages(self, seqs: Sequence[int]) -> None:
        del seqs  # BEGIN IMMEDIATE already holds the single writer lock

    def lock_group(self, group_id: bytes) -> Row | None:
        # BEGIN IMMEDIATE already holds the single writer lock.
        rows = self.execute(
            "SELECT epoch, mode, public_state, group_info FROM groups WHERE group_id = ?",
            (group_id,),
        )
        return rows[0] if rows else None


# SQLite result codes (the low byte of ``sqlite_errorcode``) that say the file or the machine
# is in trouble (busy past the timeout, I/O, full disk, read-only, cannot open), not that our
# SQL is wrong: those are worth a retry later, so they become 503 rather than 500.
_SQLITE_TRANSIENT = {
    5,  # SQLITE_BUSY ("database is locked")
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    8,  # SQLITE_READONLY
    10,  # SQLITE_IOERR ("disk I/O error")
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
}


def _sqlite_transient(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _SQLITE_TRANSIENT


class _Batch:
    """The transactions that share one COMMIT (and so one sync to disk), and what they
    published (``Tx.publish``), in order."""

    __slots__ = ("done", "error", "published", "size", "started")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.published: list[object] = []
        self.size = 0
        self.started = time.monotonic()


class SQLiteDatabase:
    """SQLite in WAL mode: one writer connection with group commit, and one read connection
    per thread.

    Group commit: each :meth:`transaction` runs its body inside a SAVEPOINT of one open
    transaction; the body of a thread that finds no other writer waiting ends it with one
    COMMIT (one sync of the WAL, ``synchronous=FULL``) for every body run since the last
    one. A body's context manager returns only once that COMMIT is durable, so nothing is
    acknowledged before it is on disk; a failed COMMIT fails every body of the batch (503),
    and a body that fails rolls back to its savepoint only. While one batch is synced, the
    next gathers: under load, many requests share a sync instead of queueing one sync each.

    Reads (:meth:`read`) use a connection of their own per thread: WAL readers see the last
    committed state and never wait for the writer."""

    dialect = "sqlite"
    # At most this many bodies share a COMMIT, and a batch is committed this long after it
    # began, so none waits long for a busy batch (nor another process for the file).
    MAX_BATCH = 128
    MAX_BATCH_AGE = 0.005

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._path = str(path)
        self._busy_ms = int(busy_timeout * 1000)
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # How long a writer waits for another process's lock before it is 503.
        self._db.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self._waiting = 0  # threads waiting for ``_lock`` (guarded by ``_count``)
        self._batch: _Batch | None = None  # the open transaction, if any (under ``_lock``)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        # Called, holding the writer, with what each COMMIT's transactions published
        # (``Tx.publish``), batch after batch in commit order; it must not block.
        self.on_publish: Callable[[list[object]], None] | None = None
        # Counters (``stats``): transaction bodies run, and COMMITs (syncs) they took.
        self.bodies = 0
        self.commits = 0
        # A database in memory is one connection's own: reads go through the writer.
        self._shared = self._path not in ("", ":memory:") and "mode=memory" not in self._path
        # Processes sharing the file (``mlspy serve --workers``) take turns at writing
        # through a blocking lock on a file beside it: the next one wakes the moment the
        # lock is free, where SQLite's own busy handler sleeps and polls (measured: two
        # workers without it were slower than one).
        self._turns = (
            os.open(self._path + "-writer", os.O_RDWR | os.O_CREAT, 0o600) if self._shared else None
        )
        for sql in _TABLES:
            self._db.execute(sql.format(blob="BLOB", serial="INTEGER PRIMARY KEY AUTOINCREMENT"))

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the writer connection; on leaving, COMMIT the open batch unless another
        thread is waiting for its turn (then the last of them commits it)."""
        with self._count:
            self._waiting += 1
        self._lock.acquire()
        with self._count:
            self._waiting -= 1
        try:
            yield
        finally:
            try:
                batch = self._batch
                if batch is not None and (
                    self._waiting == 0
                    or batch.size >= self.MAX_BATCH
                    or time.monotonic() - batch.started >= self.MAX_BATCH_AGE
                ):
                    self._commit(batch)
            finally:
                self._lock.release()

    def _commit(self, batch: _Batch) -> None:
        self._batch = None
        self.commits += 1
        try:
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # batch.error says why
                    self._db.execute("ROLLBACK")
            batch.error = exc
        else:
            # Still holding the writer: batches are handed over in the order they committed.
            if batch.published and self.on_publish is not None:
                try:
                    self.on_publish(batch.published)
                except Exception:  # the readers' loss (they read later), not the writers'
                    log.exception("publishing a committed batch failed")
        finally:
            self._unlock_file()
            batch.done.set()

    def _lock_file(self) -> None:
        if self._turns is not None:
            fcntl.flock(self._turns, fcntl.LOCK_EX)

    def _unlock_file(self) -> None:
        if self._turns is not None:
            fcntl.flock(self._turns, fcntl.LOCK_UN)

    def _abort(self, batch: _Batch, exc: BaseException) -> None:
        """The open transaction is unusable: every body of the batch fails with ``exc``."""
        self._batch = None
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
        self._unlock_file()
        batch.error = exc
        batch.done.set()

    @contextmanager
    def transaction(self) -> Iterator[_SQLiteTx]:
        """One durable transaction (see the class docstring); a locked, full or failing file
        is :class:`Unavailable` (nothing of it was committed)."""
        failure: BaseException | None = None
        with self._turn():
            batch = self._batch
            if batch is None:
                self._lock_file()
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    self._unlock_file()
                    if _sqlite_transient(exc):
                        raise _unavailable(str(exc)) from None
                    raise
                batch = self._batch = _Batch()
            batch.size += 1
            self.bodies += 1
            self._db.execute("SAVEPOINT body")
            published = len(batch.published)
            try:
                yield _SQLiteTx(self._db, batch.published)
                self._db.execute("RELEASE body")
            except BaseException as exc:
                failure = exc
                del batch.published[published:]  # rolled back: never was
                try:
                    self._db.execute("ROLLBACK TO body")
                    self._db.execute("RELEASE body")
                except sqlite3.Error as undo:
                    self._abort(batch, undo)
        ran = BODY_RAN.get()
        if ran is not None and failure is None and len(batch.published) > published:
            ran()
        # Wait for the COMMIT of our batch, even after a failure: the body may have decided
        # on what others of the batch wrote, which is only true once that is committed.
        batch.done.wait()
        if batch.error is not None:
            if _sqlite_transient(batch.error):
                raise _unavailable(str(batch.error)) from None
            if failure is None or not isinstance(failure, Exception):
                raise batch.error
            raise _unavailable(f"the transaction was rolled back: {batch.error}") from None
        if failure is not None:
            if _sqlite_transient(failure):
                raise _unavailable(str(failure)) from None
            raise failure

    @property
    def waiting(self) -> int:
        """Threads waiting for their turn at the writer connection now."""
        return self._waiting

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:  # a thread that never read before must not reopen the file
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._count:
                self._readers.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[_SQLiteTx]:
        """A read-only snapshot of the last committed state, without waiting for writers."""
        if not self._shared:
            with self.transaction() as tx:
                yield tx
            return
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                yield _SQLiteTx(conn)
            finally:
                conn.execute("COMMIT")  # a read-only transaction: nothing to sync
        except sqlite3.Error as exc:
            if _sqlite_transient(exc):
                raise _unavailable(str(exc)) from None
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One statement in autocommit mode: SQLite reads it from one snapshot anyway, so
        the BEGIN and COMMIT of :meth:`read` are two calls saved."""
        if not self._shared:
            with self.transaction() as tx:
                return tx.execute(sql, params)
        try:
            return self._reader().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            if _sqlite_transient(exc):
                raise _unavailable(str(exc)) from None
            raise

    def ping(self) -> None:
        """Read the schema page (``SELECT 1`` alone would not touch the file)."""
        with self._turn():
            try:
                self._db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.Error as exc:
                raise _unavailable(str(exc)) from None

    def close(self) -> None:
        with self._count:
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._db.close()
        if self._turns is not None:
            os.close(self._turns)
            self._turns = None


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def publish(self, item: object) -> None:
        del item  # nodes share the database: each socket reads what it is sent

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self._conn.execute(sql.replace("?", "%s"), tuple(params))
        if cur.description is None:
            return []
        return [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in cur.fetchall()
        ]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)

    def insert_returning_seq(self, sql: str, params: Sequence[Any]) -> int:
        rows = self.execute(sql + " RETURNING seq", params)
        return int(rows[0][0])

    def lock_messages(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.execute(
                "SELECT seq FROM messages WHERE seq = ANY(?) ORDER BY seq FOR UPDATE",
                (sorted(seqs),),
            )

    def lock_group(self, group_id: bytes) -> Row | None:
        rows = self.execute(
            "SELECT epoch, mode, public_state, group_info FROM groups "
            "WHERE group_id = ? FOR UPDATE",
            (group_id,),
        )
        return rows[0] if rows else None


# SQLSTATE classes after which the transaction is known to be rolled back and a retry may
# succeed: connection exception, transaction rollback (serialization failure, deadlock),
# insufficient resources, operator intervention (admin shutdown, "starting up").
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "57")


class PostgresDatabase:
    """PostgreSQL through psycopg 3: a small pool of connections, one per transaction.

    Theory of operation, for a database that restarts or drops connections:

    * A pool slot holds a connection or nothing; a connection found broken is closed and its
      slot emptied, and an empty slot is filled again (lazily) by the next transaction.
    * Every transaction starts with an explicit ``BEGIN`` round trip, so a stale connection
      fails there, before anything ran: it is replaced and ``BEGIN`` tried again, up to
      ``attempts`` connections with a short growing pause, within about one
      ``connect_timeout``. When no connection can be made, the request is
      :class:`Unavailable` (503, ``retry_after``), and so is every request that needs a new
      connection in the next ``RETRY_AFTER`` seconds, at once: a database that does not
      answer costs one connect timeout per second, not one per request.
    * A failure inside the transaction (the connection lost, the server shutting down, a
      serialization failure) rolls it back: :class:`Unavailable`, and the client's retry is
      safe because nothing was committed. The body of a ``with`` statement cannot be run
      again from here, so that retry is the client's.
    * A failure *during* COMMIT is ambiguous: the server may have committed. The transaction's
      id (taken just before COMMIT, if it wrote anything) is looked up with
      ``pg_xact_status`` on a new connection: committed means success (so a 200 is always a
      commit, and the client does not send the same thing twice); aborted, or unknown
      because the database stays away, is :class:`Unavailable`.
    """

    dialect = "postgresql"

    def __init__(
        self,
        dsn: str,
        pool_size: int = 8,
        *,
        connect_timeout: float = 3.0,
        attempts: int = 3,
        backoff: float = 0.05,
        checkout_timeout: float = 30.0,
        resolve_for: float = 5.0,
    ) -> None:
        try:
            import psycopg
        except ImportError:
            raise StorageError("PostgreSQL needs psycopg: pip install -e '.[postgres]'") from None
        self._psycopg = psycopg
        self._dsn = dsn
        self._connect_timeout = max(1, round(connect_timeout))  # libpq counts whole seconds
        self._attempts = attempts
        self._backoff = backoff
        self._checkout_timeout = checkout_timeout
        self._resolve_for = resolve_for
        self._down_until = 0.0  # no new connection is tried before this (monotonic) time
        self._pool: queue.Queue[Any | None] = queue.Queue()
        try:
            for _ in range(pool_size):
                self._pool.put(self._connect())
            with self.transaction() as tx:
                tx.execute("SELECT pg_advisory_xact_lock(424242)")  # one migrator at a time
                for sql in _TABLES:
                    tx.execute(sql.format(blob="BYTEA", serial="BIGSERIAL PRIMARY KEY"))
        except (psycopg.Error, Unavailable) as exc:
            self.close()
            raise StorageError(f"cannot use PostgreSQL at {_where(dsn)}: {exc}") from None

    def _connect(self, *, autocommit: bool = True) -> Any:
        # Autocommit: BEGIN and COMMIT are sent explicitly, so we know which one failed.
        return self._psycopg.connect(
            self._dsn, autocommit=autocommit, connect_timeout=self._connect_timeout
        )

    def _usable(self, conn: Any) -> bool:
        return conn is not None and not conn.closed and not conn.broken

    def _discard(self, conn: Any) -> None:
        if conn is not None:
            with contextlib.suppress(self._psycopg.Error):  # it was already gone
                conn.close()

    def _transient(self, exc: BaseException) -> bool:
        psycopg = self._psycopg
        if isinstance(exc, psycopg.InterfaceError):
            return True  # e.g. "the connection is closed"
        if not isinstance(exc, psycopg.Error):
            return False
        state: str | None = exc.sqlstate
        if state is None:
            return isinstance(exc, psycopg.OperationalError)  # lost without an answer
        return state.startswith(_PG_TRANSIENT_CLASSES)

    def _begin(self, conn: Any) -> Any:
        """A connection with a transaction open on it: the pooled one if it answers ``BEGIN``,
        else new ones, a bounded number of times. Nothing has run yet, so retrying is safe."""
        conn, _ = self._first(conn, lambda c: c.execute("BEGIN"))
        return conn

    def _first(self, conn: Any, statement: Callable[[Any], Any]) -> tuple[Any, Any]:
        """Run ``statement`` (safe to repeat: a ``BEGIN``, or a read on its own) on the
        pooled connection, else on new ones, a bounded number of times; the connection it
        ran on and its result."""
        start = time.monotonic()
        pause = self._backoff
        last: BaseException | None = None
        for attempt in range(self._attempts + 1):  # the pooled connection, then new ones
            if attempt > 1:  # a stale pooled connection is expected: the first new one is not
                if time.monotonic() - start + pause > self._connect_timeout:
                    break  # the time one connection attempt may take is spent
                time.sleep(pause)
                pause *= 2
            try:
                if not self._usable(conn):
                    self._discard(conn)
                    conn = None
                    if time.monotonic() < self._down_until:
                        # Just found away: answer at once rather than make every request
                        # wait for its own connect timeout (an unanswered one takes that long).
                        raise _unavailable("it was unreachable a moment ago")
                    conn = self._connect()
                    self._down_until = 0.0
                return conn, statement(conn)
            except self._psycopg.Error as exc:
                if not self._transient(exc):
                    self._discard(conn)
                    raise
                last = exc
                self._discard(conn)
                conn = None
        self._down_until = time.monotonic() + RETRY_AFTER
        raise _unavailable(_reason(last)) from None

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        try:
            conn = self._pool.get(timeout=self._checkout_timeout)
        except queue.Empty:
            raise _unavailable("every connection is busy") from None
        try:
            conn = self._begin(conn)
        except BaseException:
            self._pool.put(None)
            raise
        try:
            yield from self._run(conn)
        finally:
            self._pool.put(conn if self._usable(conn) else None)

    def vacuum(self) -> None:
        """``VACUUM`` every table (what autovacuum does in the background): the space of
        deleted rows becomes reusable."""
        conn = self._connect()
        try:
            conn.execute("VACUUM")
        finally:
            conn.close()

    def read(self) -> Any:
        """Reads run in a transaction of the pool like writes (PostgreSQL's MVCC readers do
        not wait for writers)."""
        return self.transaction()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One read on its own in autocommit mode: one round trip, where a transaction takes
        four (``BEGIN``, the read, the transaction id, ``COMMIT``). A read is safe to
        repeat, so a stale pooled connection is replaced just as at ``BEGIN``."""
        try:
            conn = self._pool.get(timeout=self._checkout_timeout)
        except queue.Empty:
            raise _unavailable("every connection is busy") from None
        try:
            conn, rows = self._first(conn, lambda c: _PgTx(c).execute(sql, params))
        except BaseException:
            self._pool.put(None)
            raise
        self._pool.put(conn if self._usable(conn) else None)
        return list(rows)

    def _run(self, conn: Any) -> Iterator[_PgTx]:
        psycopg = self._psycopg
        try:
            yield _PgTx(conn)
            # The id of the transaction if it wrote anything, to settle an interrupted COMMIT.
            xid = conn.execute("SELECT pg_current_xact_id_if_assigned()::text").fetchone()[0]
        except BaseException as exc:
            self._rollback(conn)
            if self._transient(exc):
                raise _unavailable(_reason(exc)) from None
            raise
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            if not conn.broken and exc.sqlstate is not None:
                # The server answered: the transaction was rolled back.
                self._rollback(conn)
                if self._transient(exc):
                    raise _unavailable(_reason(exc)) from None
                raise
            self._discard(conn)
            if xid is None or self._outcome(xid) != "committed":
                raise _unavailable(f"the commit was interrupted: {_reason(exc)}") from None
            # Committed after all: the caller goes on as after a plain COMMIT.

    def _rollback(self, conn: Any) -> None:
        if conn.broken or conn.closed:
            return
        try:
            conn.execute("ROLLBACK")
        except self._psycopg.Error:
            self._discard(conn)  # unusable; its slot is refilled later

    def _outcome(self, xid: str) -> str | None:
        """``committed``, ``aborted`` or ``None`` (unknown: the database stays away) for a
        transaction whose COMMIT got no answer."""
        psycopg = self._psycopg
        deadline = time.monotonic() + self._resolve_for
        while True:
            try:
                with self._connect() as conn:
                    row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
                status = None if row is None else row[0]
                if status in ("committed", "aborted"):
                    return str(status)
            except psycopg.errors.InvalidParameterValue:
                # "transaction ID is in the future": the server restarted from a crash
                # without it ever reaching the log, so it did not commit.
                return "aborted"
            except psycopg.Error:
                pass  # still away
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def ping(self) -> None:
        """A real round trip on a pooled connection; :class:`Unavailable` when it fails."""
        with self.transaction() as tx:
            tx.execute("SELECT 1")

    def notify(self, channel: str, payload: str) -> None:
        """Best effort: it runs after the request's own transaction committed, so a failure
        here must not turn a done request into an error (the client would send it again).
        A node that missed it reconnects its listener and wakes all its sockets. On its own in
        autocommit (one round trip, not a transaction's four); sent twice if a stale connection
        made it run again, which only wakes sockets twice."""
        try:
            self.query("SELECT pg_notify(?, ?)", (channel, payload))
        except (Unavailable, self._psycopg.Error) as exc:
            log.warning("NOTIFY lost (%s); other nodes' sockets will poll", _reason(exc))

    def listen_connection(self) -> Any:
        return self._connect()

    def close(self) -> None:
        while True:
            try:
                self._discard(self._pool.get_nowait())
            except queue.Empty:
                return


def _reason(exc: BaseException | None) -> str:
    """The first line of a database error, for the client and the log (no DSN in it)."""
    text = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    return text[:200] or type(exc).__name__


def _where(dsn: str) -> str:
    """The server a DSN names, without its password (which must not reach a log)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:
        return "the configured database"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def open_database(url: str) -> SQLiteDatabase | PostgresDatabase:
    """``postgresql://…`` or a path / ``sqlite:///path`` for SQLite."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    return SQLiteDatabase(url.removeprefix("sqlite:///").removeprefix("sqlite://"))
