"""Per-client and per-address throttles of one DS node: token buckets and socket counts.

In memory: each node limits what reaches it, so N nodes allow N times the rate — the
operator's limits are per node (``docs/deploy.md``). Checked before any database work, so a
flood costs the flooder, not the database.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    level: float
    updated: float


class Buckets:
    """Token buckets by key: ``rate`` tokens a second, at most ``burst`` saved up."""

    PRUNE_EVERY = 10_000

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._takes = 0

    def take(self, key: str, amount: float = 1.0) -> float:
        """Take ``amount`` tokens for ``key``: 0.0 if granted, else the seconds to wait
        before this amount could be granted (nothing is taken then). An amount larger than
        the burst is never granted: the caller refuses it as too large."""
        now = self.clock()
        self._takes += 1
        if self._takes % self.PRUNE_EVERY == 0:
            self._prune(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.level = min(self.burst, bucket.level + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.level >= amount:
            bucket.level -= amount
            return 0.0
        if self.rate <= 0 or amount > self.burst:
            return math.inf
        return (amount - bucket.level) / self.rate

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely carries no state: forget it, so the table
        # holds only the recently active keys however many keys came by.
        full = self.burst / self.rate if self.rate > 0 else math.inf
        for key in [k for k, b in self._buckets.items() if now - b.updated > full]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class SocketCounts:
    """Open WebSockets per client."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        n = self._open.get(key, 0)
        if n >= self.cap:
            return False
        self._open[key] = n + 1
        return True

    def release(self, key: str) -> None:
        n = self._open.get(key, 0) - 1
        if n > 0:
            self._open[key] = n
        else:
            self._open.pop(key, None)

    def total(self) -> int:
        return sum(self._open.values())


def retry_after(seconds: float) -> int:
    """Whole seconds for a ``Retry-After`` header (at least 1)."""
    return max(1, math.ceil(min(seconds, 86400.0)))
