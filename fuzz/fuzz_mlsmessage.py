"""Fuzz every top-level decoder: only DecodeError may escape, and a decoded value re-encodes
to exactly the input (decode then encode is the identity on valid encodings)."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from mlspy.errors import MLSError
    from mlspy.messages import (
        Commit,
        GroupInfo,
        GroupSecrets,
        KeyPackage,
        MLSMessage,
        Proposal,
        UpdatePath,
        Welcome,
        decode_ratchet_tree,
        encode_ratchet_tree,
    )

STRUCTS = [MLSMessage, Commit, Proposal, GroupSecrets, GroupInfo, KeyPackage, Welcome, UpdatePath]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    kind, payload = data[0] % (len(STRUCTS) + 1), data[1:]
    try:
        if kind == len(STRUCTS):
            nodes = decode_ratchet_tree(payload)
            if encode_ratchet_tree(nodes) != payload:
                raise AssertionError("ratchet tree does not round-trip")
            return
        value = STRUCTS[kind].decode(payload)
    except MLSError:
        return
    if value.encode() != payload:
        raise AssertionError(f"{STRUCTS[kind].__name__} does not round-trip")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
