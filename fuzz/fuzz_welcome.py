"""Fuzz joining: arbitrary bytes, or a valid Welcome with bytes flipped, given to
``Group.join`` with the right KeyPackage. Only MLSError may escape."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from mlspy.errors import MLSError
    from mlspy.group import Group, SigningIdentity, create_key_package
    from mlspy.messages import Add, Proposal

alice = Group.create(SigningIdentity.generate(b"alice"))
bundle = create_key_package(SigningIdentity.generate(b"bob"))
WELCOME = alice.commit([Proposal(Add(bundle.key_package))], force_path=True).welcome or b""


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    if data[0] & 1:
        message = data[1:]
    else:
        base = bytearray(WELCOME)
        for i in range(1, len(data) - 1, 2):
            base[(data[i] * 131 + i) % len(base)] ^= data[i + 1] or 1
        message = bytes(base)
    with contextlib.suppress(MLSError):
        Group.join(message, bundle)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
