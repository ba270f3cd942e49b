"""The TLS presentation language as profiled by RFC 9420 §2.1.

Theory of operation: a :class:`Reader` walks an immutable ``bytes`` buffer between a start and
an end offset; reading a variable-size vector creates a child reader bounded by the vector's
header, so a malformed length can never make a struct read past its own vector. Every failure
is a :class:`~mlspy.errors.DecodeError` carrying the absolute offset. A :class:`Writer`
appends to a ``bytearray``; a vector is encoded into a child writer and prefixed with its size.

Variable-size vector headers (RFC 9420 §2.1.2)::

    prefix 00 -> 1 byte,  6-bit length
    prefix 01 -> 2 bytes, 14-bit length
    prefix 10 -> 4 bytes, 30-bit length
    prefix 11 -> invalid

"The encoded value MUST use the smallest number of bits required to represent the value."

This module knows nothing of MLS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

from mlspy.errors import DecodeError, UsageError

T = TypeVar("T")
S = TypeVar("S", bound="Struct")

MAX_VARINT = (1 << 30) - 1


def varint_size(n: int) -> int:
    """The number of bytes of the minimal vector header for a length ``n``."""
    if n < 0x40:
        return 1
    if n < 0x4000:
        return 2
    if n <= MAX_VARINT:
        return 4
    raise UsageError(f"vector length {n} exceeds 2^30-1")


class Reader:
    """Decodes values from ``data[start:end]``; positions in errors are absolute."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def _take(self, n: int, what: str) -> int:
        pos = self._pos
        if n > self._end - pos:
            raise DecodeError(f"truncated {what}: need {n} bytes, have {self._end - pos}", pos)
        self._pos = pos + n
        return pos

    def span(self, start: int, end: int) -> bytes:
        """The raw bytes between two positions of this reader (to keep a decoded struct's
        encoding instead of encoding it again)."""
        return self._data[start:end]

    def uint8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise DecodeError("truncated uint8: need 1 bytes, have 0", pos)
        self._pos = pos + 1
        return self._data[pos]

    def uint16(self) -> int:
        pos = self._take(2, "uint16")
        return int.from_bytes(self._data[pos : pos + 2], "big")

    def uint32(self) -> int:
        pos = self._take(4, "uint32")
        return int.from_bytes(self._data[pos : pos + 4], "big")

    def uint64(self) -> int:
        pos = self._take(8, "uint64")
        return int.from_bytes(self._data[pos : pos + 8], "big")

    def fixed(self, n: int) -> bytes:
        """A fixed-size array ``opaque x[n]``."""
        pos = self._take(n, f"opaque[{n}]")
        return self._data[pos : pos + n]

    def varint(self) -> int:
        """A variable-size vector length header (§2.1.2)."""
        start = self._pos
        first = self.uint8()
        prefix = first >> 6
        if prefix == 0:
            return first & 0x3F
        if prefix == 1:
            value = ((first & 0x3F) << 8) | self.uint8()
            if value < 0x40:
                raise DecodeError("non-minimal 2-byte vector length header", start)
            return value
        if prefix == 2:
            pos = self._take(3, "vector length header")
            value = ((first & 0x3F) << 24) | int.from_bytes(self._data[pos : pos + 3], "big")
            if value < 0x4000:
                raise DecodeError("non-minimal 4-byte vector length header", start)
            return value
        raise DecodeError("invalid vector length header prefix 0b11", start)

    def opaque(self) -> bytes:
        """``opaque data<V>``."""
        # The header is parsed inline: this is the hottest path of every decoder.
        data = self._data
        pos = self._pos
        end = self._end
        if pos >= end:
            raise DecodeError("truncated vector length header: need 1 bytes, have 0", pos)
        first = data[pos]
        prefix = first >> 6
        if prefix == 0:
            n = first
            pos += 1
        else:
            n = self.varint()
            pos = self._pos
        if n > end - pos:
            raise DecodeError(f"truncated opaque<V> body: need {n} bytes, have {end - pos}", pos)
        self._pos = pos + n
        return data[pos : pos + n]

    def sub(self) -> Reader:
        """A child reader over the body of the next vector; this reader skips past it."""
        n = self.varint()
        pos = self._take(n, "vector body")
        return Reader(self._data, pos, pos + n)

    def vector(self, item: Callable[[Reader], T]) -> list[T]:
        """``T items<V>``: the header counts bytes, not items."""
        child = self.sub()
        out: list[T] = []
        while child._pos < child._end:
            out.append(item(child))
        return out

    def optional(self, item: Callable[[Reader], T]) -> T | None:
        """``optional<T>``: a presence octet (0 or 1), then ``T`` when present (§2.1.1)."""
        pos = self._pos
        flag = self.uint8()
        if flag == 0:
            return None
        if flag == 1:
            return item(self)
        raise DecodeError(f"invalid optional<T> presence octet {flag}", pos)

    def finish(self, what: str = "value") -> None:
        """Require that every byte was consumed."""
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing bytes after {what}", self._pos)


