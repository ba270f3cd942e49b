"""Access control at the Delivery Service / Authentication Service (issue 15, first part),
attacked over a real DS on loopback (SQLite, and two nodes on PostgreSQL when available):

* a user cannot publish KeyPackages under another user's name (RFC 9750 §8.4.3.1), and in a
  group with PublicMessage handshakes cannot add a leaf that borrows another user's name;
* a closed group's GroupInfo — which names every member — is for its members only; an
  outsider is answered exactly as for a group that does not exist (RFC 9750 §8.4.1).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from ds_helpers import Cluster, Member, status_of

from mlspy.ds.client import DSRequestError
from mlspy.group import Group, GroupConfig, SigningIdentity, create_key_package
from mlspy.messages import Credential, MLSMessage, WireFormat


def test_a_key_package_must_name_its_uploader(ds: Cluster) -> None:
    """Eve signs a KeyPackage whose Basic credential says "alice" with her own registered
    key: the DS refuses it and stores nothing; an invitation of "alice" reaches alice."""
    alice = Member.new(ds.url, "alice", key_packages=1)
    eve = Member.new(ds.url, "eve", key_packages=0)
    impostor = replace(eve.identity, credential=Credential.basic(b"alice"))
    bundle = create_key_package(impostor)
    assert bundle.key_package.leaf_node.signature_key == eve.identity.signature_key
    with pytest.raises(DSRequestError) as info:
        eve.client.upload_key_packages([bundle])
    assert info.value.status == 403 and "names b'alice'" in info.value.body["error"]
    assert eve.client.count_key_packages() == (0, False)
    claimed = MLSMessage.decode(eve.client.claim_key_package(b"alice")).key_package
    assert claimed is not None
    assert claimed.leaf_node.signature_key == alice.identity.signature_key
    # Eve's own name still works for her.
    assert eve.client.upload_key_packages([create_key_package(eve.identity)]) == 1


def test_a_member_cannot_add_a_leaf_that_borrows_a_name(ds: Cluster) -> None:
    """In a group with PublicMessage handshakes, eve (a member) commits an Add of a
    KeyPackage she made locally that presents alice's name with a key of hers: the DS, which
    is the AS, refuses the commit; bob never sees a second "alice"; the group goes on."""
    Member.new(ds.url, "alice", key_packages=1)
    bob = Member.new(ds.url, "bob")
    eve = Member.new(ds.url, "eve")
    eve.create()
    eve.add(bob)
    bob.sync()
    assert eve.group is not None and bob.group is not None
    fake_alice = create_key_package(SigningIdentity.generate(b"alice"))
    out = eve.group.commit(add=[fake_alice.key_package])
    with pytest.raises(DSRequestError) as info:
        eve.client.submit(eve.group.group_id, out.commit, welcome=out.welcome)
    assert info.value.status == 400
    assert "binds identity b'alice' to another signature key" in info.value.body["error"]
    eve.group.clear_pending_commit()
    bob.sync()
    assert sorted(m.identity for m in bob.group.members()) == [b"bob", b"eve"]
    eve.send(b"still talking")
    bob.sync()
    assert bob.received[-1] == b"still talking"


@pytest.mark.parametrize("open_group", [False, True], ids=["closed", "open"])
def test_a_closed_groups_group_info_is_for_members(ds: Cluster, open_group: bool) -> None:
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    eve = Member.new(ds.url, "eve", key_packages=0)
    alice.create(external_joins=open_group)
    alice.add(bob)
    bob.sync()
    assert alice.group is not None
    gid = alice.group.group_id
    assert status_of(lambda: bob.client.group_info(gid)) == 200
    unknown = status_of(lambda: eve.client.group_info(b"\x77" * len(gid)))
    outsider = status_of(lambda: eve.client.group_info(gid))
    assert unknown == 404
    # An outsider learns nothing about a closed group, not even that it exists.
    assert outsider == (200 if open_group else 404)


# --- KeyPackages are a protected resource -------------------------------------------------------


def _drain(claimer: Member, target: bytes, tries: int) -> tuple[int, int]:
    """``claimer`` claims up to ``tries`` of ``target``'s KeyPackages: (ordinary, refused)."""
    ordinary = refused = 0
    for _ in range(tries):
        try:
            data = claimer.client.claim_key_package(target)
        except DSRequestError as exc:
            assert exc.status == 429, exc
            refused += 1
            continue
        kp = MLSMessage.decode(data).key_package
        assert kp is not None
        if not any(e.extension_type == 0x000A for e in kp.extensions):  # last_resort
            ordinary += 1
    return ordinary, refused


def _with_last_resort(member: Member, ordinary: int) -> None:
    member.client.upload_key_packages(
        [create_key_package(member.identity) for _ in range(ordinary)]
        + [create_key_package(member.identity, last_resort=True)]
    )


