"""Fast codecs for vectors of fixed-width integers (``uint16 xs<V>``, ``uint32 xs<V>``).

The codec's generic ``Reader.vector`` makes one Python call per item; capability lists and
``unmerged_leaves`` are decoded on every tree load, so they are unpacked in one C call here.
"""

from __future__ import annotations

import struct

from mlspy.codec import Reader, Writer
from mlspy.errors import DecodeError, UsageError


def read_uint16s(r: Reader, what: str) -> tuple[int, ...]:
    """``uint16 items<V>`` as a tuple of ints."""
    body = r.opaque()
    n = len(body)
    if n & 1:
        raise DecodeError(f"truncated uint16 in {what}", r.position - 1)
    return struct.unpack(f">{n >> 1}H", body)


def read_uint32s(r: Reader, what: str) -> tuple[int, ...]:
    """``uint32 items<V>`` as a tuple of ints."""
    body = r.opaque()
    n = len(body)
    if n & 3:
        raise DecodeError(f"truncated uint32 in {what}", r.position - (n & 3))
    return struct.unpack(f">{n >> 2}I", body)


def write_uint16s(w: Writer, items: tuple[int, ...], what: str) -> None:
    try:
        w.opaque(struct.pack(f">{len(items)}H", *items))
    except struct.error as exc:
        raise UsageError(f"{what}: every item must be a uint16 ({exc})") from None


def write_uint32s(w: Writer, items: tuple[int, ...], what: str) -> None:
    try:
        w.opaque(struct.pack(f">{len(items)}I", *items))
    except struct.error as exc:
        raise UsageError(f"{what}: every item must be a uint32 ({exc})") from None