class Writer:
    """Encodes values into a growing buffer."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def uint8(self, v: int) -> None:
        try:
            self._buf += v.to_bytes(1, "big")
        except OverflowError:
            raise UsageError(f"{v} does not fit in a uint8") from None

    def uint16(self, v: int) -> None:
        try:
            self._buf += v.to_bytes(2, "big")
        except OverflowError:
            raise UsageError(f"{v} does not fit in a uint16") from None

    def uint32(self, v: int) -> None:
        try:
            self._buf += v.to_bytes(4, "big")
        except OverflowError:
            raise UsageError(f"{v} does not fit in a uint32") from None

    def uint64(self, v: int) -> None:
        try:
            self._buf += v.to_bytes(8, "big")
        except OverflowError:
            raise UsageError(f"{v} does not fit in a uint64") from None

    def fixed(self, data: bytes, n: int | None = None) -> None:
        """A fixed-size array; ``n`` checks the size when given."""
        if n is not None and len(data) != n:
            raise UsageError(f"fixed array must be {n} bytes, got {len(data)}")
        self._buf += data

    def varint(self, n: int) -> None:
        if n < 0x40:
            self._buf.append(n)
        elif n < 0x4000:
            self._buf += (0x4000 | n).to_bytes(2, "big")
        elif n <= MAX_VARINT:
            self._buf += (0x80000000 | n).to_bytes(4, "big")
        else:
            raise UsageError(f"vector length {n} exceeds 2^30-1")

    def opaque(self, data: bytes | bytearray) -> None:
        self.varint(len(data))
        self._buf += data

    def vector(self, items: Iterable[T], item: Callable[[Writer, T], None]) -> None:
        child = Writer()
        for it in items:
            item(child, it)
        self.opaque(child._buf)

    def optional(self, value: T | None, item: Callable[[Writer, T], None]) -> None:
        if value is None:
            self._buf.append(0)
        else:
            self._buf.append(1)
            item(self, value)


class Struct(ABC):
    """Base of wire structs: ``encode()`` and a top-level ``decode()`` on top of
    ``encode_to(writer)`` and ``decode_from(reader)``.
    """

    __slots__ = ()
    # Human-readable name used in errors; defaults to the class name.
    wire_name: ClassVar[str] = ""

    @abstractmethod
    def encode_to(self, w: Writer) -> None: ...

    @classmethod
    @abstractmethod
    def decode_from(cls: type[S], r: Reader) -> S: ...

    def encode(self) -> bytes:
        w = Writer()
        self.encode_to(w)
        return w.getvalue()

    @classmethod
    def decode(cls: type[S], data: bytes) -> S:
        """Decode exactly one value from ``data``; trailing bytes are a ``DecodeError``."""
        return decode_all(data, cls.decode_from, cls.wire_name or cls.__name__)


def decode_all(data: bytes, item: Callable[[Reader], T], what: str = "value") -> T:
    """Decode one top-level value and reject trailing bytes."""
    r = Reader(bytes(data))
    value = item(r)
    r.finish(what)
    return value


def encode_opaque(data: bytes) -> bytes:
    w = Writer()
    w.opaque(data)
    return w.getvalue()


def write_struct(w: Writer, s: Any) -> None:
    """Item encoder for vectors of structs: ``w.vector(items, write_struct)``."""
    s.encode_to(w)


def write_opaque(w: Writer, b: bytes) -> None:
    w.opaque(b)


def write_uint16(w: Writer, v: int) -> None:
    w.uint16(v)


def write_uint32(w: Writer, v: int) -> None:
    w.uint32(v)


def read_opaque(r: Reader) -> bytes:
    return r.opaque()


def read_uint16(r: Reader) -> int:
    return r.uint16()


def read_uint32(r: Reader) -> int:
    return r.uint32()
