"""Array-based tree math (RFC 9420 Appendix C).

Leaves sit at even node indices (leaf ``i`` at node ``2*i``), parents at odd ones. An RFC 9420
tree always has a power-of-two number of leaves (§7.8: the tree is extended by doubling), so
every function here takes ``n_leaves`` and requires it to be a power of two where it matters.
``LeafIndex`` and ``NodeIndex`` are distinct types to mypy so the two cannot be mixed up; at
run time they are plain ints (zero cost on hot paths).
"""

from __future__ import annotations

from typing import NewType

from mlspy.errors import UsageError

LeafIndex = NewType("LeafIndex", int)
NodeIndex = NewType("NodeIndex", int)


def leaf_to_node(leaf: LeafIndex) -> NodeIndex:
    return NodeIndex(2 * leaf)


def node_to_leaf(node: NodeIndex) -> LeafIndex:
    if node & 1:
        raise UsageError(f"node {node} is not a leaf")
    return LeafIndex(node >> 1)


def is_leaf(node: NodeIndex) -> bool:
    return node & 1 == 0


def log2(x: int) -> int:
    """The exponent of the largest power of 2 not greater than ``x`` (0 for 0)."""
    return x.bit_length() - 1 if x else 0


def level(x: NodeIndex) -> int:
    """Leaves are level 0; a parent is one above its children."""
    if x & 1 == 0:
        return 0
    # Number of trailing one bits.
    return ((x ^ (x + 1)).bit_length()) - 1


def node_width(n_leaves: int) -> int:
    """The number of nodes in a tree with ``n_leaves`` leaves."""
    return 0 if n_leaves == 0 else 2 * (n_leaves - 1) + 1


def root(n_leaves: int) -> NodeIndex:
    return NodeIndex((1 << log2(node_width(n_leaves))) - 1)


def left(x: NodeIndex) -> NodeIndex:
    k = level(x)
    if k == 0:
        raise UsageError(f"leaf node {x} has no children")
    return NodeIndex(x ^ (0x01 << (k - 1)))


def right(x: NodeIndex) -> NodeIndex:
    k = level(x)
    if k == 0:
        raise UsageError(f"leaf node {x} has no children")
    return NodeIndex(x ^ (0x03 << (k - 1)))


def parent(x: NodeIndex, n_leaves: int) -> NodeIndex:
    if x == root(n_leaves):
        raise UsageError(f"root node {x} has no parent")
    if x >= node_width(n_leaves):
        raise UsageError(f"node {x} is outside a tree of {n_leaves} leaves")
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return NodeIndex((x | (1 << k)) ^ (b << (k + 1)))


def sibling(x: NodeIndex, n_leaves: int) -> NodeIndex:
    p = parent(x, n_leaves)
    return right(p) if x < p else left(p)


def direct_path(x: NodeIndex, n_leaves: int) -> list[NodeIndex]:
    """The direct path of ``x``, ordered from its parent to the root."""
    r = root(n_leaves)
    if x >= node_width(n_leaves):
        raise UsageError(f"node {x} is outside a tree of {n_leaves} leaves")
    out: list[NodeIndex] = []
    # Walk up by level arithmetic; in a full tree the parent never leaves the array.
    while x != r:
        k = level(x)
        b = (x >> (k + 1)) & 0x01
        x = NodeIndex((x | (1 << k)) ^ (b << (k + 1)))
        out.append(x)
    return out


def copath(x: NodeIndex, n_leaves: int) -> list[NodeIndex]:
    """The siblings of ``x`` and of each node of its direct path except the root."""
    if x == root(n_leaves):
        return []
    path = [x, *direct_path(x, n_leaves)]
    path.pop()
    return [sibling(y, n_leaves) for y in path]


def common_ancestor(x: NodeIndex, y: NodeIndex) -> NodeIndex:
    """The lowest node in the direct paths (inclusive) of both ``x`` and ``y``."""
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and x >> ly == y >> ly:
        return y
    if ly <= lx and x >> lx == y >> lx:
        return x
    xn: int = x
    yn: int = y
    k = 0
    while xn != yn:
        xn, yn = xn >> 1, yn >> 1
        k += 1
    return NodeIndex((xn << k) + (1 << (k - 1)) - 1)


def is_in_subtree(x: NodeIndex, ancestor: NodeIndex) -> bool:
    """Whether ``x`` lies in the subtree rooted at ``ancestor`` (inclusive)."""
    half = 1 << level(ancestor)
    return ancestor - half < x < ancestor + half
