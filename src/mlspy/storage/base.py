"""The storage protocol: versioned blobs by key, written atomically in batches.

Every blob carries a version that increases with each write; versions come from one counter
for the whole store, so a key that is deleted and written again never gets back a version a
stale handle may still expect. A batch names, for each key it
writes, the version it expects to find (``None``: the key must be absent); if any differs, the
whole batch is refused with :class:`~mlspy.errors.StorageError` and nothing is written. That is
how two handles on the same group are kept from silently overwriting each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mlspy.errors import StorageError


@dataclass(frozen=True)
class Versioned:
    value: bytes
    version: int


class _Check:
    """The value of a write that changes nothing but still requires the expected version."""

    def __repr__(self) -> str:
        return "CHECK"


CHECK = _Check()

# A write: the new value (None deletes, CHECK keeps the value) and the version expected now
# (None: absent). A CHECK entry makes the batch depend on a key it does not rewrite.
Write = tuple[bytes | _Check | None, int | None]


class Store(Protocol):
    def get(self, key: str) -> Versioned | None: ...

    def keys(self, prefix: str) -> list[str]: ...

    def write(self, batch: Mapping[str, Write]) -> dict[str, int]:
        """Apply every write atomically, or none; returns the new version of each key."""
        ...


class MemoryStore:
    """The in-memory store (tests, ephemeral clients)."""

    def __init__(self) -> None:
        self._data: dict[str, Versioned] = {}
        self._lock = threading.Lock()
        self._last = 0  # the store-wide version counter

    def get(self, key: str) -> Versioned | None:
        return self._data.get(key)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self._data if k.startswith(prefix))

    def write(self, batch: Mapping[str, Write]) -> dict[str, int]:
        with self._lock:
            check_versions(batch, lambda k: self._data[k].version if k in self._data else None)
            self._last += 1
            out: dict[str, int] = {}
            for key, (value, expected) in batch.items():
                if isinstance(value, _Check):
                    out[key] = expected or 0
                    continue
                version = self._last
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = Versioned(bytes(value), version)
                out[key] = version
            return out


def delete(store: Store, key: str) -> None:
    """Delete ``key`` if it is there (at whatever version it has)."""
    current = store.get(key)
    if current is not None:
        store.write({key: (None, current.version)})


def check_versions(batch: Mapping[str, Write], current: Callable[[str], int | None]) -> None:
    """Refuse the batch if any key's version is not the expected one."""
    for key, (_, expected) in batch.items():
        found = current(key)
        if found != expected:
            raise StorageError(
                f"concurrent update of {key!r}: expected version {expected}, found {found}; "
                "reload the state and retry"
            )
