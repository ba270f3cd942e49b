"""Fuzz message processing on a live group of three (stateful): arbitrary bytes, or valid
messages of the group with bytes flipped, are fed to a member. Only MLSError may escape, and a
rejected message leaves the member's epoch, epoch authenticator and tree hash unchanged."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from mlspy.errors import MLSError
    from mlspy.group import Group, GroupConfig, SigningIdentity, create_key_package
    from mlspy.messages import Add, Proposal, WireFormat


def _group(wire: WireFormat) -> tuple[Group, Group, list[bytes]]:
    config = GroupConfig(handshake_wire_format=wire)
    alice = Group.create(SigningIdentity.generate(b"alice"), config=config)
    bundles = [create_key_package(SigningIdentity.generate(n)) for n in (b"bob", b"carol")]
    out = alice.commit([Proposal(Add(b.key_package)) for b in bundles])
    alice.merge_pending_commit()
    bob = Group.join(out.welcome or b"", bundles[0], config=config)
    # Valid messages to mutate: a commit with path, a proposal, application data.
    application = alice.encrypt_application(b"application data")
    commit = alice.commit(force_path=True).commit
    alice.clear_pending_commit()
    samples = [commit, alice.propose_update(), application]
    return alice, bob, samples


GROUPS = [_group(WireFormat.mls_public_message), _group(WireFormat.mls_private_message)]


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    _, bob, samples = GROUPS[data[0] & 1]
    mode = data[1] % 4
    if mode == 3:
        message = data[2:]
    else:
        base = bytearray(samples[mode])
        for i in range(2, len(data) - 1, 2):
            base[data[i] * 7 % len(base)] ^= data[i + 1]
        message = bytes(base)
    before = (bob.epoch, bob.epoch_authenticator, bob.tree.tree_hash())
    try:
        bob.process(message)
    except MLSError:
        after = (bob.epoch, bob.epoch_authenticator, bob.tree.tree_hash())
        if after != before:
            raise AssertionError("a rejected message changed the group") from None


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
