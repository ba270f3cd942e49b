"""Versioned serialization of a whole group state (state at rest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlspy.errors import StorageError
from mlspy.group import (
    ApplicationMessage,
    Group,
    GroupConfig,
    ProposalReceived,
    SigningIdentity,
    StagedCommit,
    create_key_package,
)
from mlspy.group.serialize import FORMAT_VERSION, format_version
from mlspy.messages import Add, Proposal, WireFormat

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _reload(g: Group) -> Group:
    data = g.to_bytes()
    again = Group.from_bytes(data)
    assert again.to_bytes() == data
    return again


def _pair(wire: WireFormat) -> tuple[Group, Group]:
    config = GroupConfig(handshake_wire_format=wire, padding_block=32)
    alice = Group.create(SigningIdentity.generate(b"alice"), config=config)
    kp = create_key_package(SigningIdentity.generate(b"bob"))
    out = alice.commit([Proposal(Add(kp.key_package))])
    alice.merge_pending_commit()
    return alice, Group.join(out.welcome or b"", kp, config=config)


@pytest.mark.parametrize("wire", list(WireFormat)[:2], ids=["public", "private"])
def test_everything_survives_a_reload(wire: WireFormat) -> None:
    alice, bob = _pair(wire)
    late = alice.encrypt_application(b"sent in epoch 1, read in epoch 2")
    # A pending commit, a cached own Update proposal, and then reloads in between.
    update = bob.propose_update()
    alice = _reload(alice)
    assert isinstance(alice.process(update), ProposalReceived)
    out = alice.commit()
    alice, bob = _reload(alice), _reload(bob)
    assert alice.pending_commit is not None and len(bob.pending_proposals) == 1
    staged = bob.process(out.commit)
    assert isinstance(staged, StagedCommit)
    bob.merge_staged_commit(staged)
    alice = _reload(alice)
    echoed = alice.process(out.commit)  # our own commit echoed after a restart
    assert isinstance(echoed, StagedCommit) and echoed.own
    alice.merge_staged_commit(echoed)
    alice = _reload(alice)
    bob = _reload(bob)
    # The message of the previous epoch still decrypts (retained past epoch).
    event = bob.process(late)
    assert isinstance(event, ApplicationMessage) and event.data.startswith(b"sent in epoch 1")
    assert alice.pending_commit is None
    assert alice.epoch == bob.epoch == 2
    assert alice.epoch_authenticator == bob.epoch_authenticator
    assert alice.export_secret(b"x", b"", 16) == bob.export_secret(b"x", b"", 16)
    for _ in range(3):
        m = _reload(bob).encrypt_application(b"after reloads")
    assert isinstance(_reload(alice).process(m), ApplicationMessage)


def test_a_reloaded_sender_never_reuses_a_generation() -> None:
    alice, bob = _pair(WireFormat.mls_public_message)
    first = alice.encrypt_application(b"1")
    alice = _reload(alice)
    second = alice.encrypt_application(b"2")
    assert isinstance(bob.process(first), ApplicationMessage)
    assert isinstance(bob.process(second), ApplicationMessage)  # a reused key would fail here


def test_stored_fixture_of_format_v1_loads_and_continues() -> None:
    alice_data = (FIXTURES / "alice_v1.bin").read_bytes()
    bob_data = (FIXTURES / "bob_v1.bin").read_bytes()
    assert format_version(alice_data) == 1
    alice, bob = Group.from_bytes(alice_data), Group.from_bytes(bob_data)
    event = bob.process((FIXTURES / "message_v1.bin").read_bytes())
    assert isinstance(event, ApplicationMessage)
    assert event.data == b"written by format version 1"
    assert alice.epoch == bob.epoch == 2 and len(alice.pending_proposals) == 1
    out = alice.commit()  # covers bob's cached Update by reference
    staged = bob.process(out.commit)
    assert isinstance(staged, StagedCommit)
    bob.merge_staged_commit(staged)
    alice.merge_pending_commit()
    assert alice.epoch_authenticator == bob.epoch_authenticator
    assert isinstance(alice.process(bob.encrypt_application(b"ok")), ApplicationMessage)


def test_bad_stored_states_are_storage_errors() -> None:
    alice, _ = _pair(WireFormat.mls_public_message)
    data = alice.to_bytes()
    with pytest.raises(StorageError, match="not a stored"):
        Group.from_bytes(b"nope")
    with pytest.raises(StorageError, match="newer"):
        Group.from_bytes(data[:4] + (FORMAT_VERSION + 1).to_bytes(2, "big") + data[6:])
    with pytest.raises(StorageError, match="version 0"):
        Group.from_bytes(data[:4] + (0).to_bytes(2, "big") + data[6:])
    with pytest.raises(StorageError, match="corrupt"):
        Group.from_bytes(data[:-1])
    with pytest.raises(StorageError, match="corrupt"):
        Group.from_bytes(data + b"\x00")
