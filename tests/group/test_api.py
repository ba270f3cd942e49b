"""The library API an integrator expects (issue "One validator", item 5): KeyPackages in any
encoding, members by identity, one commit flow, immutable staged commits, wire format per
message, the leaf-lifetime setting, the lifecycle, and the top-level exports."""

from __future__ import annotations

import dataclasses

import pytest

import mlspy
import mlspy.group
from group_helpers import make_group
from mlspy.errors import (
    GroupStateError,
    KeyPackageError,
    ProposalError,
    ProtocolVersionError,
    UsageError,
)
from mlspy.group import (
    Group,
    GroupConfig,
    Lifecycle,
    Member,
    ProposalReceived,
    SigningIdentity,
    StagedCommit,
    as_key_package,
    create_key_package,
    join_external,
)
from mlspy.group.key_package import CLOCK_SKEW
from mlspy.messages import Add, KeyPackage, MLSMessage, Proposal, WireFormat


def _pair() -> tuple[Group, Group]:
    alice, bob = make_group(identities=[SigningIdentity.generate(n) for n in (b"alice", b"bob")])
    return alice, bob


# --- KeyPackages in any encoding -----------------------------------------------------------


def test_a_key_package_is_taken_in_every_encoding() -> None:
    kp = create_key_package(SigningIdentity.generate(b"bob")).key_package
    wrapped = MLSMessage.wrap(kp)
    for given in (kp, wrapped, wrapped.encode(), kp.encode(), bytearray(kp.encode())):
        assert as_key_package(given) == kp  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (b"", "expected a KeyPackage"),
        (b"\x00\x01\x00\x05garbage", "expected a KeyPackage"),
        ("a string", "expected a KeyPackage or its bytes"),
    ],
)
def test_anything_else_says_what_was_expected(given: object, expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        as_key_package(given)  # type: ignore[arg-type]


def test_another_message_or_version_is_refused() -> None:
    alice, _ = _pair()
    with pytest.raises(UsageError, match=r"got an MLSMessage\(mls_group_info\)"):
        as_key_package(alice.group_info())
    kp = create_key_package(SigningIdentity.generate(b"eve")).key_package
    with pytest.raises(ProtocolVersionError):
        as_key_package(MLSMessage.wrap(kp, version=2).encode())


def test_add_by_bare_key_package_bytes_everywhere() -> None:
    alice, bob = _pair()
    carol = create_key_package(SigningIdentity.generate(b"carol"))
    dave = create_key_package(SigningIdentity.generate(b"dave"))
    proposal = bob.propose_add(carol.key_package.encode())  # bare bytes
    assert isinstance(alice.process(proposal), ProposalReceived)
    out = alice.add_members([MLSMessage.wrap(dave.key_package).encode()])
    staged = bob.process(out.commit)
    assert isinstance(staged, StagedCommit)
    assert {m.identity for m in staged.added} == {b"carol", b"dave"}
    assert [kp.leaf_node.credential.identity for kp in staged.key_packages] == [
        m.identity for m in staged.added
    ]
    assert all(isinstance(k, KeyPackage) for k in staged.key_packages)


# --- Members by identity ----------------------------------------------------------------------


def test_members_are_found_and_removed_by_identity_member_or_leaf() -> None:
    alice, bob = _pair()
    assert alice.member(b"bob") == alice.member_at(1) == alice.members_with_identity("bob")[0]
    assert alice.member(b"bob").identity == b"bob"
    with pytest.raises(UsageError, match="no member with identity"):
        alice.member(b"mallory")
    with pytest.raises(UsageError, match="not a member"):
        alice.member_at(7)
    for who in (b"bob", alice.member(b"bob"), 1):
        alice.remove_members([who])
        assert [m.identity for m in out_staged(alice)] == [b"bob"]
        alice.clear_pending_commit()
    proposal = bob.propose_remove(b"alice")
    event = alice.process(proposal)
    assert isinstance(event, ProposalReceived) and event.member == alice.member(b"bob")


def out_staged(group: Group) -> tuple[Member, ...]:
    pending = group.pending_commit
    assert pending is not None
    return pending.removed


def test_a_stale_member_or_an_ambiguous_identity_is_refused() -> None:
    alice, bob = _pair()
    old_bob = alice.member(b"bob")
    second = create_key_package(SigningIdentity.generate(b"bob"))  # bob's second device
    out = alice.commit(add=[second.key_package])
    alice.merge_pending_commit()
    bob.merge_staged_commit(bob.process(out.commit))  # type: ignore[arg-type]
    assert len(alice.members_with_identity(b"bob")) == 2
    with pytest.raises(UsageError, match="2 members with identity"):
        alice.remove_members([b"bob"])
    out = alice.remove_members([old_bob])
    alice.merge_pending_commit()
    with pytest.raises(UsageError, match="no longer a member"):
        alice.remove_members([old_bob])


def test_senders_are_members() -> None:
    alice, bob = _pair()
    got = bob.process(alice.encrypt_application(b"hi"))
    assert isinstance(got.sender, Member)  # type: ignore[union-attr]
    assert got.sender.identity == b"alice" and got.sender.leaf_index == 0  # type: ignore[union-attr]
    assert "signature_key" in repr(got.sender) and b"alice" in repr(got.sender).encode()


# --- One commit flow ----------------------------------------------------------------------------


def test_process_never_merges_not_even_our_own_echo() -> None:
    alice, bob = _pair()
    out = alice.commit(force_path=True)
    assert alice.status is Lifecycle.PENDING_COMMIT
    echo = alice.process(out.commit)
    assert isinstance(echo, StagedCommit) and echo.own and alice.epoch == 1
    theirs = bob.process(out.commit)
    assert isinstance(theirs, StagedCommit) and not theirs.own and bob.epoch == 1
    assert (echo.epoch, theirs.epoch) == (2, 2)
    assert echo.committer == theirs.committer and echo.committer is not None
    alice.merge_staged_commit(echo)
    bob.merge_staged_commit(theirs)
    assert alice.epoch_authenticator == bob.epoch_authenticator
    assert alice.status is Lifecycle.ACTIVE
    with pytest.raises(GroupStateError):
        alice.merge_staged_commit(echo)
    with pytest.raises(GroupStateError):
        bob.merge_staged_commit(theirs)


def test_a_staged_commit_is_immutable_and_shows_no_secret() -> None:
    alice, bob = _pair()
    out = alice.commit(force_path=True)
    staged = bob.process(out.commit)
    assert isinstance(staged, StagedCommit)
    with pytest.raises(dataclasses.FrozenInstanceError):
        staged.epoch = 5  # type: ignore[misc]
    assert staged.new_state is not None
    secret = staged.new_state.secrets.exporter_secret.hex()
    assert secret not in repr(staged) and "new_state" not in repr(staged)


def test_join_external_follows_the_commit_flow() -> None:
    alice, bob = _pair()
    carol, commit = join_external(alice.group_info(), SigningIdentity.generate(b"carol"))
    assert carol.status is Lifecycle.JOINING and carol.epoch == alice.epoch
    with pytest.raises(GroupStateError, match="not merged yet"):
        carol.encrypt_application(b"too early")
    with pytest.raises(GroupStateError, match="not merged yet"):
        carol.group_info()
    with pytest.raises(GroupStateError, match="discarded"):
        carol.clear_pending_commit()
    info = carol.pending_group_info()
    for g in (alice, bob):
        g.merge_staged_commit(g.process(commit))  # type: ignore[arg-type]
    echo = carol.process(commit)
    assert isinstance(echo, StagedCommit) and echo.own
    carol.merge_staged_commit(echo)
    assert carol.status is Lifecycle.ACTIVE and carol.epoch == alice.epoch
    assert carol.epoch_authenticator == alice.epoch_authenticator
    gi = MLSMessage.decode(info).group_info
    assert gi is not None and gi.group_context == carol.context  # the epoch it announced
    got = alice.process(carol.encrypt_application(b"in"))
    assert got.sender.identity == b"carol"  # type: ignore[union-attr]


def test_lifecycle_removed_and_reinit() -> None:
    alice, bob = _pair()
    out = alice.remove_members([b"bob"])
    staged = bob.process(out.commit)
    assert isinstance(staged, StagedCommit) and staged.self_removed
    bob.merge_staged_commit(staged)
    assert bob.status is Lifecycle.REMOVED and not bob.active
    alice.merge_pending_commit()
    alice.propose_reinit()
    alice.commit()
    alice.merge_pending_commit()
    assert alice.status is Lifecycle.REINIT and alice.reinit is not None


# --- Wire format per message, leaf lifetimes ----------------------------------------------------


def test_the_wire_format_can_be_chosen_per_message_within_policy() -> None:
    alice, bob = _pair()
    out = alice.commit(force_path=True, wire_format=WireFormat.mls_private_message)
    assert MLSMessage.decode(out.commit).wire_format == WireFormat.mls_private_message
    bob.merge_staged_commit(bob.process(out.commit))  # type: ignore[arg-type]
    alice.merge_pending_commit()
    update = bob.propose_update(wire_format=WireFormat.mls_private_message)
    assert MLSMessage.decode(update).wire_format == WireFormat.mls_private_message
    strict = Group.create(
        SigningIdentity.generate(b"strict"),
        config=GroupConfig(allow_wire_format_override=False),
    )
    with pytest.raises(GroupStateError, match="GroupConfig policy"):
        strict.commit(force_path=True, wire_format=WireFormat.mls_private_message)


def _forever_key_package(name: bytes) -> object:
    bundle = create_key_package(
        SigningIdentity.generate(name), now=CLOCK_SKEW, lifetime=2**64 - 1 - CLOCK_SKEW
    )
    lifetime = bundle.key_package.leaf_node.lifetime
    assert lifetime is not None and lifetime.not_after == 2**64 - 1
    return bundle


def test_the_maximum_leaf_lifetime_is_a_setting() -> None:
    forever = _forever_key_package(b"forever").key_package  # type: ignore[attr-defined]
    safe = Group.create(SigningIdentity.generate(b"safe"))
    with pytest.raises(ProposalError, match="exceeds the maximum") as info:
        safe.commit([Proposal(Add(forever))])
    assert isinstance(info.value.__cause__, KeyPackageError)  # the cause is chained
    open_ = Group.create(
        SigningIdentity.generate(b"open"), config=GroupConfig(max_leaf_lifetime=None)
    )
    out = open_.commit(add=[forever])
    open_.merge_pending_commit()
    assert out.welcome is not None and len(open_.members()) == 2


# --- Exports -----------------------------------------------------------------------------------


def test_main_types_are_exported() -> None:
    for name in mlspy.__all__:
        assert getattr(mlspy, name) is not None, name
    assert mlspy.Group is Group and mlspy.PublicGroup is mlspy.group.PublicGroup
    for name in ("PublicGroup", "Group", "StagedCommit", "Member", "GroupConfig", "Lifecycle"):
        assert name in mlspy.group.__all__
    with pytest.raises(AttributeError):
        _ = mlspy.NoSuchThing  # type: ignore[attr-defined]


def test_a_pending_external_join_survives_a_reload() -> None:
    alice, _ = _pair()
    carol, commit = join_external(alice.group_info(), SigningIdentity.generate(b"carol"))
    carol = Group.from_bytes(carol.to_bytes())
    assert carol.status is Lifecycle.JOINING and carol.epoch == alice.epoch
    alice.merge_staged_commit(alice.process(commit))  # type: ignore[arg-type]
    carol.merge_pending_commit()
    assert carol.status is Lifecycle.ACTIVE
    assert carol.epoch_authenticator == alice.epoch_authenticator
