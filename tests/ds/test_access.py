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
from ds_helpers import Cluster, Member

from mlspy.ds.client import DSRequestError
from mlspy.group import SigningIdentity, create_key_package
from mlspy.messages import Credential, MLSMessage


def _status(fn: object) -> int:
    try:
        fn()  # type: ignore[operator]
    except DSRequestError as exc:
        return exc.status
    return 200


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
    assert _status(lambda: bob.client.group_info(gid)) == 200
    unknown = _status(lambda: eve.client.group_info(b"\x77" * len(gid)))
    outsider = _status(lambda: eve.client.group_info(gid))
    assert unknown == 404
    # An outsider learns nothing about a closed group, not even that it exists.
    assert outsider == (200 if open_group else 404)
