"""The ratchet tree: structure, evolution and the O(log n) cost of a path change."""

from __future__ import annotations

import pytest
from tree_builder import GROUP_ID, build_tree, make_leaf

from mlspy.crypto import suite
from mlspy.errors import TreeError
from mlspy.messages import Node, ParentNode, decode_ratchet_tree, encode_ratchet_tree
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.validation import validate_tree


def test_add_fills_leftmost_blank_then_extends() -> None:
    b = build_tree(3)
    tree = b.tree
    assert tree is not None
    assert tree.n_leaves == 4
    tree.remove_leaf(LeafIndex(1))
    assert tree.n_leaves == 4  # leaf 2 keeps the right half alive
    assert b.add() == 1
    assert b.add() == 3
    assert b.add() == 4
    assert tree.n_leaves == 8


def test_remove_truncates_right_half() -> None:
    b = build_tree(5)
    tree = b.tree
    assert tree is not None and tree.n_leaves == 8
    tree.remove_leaf(LeafIndex(4))
    assert tree.n_leaves == 4
    tree.remove_leaf(LeafIndex(3))
    tree.remove_leaf(LeafIndex(2))
    assert tree.n_leaves == 2


def test_add_marks_unmerged_on_non_blank_parents() -> None:
    b = build_tree(5, committers=(0,), late_adds=1)
    tree = b.tree
    assert tree is not None
    # Leaf 5 was added after leaf 0 committed: root 7 is non-blank and lists it.
    root = tree.parent(NodeIndex(7))
    assert root is not None and root.unmerged_leaves == (5,)
    assert tree.resolution(NodeIndex(7)) == [7, 10]
    validate_tree(tree, group_id=GROUP_ID, tree_hash=tree.tree_hash())


def test_encode_round_trip_strips_trailing_blanks() -> None:
    b = build_tree(5, committers=(0, 3))
    tree = b.tree
    assert tree is not None
    nodes = tree.to_nodes()
    assert nodes[-1] is not None and len(nodes) == 9
    again = RatchetTree.from_nodes(suite(1), decode_ratchet_tree(encode_ratchet_tree(nodes)))
    assert again.tree_hash() == tree.tree_hash()


def test_malformed_trees_rejected() -> None:
    cs = suite(1)
    leaf, _, _ = make_leaf(cs, b"a")
    parent = ParentNode(b"k", b"", ())
    with pytest.raises(TreeError, match="last node"):
        RatchetTree.from_nodes(cs, (Node.leaf(leaf), None))
    with pytest.raises(TreeError, match="last node"):
        RatchetTree.from_nodes(cs, ())
    with pytest.raises(TreeError, match="must be a leaf"):
        RatchetTree.from_nodes(cs, (Node.parent(parent),))
    with pytest.raises(TreeError, match="must be a parent"):
        RatchetTree.from_nodes(cs, (Node.leaf(leaf), Node.leaf(leaf)))


def test_path_change_in_1024_leaf_tree_recomputes_log_n_hashes() -> None:
    b = build_tree(1024)
    tree = b.tree
    assert tree is not None and tree.n_leaves == 1024
    tree.tree_hash()
    assert tree.hash_computations == 2047  # every node once
    before = tree.hash_computations
    b.commit(517)  # blanks the path, sets 10 parents, re-signs the leaf, hashes the new tree
    # The leaf and its 10 ancestors, nothing else: parent hashes reuse the cached copath hashes.
    assert tree.hash_computations - before == 11
    before = tree.hash_computations
    tree.update_leaf(LeafIndex(3), make_leaf(suite(1), b"x")[0])
    tree.tree_hash()
    assert tree.hash_computations - before == 11


def test_copy_is_independent() -> None:
    b = build_tree(4)
    tree = b.tree
    assert tree is not None
    h = tree.tree_hash()
    clone = tree.copy()
    clone.remove_leaf(LeafIndex(3))
    assert tree.tree_hash() == h
    assert clone.tree_hash() != h
