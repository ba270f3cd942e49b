"""Rotating a member's signature key: a commit whose UpdatePath LeafNode carries a new key of
the same credential (signed with the new key; the commit itself signed with the old one)."""

from __future__ import annotations

import pytest

from mlspy.errors import UsageError
from mlspy.group import ApplicationMessage, Group, SigningIdentity, StagedCommit, create_key_package


def _pair() -> tuple[Group, Group, SigningIdentity]:
    alice_id = SigningIdentity.generate(b"alice/phone")
    alice = Group.create(alice_id)
    bob_kp = create_key_package(SigningIdentity.generate(b"bob"))
    out = alice.commit(add=[bob_kp.key_package])
    alice.merge_pending_commit()
    bob = Group.join(out.welcome or b"", [bob_kp])
    return alice, bob, alice_id


def test_a_commit_rotates_the_committers_signature_key() -> None:
    alice, bob, old = _pair()
    new = SigningIdentity.generate(b"alice/phone")
    assert new.credential == old.credential and new.signature_key != old.signature_key
    out = alice.commit(new_identity=new)
    staged = bob.process(out.commit)  # signed with the old key, which bob knows
    assert isinstance(staged, StagedCommit)
    bob.merge_staged_commit(staged)
    alice.merge_pending_commit(identity=new)
    assert bob.member_at(alice.own_leaf_index).signature_key == new.signature_key
    assert alice.epoch_authenticator == bob.epoch_authenticator
    # From now on alice signs with the new key: bob verifies her next commit and messages.
    received = bob.process(alice.encrypt_application(b"new key"))
    assert isinstance(received, ApplicationMessage) and received.data == b"new key"
    later = bob.process(alice.commit(force_path=True).commit)
    assert isinstance(later, StagedCommit)


def test_merging_a_rotation_needs_its_identity() -> None:
    alice, _, _ = _pair()
    new = SigningIdentity.generate(b"alice/phone")
    alice.commit(new_identity=new)
    before = alice.to_bytes()
    with pytest.raises(UsageError):
        alice.merge_pending_commit()
    with pytest.raises(UsageError):
        alice.merge_pending_commit(identity=SigningIdentity.generate(b"alice/phone"))
    assert alice.to_bytes() == before  # nothing merged
    alice.merge_pending_commit(identity=new)
    assert alice.epoch == 2
