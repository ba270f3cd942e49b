"""Numbers and sizes from the wire that the DS cannot keep as they are (issue 18).

Unsigned 64-bit values (epochs, RFC 9420 §6) of 2^63 or more do not fit the databases' signed
integers: a group registered at such an epoch, the commit out of the last epoch the DS can
store, and out-of-range query or body numbers are a 400 naming the bound, never a 500. A
ratchet tree whose width is far beyond its members (a blank node is one byte on the wire, but
tree hashing visits every node) is refused before it is validated.
"""

from __future__ import annotations

import base64
from dataclasses import replace

import httpx
import pytest
from ds_helpers import Cluster, Member

from mlspy.crypto import suite
from mlspy.ds.client import DSRequestError
from mlspy.ds.service import MAX_STORED, SPARSE_FLOOR
from mlspy.group import Group, create_key_package
from mlspy.group.welcome import sign_group_info
from mlspy.messages import MLSMessage, Node
from mlspy.messages import RatchetTree as RatchetTreeExtension
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree


def _at_epoch(group: Group, epoch: int) -> Group:
    """A one-member group whose context says ``epoch`` (its creator signs what it likes)."""
    state = group._state.epoch
    state.context = replace(state.context, epoch=epoch)
    return group


def _refused(fn: object) -> DSRequestError:
    with pytest.raises(DSRequestError) as info:
        fn()  # type: ignore[operator]
    return info.value


def test_a_group_at_an_epoch_the_ds_cannot_store_is_refused(ds: Cluster) -> None:
    alice = Member.new(ds.url, "alice")
    for epoch in (2**63, 2**64 - 1, MAX_STORED):
        group = _at_epoch(Group.create(alice.identity), epoch)
        error = _refused(lambda g=group: alice.client.create_group(g.group_info()))
        assert error.status == 400, error.body
        assert "epoch" in error.body["error"] and "lower epoch" in error.body["error"]
    # The DS still serves alice.
    alice.create()
    alice.send(b"fine")


def test_the_last_epoch_the_ds_stores_refuses_commits_cleanly(ds: Cluster) -> None:
    alice = Member.new(ds.url, "alice")
    group = _at_epoch(Group.create(alice.identity), MAX_STORED - 1)
    alice.client.create_group(group.group_info())
    out = group.commit([])
    alice.client.submit(group.group_id, out.commit, group_info=out.group_info)
    group.merge_pending_commit()
    assert group.epoch == MAX_STORED
    for _ in range(2):  # every time, not a 500 for good
        out = group.commit([])
        error = _refused(lambda o=out: alice.client.submit(group.group_id, o.commit))
        assert error.status == 400, error.body
        assert "RFC 9420 §6" in error.body["error"] and "start a new group" in error.body["error"]
        group.clear_pending_commit()
    # Application messages of that epoch still go through.
    alice.client.submit(group.group_id, group.encrypt_application(b"still talking"))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/v1/queue?after={2**70}", None),
        ("GET", f"/v1/queue?after=-{2**70}", None),
        ("POST", "/v1/queue/ack", {"seqs": [2**70]}),
        ("POST", "/v1/queue/ack", {"seqs": [1, -(2**64)]}),
        ("POST", "/v1/key_packages/claim", {"identity": "", "cipher_suite": 2**70}),
        ("GET", f"/v1/key_packages/count?cipher_suite={2**70}", None),
    ],
)
def test_out_of_range_numbers_are_400(
    ds: Cluster, method: str, path: str, body: dict[str, object] | None
) -> None:
    alice = Member.new(ds.url, "alice")
    if body is not None and "identity" in body:
        body = {**body, "identity": base64.b64encode(b"alice").decode()}
    response = httpx.request(
        method,
        ds.url + path,
        json=body,
        headers={"authorization": f"Bearer {alice.client.token}"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def _sparse_group_info(owner: Member, other: Member, leaves: int) -> bytes:
    """A valid GroupInfo signed by ``owner`` (leaf 0) whose tree has ``leaves`` leaves, all
    blank but the first and the last (``other``'s KeyPackage leaf)."""
    group = Group.create(owner.identity)
    state = group._state.epoch
    cs = suite(1)
    nodes: list[Node | None] = [None] * (2 * leaves - 1)
    nodes[0] = state.tree.to_nodes()[0]
    nodes[-1] = Node.leaf(create_key_package(other.identity).key_package.leaf_node)
    tree = RatchetTree.from_nodes(cs, nodes)
    context = replace(state.context, tree_hash=tree.tree_hash())
    gi = sign_group_info(
        cs,
        owner.identity.signing_key,
        context,
        (RatchetTreeExtension(tree.to_nodes()).to_extension(),),
        state.confirmation_tag,
        LeafIndex(0),
    )
    return MLSMessage.wrap(gi).encode()


def test_a_mostly_blank_tree_is_refused_before_it_is_validated(ds: Cluster) -> None:
    """Two members in 4 x SPARSE_FLOOR leaves: valid (the DS took it after hashing every
    node), now a 400 that says how to truncate; the same two members at the floor's width
    (a group that shrank) are still taken."""
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    wide = _sparse_group_info(alice, bob, 4 * SPARSE_FLOOR)
    error = _refused(lambda: alice.client.create_group(wide))
    assert error.status == 400, error.body
    assert f"{4 * SPARSE_FLOOR} leaves for 2 members" in error.body["error"]
    assert "§7.7" in error.body["error"]
    at_floor = _sparse_group_info(alice, bob, SPARSE_FLOOR)
    assert alice.client.create_group(at_floor) == 0
