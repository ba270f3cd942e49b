"""Tree math (RFC 9420 Appendix C) beyond the official vectors."""

from __future__ import annotations

import pytest

from mlspy.errors import UsageError
from mlspy.tree.math import (
    LeafIndex,
    NodeIndex,
    common_ancestor,
    copath,
    direct_path,
    is_in_subtree,
    leaf_to_node,
    left,
    level,
    node_to_leaf,
    parent,
    right,
    root,
)


def test_eight_leaf_tree_of_the_rfc() -> None:
    # Figure in Appendix C: nodes 0..14, root 7.
    assert root(8) == 7
    assert [level(NodeIndex(i)) for i in range(15)] == [0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0]
    assert direct_path(NodeIndex(0), 8) == [1, 3, 7]
    assert copath(NodeIndex(0), 8) == [2, 5, 11]
    assert direct_path(NodeIndex(14), 8) == [13, 11, 7]
    assert copath(NodeIndex(7), 8) == []


def test_leaf_node_conversion() -> None:
    assert leaf_to_node(LeafIndex(3)) == 6
    assert node_to_leaf(NodeIndex(6)) == 3
    with pytest.raises(UsageError):
        node_to_leaf(NodeIndex(5))


def test_leaf_has_no_children_and_root_no_parent() -> None:
    with pytest.raises(UsageError):
        left(NodeIndex(4))
    with pytest.raises(UsageError):
        right(NodeIndex(4))
    with pytest.raises(UsageError):
        parent(NodeIndex(7), 8)
    with pytest.raises(UsageError):
        parent(NodeIndex(15), 8)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 64])
def test_common_ancestor_and_subtree_agree_with_direct_paths(n: int) -> None:
    width = 2 * n - 1
    for x in range(0, width, 2):
        for y in range(0, width, 2):
            xi, yi = NodeIndex(x), NodeIndex(y)
            dx = [xi, *direct_path(xi, n)]
            dy = [yi, *direct_path(yi, n)]
            expected = min(set(dx) & set(dy), key=lambda v: level(NodeIndex(v)))
            assert common_ancestor(xi, yi) == expected
    for a in range(width):
        for x in range(width):
            xi, ai = NodeIndex(x), NodeIndex(a)
            assert is_in_subtree(xi, ai) == (x == a or ai in direct_path(xi, n))
