"""Codec edge cases (RFC 9420 §2.1): every rejection path raises DecodeError.

The rules the validation catalogue lists (``docs/validation.md``, CD-*) are also broken inside
a real handshake PublicMessage, which a member and its public view — the Delivery Service's
view of the group — must both refuse (``group_helpers.reject_edited_handshake``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from group_helpers import reject_edited_handshake
from mlspy.codec import Reader, Writer, decode_all, varint_size
from mlspy.errors import DecodeError, UsageError
from mlspy.messages import PublicMessage


def _w(fn: object, *args: object) -> bytes:
    w = Writer()
    getattr(w, fn)(*args)  # type: ignore[call-overload]
    return w.getvalue()


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, "00"),
        (63, "3f"),
        (64, "4040"),
        (16383, "7fff"),
        (16384, "80004000"),
        ((1 << 30) - 1, "bfffffff"),
    ],
)
def test_varint_boundaries(n: int, encoded: str) -> None:
    assert _w("varint", n).hex() == encoded
    assert Reader(bytes.fromhex(encoded)).varint() == n
    assert varint_size(n) == len(encoded) // 2


def test_varint_too_large_to_encode() -> None:
    with pytest.raises(UsageError):
        _w("varint", 1 << 30)
    with pytest.raises(UsageError):
        varint_size(1 << 30)


@pytest.mark.parametrize("header", ["c0", "ff", "c000000000000000"])
def test_varint_prefix_0b11_rejected(header: str) -> None:
    with pytest.raises(DecodeError, match="0b11"):
        Reader(bytes.fromhex(header)).varint()
    # The group_id length header of a handshake (offset 4) given the 0b11 prefix.
    reject_edited_handshake(lambda m, _: m[:4] + bytes.fromhex(header) + m[5:], match="0b11")


@pytest.mark.parametrize("header", ["4000", "403f", "80000000", "80003fff"])
def test_varint_non_minimal_rejected(header: str) -> None:
    with pytest.raises(DecodeError, match="non-minimal"):
        Reader(bytes.fromhex(header)).varint()
    # The group_id length header of a handshake (offset 4) re-encoded in two bytes.
    reject_edited_handshake(lambda m, _: m[:4] + bytes([0x40, m[4]]) + m[5:], match="non-minimal")


@pytest.mark.parametrize("header", ["", "40", "80", "8000", "800000"])
def test_varint_truncated(header: str) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        Reader(bytes.fromhex(header)).varint()


@pytest.mark.parametrize(
    ("method", "size"), [("uint8", 1), ("uint16", 2), ("uint32", 4), ("uint64", 8)]
)
def test_uint_roundtrip_and_truncation(method: str, size: int) -> None:
    value = (1 << (8 * size)) - 2
    data = _w(method, value)
    assert len(data) == size
    assert getattr(Reader(data), method)() == value
    with pytest.raises(DecodeError, match="truncated"):
        getattr(Reader(data[:-1]), method)()


def test_opaque_body_truncated() -> None:
    with pytest.raises(DecodeError, match="opaque"):
        Reader(bytes.fromhex("05aabb")).opaque()


def test_fixed_array() -> None:
    assert Reader(b"abcd").fixed(4) == b"abcd"
    with pytest.raises(DecodeError):
        Reader(b"abc").fixed(4)
    with pytest.raises(UsageError):
        Writer().fixed(b"abc", 4)


def test_vector_of_items_is_bounded_by_header() -> None:
    w = Writer()
    w.vector([1, 2, 3], lambda w, v: w.uint16(v))
    data = w.getvalue()
    assert data.hex() == "06000100020003"
    assert Reader(data).vector(lambda r: r.uint16()) == [1, 2, 3]
    # An item that would run past the vector's end fails inside the vector.
    bad = bytes.fromhex("05000100020003")
    with pytest.raises(DecodeError, match="truncated uint16"):
        Reader(bad).vector(lambda r: r.uint16())

    def shorter_proposal_list(message: bytes, pm: PublicMessage) -> bytes:
        """The Commit's proposals vector one byte shorter: its last item runs past it."""
        assert pm.content.commit is not None
        at = message.index(pm.content.commit.encode())
        assert 0 < message[at] < 0x40
        return message[:at] + bytes([message[at] - 1]) + message[at + 1 :]

    reject_edited_handshake(shorter_proposal_list, match="truncated", commit=True)


def test_vector_body_truncated() -> None:
    with pytest.raises(DecodeError, match="vector body"):
        Reader(bytes.fromhex("06000100")).vector(lambda r: r.uint16())
    # A handshake cut in the middle of its group_id.
    reject_edited_handshake(lambda m, _: m[: 4 + 1 + 5], match="truncated opaque")


def test_optional() -> None:
    w = Writer()
    w.optional(None, Writer.uint8)
    w.optional(7, Writer.uint8)
    data = w.getvalue()
    assert data.hex() == "000107"
    r = Reader(data)
    assert r.optional(Reader.uint8) is None
    assert r.optional(Reader.uint8) == 7
    with pytest.raises(DecodeError, match="presence octet 2"):
        Reader(b"\x02\x07").optional(Reader.uint8)
    with pytest.raises(DecodeError, match="truncated"):
        Reader(b"\x01").optional(Reader.uint8)

    def bad_path_presence(message: bytes, pm: PublicMessage) -> bytes:
        """The Commit's ``optional<UpdatePath>`` octet, just before the path, set to 2."""
        commit = pm.content.commit
        assert commit is not None and commit.path is not None
        encoded = commit.encode()
        at = message.index(encoded) + len(encoded) - len(commit.path.encode()) - 1
        assert message[at] == 1
        return message[:at] + b"\x02" + message[at + 1 :]

    reject_edited_handshake(bad_path_presence, match="presence octet 2", commit=True)


def test_trailing_bytes_rejected_with_offset() -> None:
    with pytest.raises(DecodeError, match="1 trailing bytes") as info:
        decode_all(b"\x01\x02", Reader.uint8, "uint8")
    assert info.value.offset == 1
    reject_edited_handshake(lambda m, _: m + b"\x00", match="1 trailing bytes")


def test_error_offsets_are_absolute_inside_vectors() -> None:
    data = bytes.fromhex("0203c0")  # vector of 2 bytes whose 2nd item is a bad header
    r = Reader(data)
    sub = r.sub()
    sub.uint8()
    with pytest.raises(DecodeError) as info:
        sub.varint()
    assert info.value.offset == 2


@given(st.binary(max_size=1 << 14))
def test_opaque_roundtrip(data: bytes) -> None:
    w = Writer()
    w.opaque(data)
    assert decode_all(w.getvalue(), Reader.opaque) == data


@given(st.binary(max_size=16))
def test_varint_decoder_only_raises_decode_error(data: bytes) -> None:
    try:
        n = Reader(data).varint()
    except DecodeError:
        return
    assert 0 <= n < (1 << 30)
