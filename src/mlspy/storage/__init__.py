"""State at rest: a small key-value store protocol (in-memory and SQLite) and the persistence
of groups and KeyPackage private keys, one atomic write per state transition."""

from mlspy.storage.base import CHECK, MemoryStore, Store, Versioned, Write
from mlspy.storage.group_store import GroupStore, StoredGroup
from mlspy.storage.sqlite import SQLiteStore

__all__ = [
    "CHECK",
    "GroupStore",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoredGroup",
    "Versioned",
    "Write",
]
