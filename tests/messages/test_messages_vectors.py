"""The official ``messages.json`` vectors: every truncation and one-byte extension of every
field is a ``DecodeError`` (the byte-for-byte round trip is ``tests/test_vectors.py``).

Note the proposal fields are the proposal *bodies* (``Add``, ``Update``, ...), without the
``Proposal.proposal_type`` prefix: ``remove_proposal`` is 4 bytes, a bare ``uint32``.
"""

from __future__ import annotations

import random

import pytest

from mlspy.errors import DecodeError
from mlspy.vectors.kind_messages import FIELDS
from vectors_dir import load_vectors

VECTORS = load_vectors("messages.json")
IDS = [f"entry-{i}" for i in range(len(VECTORS))]


def _cut_points(n: int, rng: random.Random) -> set[int]:
    points = {0, 1, n - 1, n // 2}
    points.update(rng.randrange(n) for _ in range(4))
    return {p for p in points if 0 <= p < n}


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=IDS)
def test_messages_vector_truncated_or_extended_is_rejected(index: int) -> None:
    rng = random.Random(index)
    for field, hex_data in VECTORS[index].items():
        decode = FIELDS[field].decode
        data = bytes.fromhex(hex_data)
        for cut in _cut_points(len(data), rng):
            with pytest.raises(DecodeError):
                decode(data[:cut])
        with pytest.raises(DecodeError):
            decode(data + b"\x00")
