"""TreeKEM (RFC 9420 §7.4-§7.6): members agree on commit secrets; malformed paths are rejected."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tree_builder import GROUP_ID, TreeBuilder, build_tree, context_for

from mlspy.errors import ParentHashError, UpdatePathError
from mlspy.messages import (
    HPKECiphertext,
    LeafNodeSource,
    ParentNode,
    UpdatePath,
    UpdatePathNode,
)
from mlspy.tree.math import LeafIndex
from mlspy.tree.parent_hash import path_parent_hashes
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import (
    TreePrivateKeys,
    decrypt_update_path,
    merge_update_path,
    sign_leaf_node,
)
from mlspy.tree.validation import validate_tree
from parity import raises_exactly


def _process(
    b: TreeBuilder, base: RatchetTree, sender: int, path: UpdatePath, receiver: int
) -> tuple[TreePrivateKeys, bytes]:
    tree = base.copy()
    fdp = merge_update_path(tree, LeafIndex(sender), path)
    context = context_for(b.cs)(tree.tree_hash())
    private, _, commit_secret = decrypt_update_path(
        tree, b.members[receiver].private, LeafIndex(sender), path, fdp, context
    )
    return private, commit_secret


def test_every_member_follows_a_sequence_of_commits() -> None:
    b = build_tree(7)
    for sender in (0, 6, 3, 5, 0):
        assert b.tree is not None
        base = b.tree.copy()
        created = b.commit(sender)
        for j in b.members:
            if j == sender:
                continue
            private, commit_secret = _process(b, base, sender, created.update_path, j)
            assert commit_secret == created.commit_secret
            b.members[j].private = private
        validate_tree(b.tree, group_id=GROUP_ID, tree_hash=b.tree.tree_hash())
    # Each member holds keys only for non-blank nodes on its own direct path.
    assert b.tree is not None
    for j, m in b.members.items():
        path = {2 * j, *b.tree.direct_path(LeafIndex(j))}
        assert set(m.private.keys) <= path


def test_new_members_are_excluded_from_path_encryption() -> None:
    b = build_tree(3)
    assert b.tree is not None
    b.add(b"new")  # leaf 3, added "in the same commit"
    old = b.tree.leaf(LeafIndex(0))
    assert old is not None
    from mlspy.tree.treekem import LeafNodeParams, create_update_path

    created = create_update_path(
        b.tree,
        LeafIndex(0),
        LeafNodeParams(old.signature_key, old.credential, old.capabilities),
        b.members[0].signature_priv,
        GROUP_ID,
        context_for(b.cs),
        excluded_leaves={3},
    )
    # Root's copath child 5 resolves to leaves 2 and 3; only leaf 2 gets a ciphertext.
    assert [len(n.encrypted_path_secret) for n in created.update_path.nodes] == [1, 1]


def _fixture() -> tuple[TreeBuilder, RatchetTree, UpdatePath]:
    b = build_tree(4)
    assert b.tree is not None
    base = b.tree.copy()
    return b, base, b.commit(0).update_path


def test_wrong_number_of_path_nodes() -> None:
    _b, base, path = _fixture()
    short = UpdatePath(path.leaf_node, path.nodes[:-1])
    tree = base.copy()
    with pytest.raises(UpdatePathError, match="filtered direct path"):
        merge_update_path(tree, LeafIndex(0), short)


def test_leaf_parent_hash_mismatch() -> None:
    _b, base, path = _fixture()
    bad_leaf = replace(path.leaf_node, parent_hash=b"\x00" * 32)
    with pytest.raises(ParentHashError, match=r"§7\.9\.2"):
        merge_update_path(base.copy(), LeafIndex(0), UpdatePath(bad_leaf, path.nodes))


def test_leaf_source_must_be_commit() -> None:
    _b, base, path = _fixture()
    bad_leaf = replace(
        path.leaf_node,
        leaf_node_source=LeafNodeSource.update,
        parent_hash=None,
    )
    with pytest.raises(UpdatePathError, match="commit"):
        merge_update_path(base.copy(), LeafIndex(0), UpdatePath(bad_leaf, path.nodes))


def test_swapped_key_breaks_the_parent_hash_chain() -> None:
    b, base, path = _fixture()
    _, other_pub = b.cs.hpke_key_pair()
    root = path.nodes[-1]
    nodes = (*path.nodes[:-1], UpdatePathNode(other_pub, root.encrypted_path_secret))
    tree = base.copy()
    with pytest.raises(ParentHashError):
        merge_update_path(tree, LeafIndex(0), UpdatePath(path.leaf_node, nodes))


def test_ciphertext_count_and_content() -> None:
    b, base, path = _fixture()
    tree = base.copy()
    fdp = merge_update_path(tree, LeafIndex(0), path)
    context = context_for(b.cs)(tree.tree_hash())
    keys = b.members[2].private
    root = path.nodes[-1]
    extra = (*root.encrypted_path_secret, root.encrypted_path_secret[0])
    too_many = UpdatePath(
        path.leaf_node, (*path.nodes[:-1], UpdatePathNode(root.encryption_key, extra))
    )
    with raises_exactly(UpdatePathError, "ciphertexts"):
        decrypt_update_path(tree, keys, LeafIndex(0), too_many, fdp, context)
    garbage = tuple(
        HPKECiphertext(c.kem_output, c.ciphertext[:-1] + b"\x00")
        for c in root.encrypted_path_secret
    )
    broken = UpdatePath(
        path.leaf_node, (*path.nodes[:-1], UpdatePathNode(root.encryption_key, garbage))
    )
    before = dict(keys.keys)
    with pytest.raises(UpdatePathError, match="decrypt"):
        decrypt_update_path(tree, keys, LeafIndex(0), broken, fdp, context)
    assert keys.keys == before  # nothing consumed or replaced on failure
    with pytest.raises(UpdatePathError, match="decrypt"):
        decrypt_update_path(tree, keys, LeafIndex(0), path, fdp, context + b"x")


def test_derived_public_key_mismatch() -> None:
    """A committer that announces a root key it did not derive, with a consistent parent-hash
    chain, signature and encryption, is caught when a receiver derives the real key."""
    b = build_tree(4)
    assert b.tree is not None
    base = b.tree.copy()
    created = b.commit(0)
    path = created.update_path
    _, other_pub = b.cs.hpke_key_pair()
    forged_keys = [n.encryption_key for n in path.nodes[:-1]] + [other_pub]
    scratch = base.copy()
    scratch.blank_direct_path(LeafIndex(0))
    fdp = scratch.filtered_direct_path(LeafIndex(0))
    for x, key in zip(fdp, forged_keys, strict=True):
        scratch.set_parent(x, ParentNode(key, b"", ()))
    _, leaf_ph = path_parent_hashes(scratch, LeafIndex(0), fdp)
    leaf = sign_leaf_node(
        b.cs,
        b.members[0].signature_priv,
        replace(path.leaf_node, parent_hash=leaf_ph),
        GROUP_ID,
        0,
    )
    scratch.set_leaf(LeafIndex(0), leaf)
    context = context_for(b.cs)(scratch.tree_hash())
    nodes = []
    for x, key in zip(fdp, forged_keys, strict=True):
        cts = []
        for r in scratch.resolution(scratch.copath_child(x, LeafIndex(0))):
            pk = scratch.encryption_key(r)
            assert pk is not None
            kem_output, ct = b.cs.encrypt_with_label(
                pk, "UpdatePathNode", context, created.path_secrets[x]
            )
            cts.append(HPKECiphertext(kem_output, ct))
        nodes.append(UpdatePathNode(key, tuple(cts)))
    forged = UpdatePath(leaf, tuple(nodes))
    tree = base.copy()
    fdp = merge_update_path(tree, LeafIndex(0), forged)
    assert tree.tree_hash() == scratch.tree_hash()
    with raises_exactly(UpdatePathError, "derived public key"):
        decrypt_update_path(tree, b.members[2].private, LeafIndex(0), forged, fdp, context)


def test_small_order_key_in_path_is_rejected() -> None:
    _b, base, path = _fixture()
    nodes = (UpdatePathNode(b"\x00" * 32, path.nodes[0].encrypted_path_secret), *path.nodes[1:])
    with raises_exactly(UpdatePathError, "invalid public key"):
        merge_update_path(base.copy(), LeafIndex(0), UpdatePath(path.leaf_node, nodes))


def test_path_key_already_in_tree_is_rejected() -> None:
    _b, base, path = _fixture()
    other = base.leaf(LeafIndex(3))
    assert other is not None
    nodes = (
        UpdatePathNode(other.encryption_key, path.nodes[0].encrypted_path_secret),
        *path.nodes[1:],
    )
    with pytest.raises(UpdatePathError, match="already used"):
        merge_update_path(base.copy(), LeafIndex(0), UpdatePath(path.leaf_node, nodes))


def test_private_keys_pruned_after_truncation() -> None:
    b = build_tree(5)
    for sender in (0, 4):
        assert b.tree is not None
        base = b.tree.copy()
        created = b.commit(sender)
        for j in b.members:
            if j != sender:
                b.members[j].private = _process(b, base, sender, created.update_path, j)[0]
    assert b.tree is not None
    assert 7 in b.members[1].private.keys  # root of the 8-leaf tree
    b.tree.remove_leaf(LeafIndex(4))
    assert b.tree.n_leaves == 4
    b.members[1].private.prune(b.tree)
    assert 7 not in b.members[1].private.keys