@pytest.mark.parametrize(
    "ds_options",
    [{"claims_per_target": 3}, {"claims_per_target": 10**6}],
    ids=["limited", "mechanism_off"],
)
def test_one_user_cannot_drain_anothers_key_packages(
    ds: Cluster, ds_options: dict[str, int]
) -> None:
    """Mallory claims bob's KeyPackages over and over. With the per-target limit she gets 3 and
    then 429; bob keeps the rest, sees who claimed them, and alice can still invite him. With
    the limit off (the attack as it was) she drains the whole pool."""
    bob = Member.new(ds.url, "bob", key_packages=0)
    _with_last_resort(bob, 8)
    mallory = Member.new(ds.url, "mallory", key_packages=0)
    ordinary, refused = _drain(mallory, b"bob", 10)
    if ds_options["claims_per_target"] == 3:
        assert (ordinary, refused) == (3, 7)
        assert bob.client.count_key_packages() == (5, True)
        claims = bob.client.key_package_claims()
        assert [c["claimer"] for c in claims] == [b"mallory"] * 3
        alice = Member.new(ds.url, "alice", key_packages=0)
        assert _drain(alice, b"bob", 1) == (1, 0)
    else:
        assert (ordinary, refused) == (8, 0)  # drained: only the last resort is left
        assert bob.client.count_key_packages() == (0, True)


@pytest.mark.parametrize("ds_options", [{"claims_per_owner": 4}], ids=["crowd_limit"])
def test_a_crowd_gets_the_last_resort_and_the_pool_survives(ds: Cluster) -> None:
    """Many claimers, each within its own limit, claim bob's KeyPackages: past the per-owner
    limit they get his last-resort KeyPackage, so his pool is not drained and he stays
    reachable."""
    bob = Member.new(ds.url, "bob", key_packages=0)
    _with_last_resort(bob, 8)
    got = [_drain(Member.new(ds.url, f"c{i}", key_packages=0), b"bob", 1) for i in range(7)]
    assert [g[0] for g in got] == [1, 1, 1, 1, 0, 0, 0]  # then the last-resort one
    assert all(g[1] == 0 for g in got)
    assert bob.client.count_key_packages() == (4, True)
    assert len(bob.client.key_package_claims()) == 7


# --- Nobody is cut off by a claim the DS cannot check -------------------------------------------


def _encrypted_group(ds: Cluster) -> tuple[Member, Member, Member]:
    """alice, bob and carol in a group with encrypted handshakes (the DS sees ciphertexts)."""
    alice, bob, carol = (Member.new(ds.url, n) for n in ("alice", "bob", "carol"))
    config = GroupConfig(handshake_wire_format=WireFormat.mls_private_message)
    alice.group = Group.create(alice.identity, config=config)
    alice.client.create_group(alice.group.group_info(), encrypted_handshakes=True)
    kps = [
        MLSMessage.decode(alice.client.claim_key_package(n)).key_package for n in (b"bob", b"carol")
    ]
    out = alice.group.commit(add=[kp for kp in kps if kp is not None])
    alice.client.submit(
        alice.group.group_id, out.commit, welcome=out.welcome, adds=[b"bob", b"carol"]
    )
    alice.group.merge_pending_commit()
    for m in (bob, carol):
        m.sync()
        assert m.group is not None
        m.group = Group.from_bytes(m.group.to_bytes())  # the joiners use the group's config
    return alice, bob, carol


def test_a_declared_removal_does_not_cut_a_member_off(ds: Cluster) -> None:
    """With encrypted handshakes alice sends an empty commit that *declares* carol removed.
    The DS cannot check the claim: carol still receives, still decrypts, still sends. A real
    removal takes her off the delivery list once she confirms it (``leave_group``)."""
    alice, bob, carol = _encrypted_group(ds)
    assert alice.group is not None and carol.group is not None and bob.group is not None
    gid = alice.group.group_id
    out = alice.group.commit(force_path=True)
    alice.client.submit(gid, out.commit, removes=[b"carol"])
    alice.group.merge_pending_commit()
    bob.sync()
    bob.send(b"carol, are you there?")
    carol.sync()
    assert carol.received[-1] == b"carol, are you there?"
    carol.send(b"yes")  # not 403
    alice.sync()
    assert alice.received[-1] == b"yes"
    # A real removal: carol processes it, confirms, and is off the list.
    out = alice.group.remove_members([b"carol"])
    alice.client.submit(gid, out.commit, removes=[b"carol"])
    alice.group.merge_pending_commit()
    events = carol.sync()
    # She processed her removal (the helper forgets a removed member's group).
    assert carol.group is None
    assert any(getattr(e, "self_removed", False) for e in events)
    eve = Member.new(ds.url, "eve", key_packages=0)
    # An outsider cannot use "leave" to probe which groups exist.
    assert status_of(lambda: eve.client.leave_group(gid)) == 404
    assert status_of(lambda: eve.client.leave_group(b"\x77" * len(gid))) == 404
    carol.client.leave_group(gid)
    assert status_of(lambda: carol.client.leave_group(gid)) == 404  # no longer on the list
    bob.sync()
    bob.send(b"after carol")
    assert carol.client.fetch() == []  # off the delivery list
    with pytest.raises(DSRequestError) as info:
        carol.client.submit(gid, bob.group.encrypt_application(b"as carol"))
    assert info.value.status == 403
