"""Bearer tokens this node looked up recently, so most requests authenticate without the
database.

A cached token is trusted for at most ``ttl`` seconds after it was read, and never past its
own expiry. Ending tokens on this node (logout, a revoked device, an account recovery) bumps
the cache's generation *after* the deleting transaction committed: an entry read before that
(possibly before the commit, so still showing the token) is never used again. Ending tokens
elsewhere — another node, or ``mlspy admin revoke-tokens`` beside a running server — takes
effect here within ``ttl`` seconds (``docs/security.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Seconds a token read from the database is trusted without reading it again.
DEFAULT_TTL = 2.0


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    expires: float  # the token's own expiry
    fresh_until: float  # ``ttl`` after it was read
    generation: int


class TokenCache(Generic[T]):
    """token → what it authenticates (a ``ClientInfo``), as read at some generation."""

    MAX_ENTRIES = 100_000

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self.generation = 0
        self._entries: dict[str, _Entry[T]] = {}
        self._lock = threading.Lock()
        # Told after every local invalidation (the worker processes of one server tell each
        # other, ``wakebus.py``).
        self.on_invalidate: Callable[[], None] | None = None

    def get(self, token: str, now: float) -> T | None:
        """The cached value of a live token, or None (look it up)."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry.generation != self.generation or now >= entry.fresh_until or now > entry.expires:
            self._entries.pop(token, None)
            return None
        return entry.value

    def put(self, token: str, value: T, expires: float, now: float, generation: int) -> None:
        """Remember ``value`` for ``token``, read from the database at ``generation``
        (taken before the read started)."""
        if self.ttl <= 0 or generation != self.generation:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                # Only the recently used matter; dropping all is cheap and rare.
                self._entries.clear()
            self._entries[token] = _Entry(value, expires, now + self.ttl, generation)

    def invalidate(self) -> None:
        """Tokens were ended on this node (call after the transaction committed)."""
        self.forget()
        if self.on_invalidate is not None:
            self.on_invalidate()

    def forget(self) -> None:
        """Forget every entry (another worker ended tokens)."""
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["DEFAULT_TTL", "TokenCache"]
