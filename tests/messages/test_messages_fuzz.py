"""Hypothesis drives the decoders: whatever the bytes, a decoder either raises
``DecodeError`` (or ``PaddingError`` for padding) or returns a value that re-encodes to exactly
the input. Random bytes exercise the outer layers; mutations of the official vectors reach
deep into valid structures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlspy.errors import DecodeError, PaddingError
from mlspy.messages import (
    Commit,
    ContentType,
    GroupSecrets,
    MLSMessage,
    PrivateMessageContent,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from vectors_dir import vectors_dir

Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]

CODECS: dict[str, Codec] = {
    "MLSMessage": (MLSMessage.decode, MLSMessage.encode),
    "Commit": (Commit.decode, Commit.encode),
    "ratchet_tree": (decode_ratchet_tree, encode_ratchet_tree),
    "GroupSecrets": (GroupSecrets.decode, GroupSecrets.encode),
}

# Seeds from messages.json for each codec, when the vectors are available.
_SEED_FIELDS = {
    "MLSMessage": (
        "mls_welcome",
        "mls_group_info",
        "mls_key_package",
        "public_message_application",
        "public_message_proposal",
        "public_message_commit",
        "private_message",
    ),
    "Commit": ("commit",),
    "ratchet_tree": ("ratchet_tree",),
    "GroupSecrets": ("group_secrets",),
}


def _load_seeds() -> dict[str, list[bytes]]:
    path = vectors_dir() / "messages.json"
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text(encoding="utf-8"))[:20]
    return {
        codec: [bytes.fromhex(e[f]) for e in entries for f in fields]
        for codec, fields in _SEED_FIELDS.items()
    }


SEEDS = _load_seeds()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(codec: str, data: bytes) -> None:
    decode, encode = CODECS[codec]
    try:
        value = decode(data)
    except DecodeError:
        return
    assert encode(value) == data


@pytest.mark.parametrize("codec", CODECS)
@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(codec: str, data: bytes) -> None:
    _check(codec, data)


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if not data:
            op = "insert"
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data.insert(pos, draw(st.integers(0, 255)))
        elif op == "delete":
            del data[pos]
        else:
            del data[pos:]
    return bytes(data)


@pytest.mark.skipif(not SEEDS, reason=f"no messages.json in {vectors_dir()} to seed mutations")
@pytest.mark.parametrize("codec", CODECS)
@FUZZ
@given(data=st.data())
def test_mutated_vectors(codec: str, data: st.DataObject) -> None:
    _check(codec, data.draw(_mutated(SEEDS[codec])))


@FUZZ
@given(content_type=st.sampled_from(list(ContentType)), data=st.binary(max_size=200))
def test_private_message_content(content_type: ContentType, data: bytes) -> None:
    try:
        value = PrivateMessageContent.decode(data, content_type)
    except (DecodeError, PaddingError):
        return
    assert value.encode() == data
