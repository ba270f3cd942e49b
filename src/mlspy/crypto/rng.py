"""Injectable randomness for the crypto layer.

Every operation that draws randomness (key generation, HPKE encapsulation) takes an optional
``rng: Callable[[int], bytes]`` returning exactly ``n`` bytes. ``None`` means the operating
system's CSPRNG (:func:`os.urandom`). Passing a deterministic ``rng`` makes the output a pure
function of the inputs — for tests and reproducible runs (see :mod:`mlspy.provider`), never
for production keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mlspy.errors import UsageError

Rng = Callable[[int], bytes]
"""``rng(n)`` returns ``n`` random bytes."""


def draw(rng: Rng | None, n: int) -> bytes:
    """``n`` bytes from ``rng`` (``os.urandom`` when ``None``); a wrong length is an error."""
    if rng is None:
        return os.urandom(n)
    out = rng(n)
    if len(out) != n:
        raise UsageError(f"rng returned {len(out)} bytes, {n} were requested")
    return out
