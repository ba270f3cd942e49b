"""The SQLite store: stdlib ``sqlite3``, WAL journal, one transaction per batch.

A batch runs inside ``BEGIN IMMEDIATE`` … ``COMMIT``: either every row of a state transition is
durable or none is (``synchronous=FULL``), whatever kills the process. Optionally every value is
encrypted at rest with AES-256-GCM under an application key, with the row's key as associated
data so a blob cannot be moved to another row.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mlspy.errors import StorageError
from mlspy.storage.base import Versioned, Write, _Check, check_versions

# Writes between WAL checkpoints. Every write by default: the WAL keeps old page images,
# and with them keys the state just deleted (§9.2 wants every representation gone). A larger
# value trades that for throughput (about 0.3 instead of 1 ms per received message).
CHECKPOINT_EVERY = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS version_counter (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    last INTEGER NOT NULL
);
"""


class SQLiteStore:
    """Versioned blobs in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        encryption_key: bytes | None = None,
        on_write: Callable[[str], None] | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        """``encryption_key`` (32 bytes) turns on encryption at rest. ``on_write`` is called
        with "begin", "written" and "committed" around each batch (used by crash tests).
        ``checkpoint_every``: writes between WAL checkpoints (see ``CHECKPOINT_EVERY``)."""
        if encryption_key is not None and len(encryption_key) != 32:
            raise StorageError("the encryption key must be 32 bytes (AES-256-GCM)")
        self._aead = AESGCM(encryption_key) if encryption_key is not None else None
        self._on_write = on_write
        self._lock = threading.Lock()
        self._writes = 0
        self._checkpoint_every = max(1, checkpoint_every)
        self._wal_dirty = False  # a checkpoint could not finish (a reader): retry next write
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Overwrite freed pages so consumed keys do not linger in the database file.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)
            # Only a store without its counter row (new, or of the older layout) writes here:
            # opening an existing store must not wait for another writer's lock.
            if self._db.execute("SELECT 1 FROM version_counter").fetchone() is None:
                self._db.execute(
                    "INSERT OR IGNORE INTO version_counter "
                    "VALUES (0, (SELECT COALESCE(MAX(version), 0) FROM blobs))"
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite store {path}: {exc}") from None

    def close(self) -> None:
        self.checkpoint()
        self._db.close()

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it: old page images (which may hold
        consumed keys) leave the WAL. Runs every ``checkpoint_every`` writes and on close; if
        another connection's reader keeps it from finishing, the next write tries again."""
        with self._lock:
            try:
                # Do not wait for readers (that would stall every write): try again later.
                self._db.execute("PRAGMA busy_timeout = 0")
                try:
                    busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                finally:
                    self._db.execute("PRAGMA busy_timeout = 5000")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot checkpoint the store: {exc}") from None
            self._wal_dirty = bool(busy)

    def _seal(self, key: str, value: bytes) -> bytes:
        if self._aead is None:
            return value
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, value, key.encode())

    def _open(self, key: str, blob: bytes) -> bytes:
        if self._aead is None:
            return blob
        try:
            return self._aead.decrypt(blob[:12], blob[12:], key.encode())
        except (InvalidTag, ValueError):
            raise StorageError(f"cannot decrypt stored {key!r}: wrong key or tampered") from None

    def get(self, key: str) -> Versioned | None:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT version, value FROM blobs WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read {key!r}: {exc}") from None
        if row is None:
            return None
        return Versioned(self._open(key, bytes(row[1])), int(row[0]))

    def keys(self, prefix: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM blobs WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, prefix + "\U0010ffff"),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def _hook(self, point: str) -> None:
        if self._on_write is not None:
            self._on_write(point)

    def write(self, batch: Mapping[str, Write]) -> dict[str, int]:
        sealed = {
            k: (v if v is None or isinstance(v, _Check) else self._seal(k, v), e)
            for k, (v, e) in batch.items()
        }
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                self._hook("begin")

                def current(key: str) -> int | None:
                    row = db.execute("SELECT version FROM blobs WHERE key = ?", (key,)).fetchone()
                    return int(row[0]) if row else None

                check_versions(batch, current)
                db.execute("UPDATE version_counter SET last = last + 1 WHERE id = 0")
                last = int(db.execute("SELECT last FROM version_counter").fetchone()[0])
                out: dict[str, int] = {}
                for key, (value, expected) in sealed.items():
                    if isinstance(value, _Check):
                        out[key] = expected or 0
                        continue
                    version = last
                    if value is None:
                        db.execute("DELETE FROM blobs WHERE key = ?", (key,))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO blobs (key, version, value) VALUES (?, ?, ?)",
                            (key, version, value),
                        )
                    out[key] = version
                self._hook("written")
                db.execute("COMMIT")
            except StorageError:
                db.execute("ROLLBACK")
                raise
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StorageError(f"cannot write the state: {exc}") from None
        self._hook("committed")
        self._writes += 1
        if self._wal_dirty or self._writes % self._checkpoint_every == 0:
            self.checkpoint()
        return out
