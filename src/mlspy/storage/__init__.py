"""State at rest: a small key-value store protocol (in-memory and SQLite) and the persistence
of groups and KeyPackage private keys, one atomic write per state transition."""

from mlspy.storage.base import MemoryStore, Store, Versioned
from mlspy.storage.group_store import GroupStore, StoredGroup
from mlspy.storage.sqlite import SQLiteStore

__all__ = ["GroupStore", "MemoryStore", "SQLiteStore", "Store", "StoredGroup", "Versioned"]
