"""The public ratchet tree (RFC 9420 §4, §7) with cached tree hashes (§7.8).

Theory of operation: the tree is array-backed. Leaf ``i`` (node ``2i``) lives in
``_leaves[i]`` and parent node ``x`` (odd) in ``_parents[x >> 1]``; ``None`` is a blank node.
The leaf count is always a power of two (§7.7: the tree is extended by doubling and truncated
by halving). ``_hashes[x]`` caches the tree hash of the subtree rooted at ``x``; every
mutation clears the cache entries of the changed node and its ancestors, so after a path
change only the O(log n) hashes on that path are recomputed. ``hash_computations`` counts
node hashes actually computed, which tests use to prove that bound.

The tree is mutable but cheap to :meth:`copy` (a few list copies), which is how the group
layer stages a new epoch without touching the current one.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Sequence

from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import TreeError, UsageError
from mlspy.messages import LeafNode, Node, NodeType, ParentNode
from mlspy.messages.hash_inputs import leaf_tree_hash_input, parent_tree_hash_input
from mlspy.tree.math import (
    LeafIndex,
    NodeIndex,
    direct_path,
    is_in_subtree,
    left,
    level,
    node_width,
    right,
    root,
    sibling,
)


class RatchetTree:
    """The public state of a ratchet tree: leaves, parents, blanks and cached hashes."""

    __slots__ = (
        "_cs",
        "_enc_index",
        "_hashes",
        "_leaves",
        "_parents",
        "_resolutions",
        "_sig_index",
        "hash_computations",
    )

    def __init__(
        self,
        cs: CipherSuiteProvider,
        leaves: list[LeafNode | None],
        parents: list[ParentNode | None],
    ) -> None:
        n = len(leaves)
        if n < 1 or n & (n - 1) or len(parents) != n - 1:
            raise UsageError(f"a ratchet tree needs 2^d leaves and 2^d - 1 parents, got {n}")
        self._cs = cs
        self._leaves = leaves
        self._parents = parents
        self._hashes: list[bytes | None] = [None] * node_width(n)
        # Resolutions are cached and invalidated exactly like tree hashes.
        self._resolutions: list[tuple[NodeIndex, ...] | None] = [None] * node_width(n)
        self.hash_computations = 0
        # Key -> node indexes, built on first lookup and then maintained by every mutation.
        self._enc_index: dict[bytes, tuple[int, ...]] | None = None
        self._sig_index: dict[bytes, tuple[int, ...]] | None = None

    # --- Construction and encoding (§12.4.3.3) ---------------------------------------------

    @classmethod
    def with_one_leaf(cls, cs: CipherSuiteProvider, leaf: LeafNode) -> RatchetTree:
        """The one-member tree of a group's creator (§11)."""
        return cls(cs, [leaf], [])

    @classmethod
    def from_nodes(
        cls, cs: CipherSuiteProvider, nodes: Sequence[Node | None], *, n_leaves: int | None = None
    ) -> RatchetTree:
        """Build a tree from the ``optional<Node> ratchet_tree<V>`` form.

        The last node must be non-blank; the array is extended with blanks to a full tree, or
        to ``n_leaves`` leaves (a stored tree whose right part is blank but not truncated);
        leaves must sit at even and parents at odd positions.
        """
        if not nodes or nodes[-1] is None:
            raise TreeError("the last node of a ratchet_tree must be non-blank", rule="TR-10")
        width = 1
        while node_width(width) < len(nodes):
            width *= 2
        if n_leaves is None:
            n_leaves = width
        elif n_leaves < width or n_leaves & (n_leaves - 1):
            raise TreeError(f"{len(nodes)} nodes do not fit a tree of {n_leaves} leaves")
        leaves: list[LeafNode | None] = [None] * n_leaves
        parents: list[ParentNode | None] = [None] * (n_leaves - 1)
        for x, node in enumerate(nodes):
            if node is None:
                continue
            if x & 1 == 0:
                if node.node_type != NodeType.leaf or node.leaf_node is None:
                    raise TreeError(f"node {x} must be a leaf node", rule="TR-11")
                leaves[x >> 1] = node.leaf_node
            else:
                if node.node_type != NodeType.parent or node.parent_node is None:
                    raise TreeError(f"node {x} must be a parent node", rule="TR-11")
                parents[x >> 1] = node.parent_node
        return cls(cs, leaves, parents)

    def to_nodes(self) -> tuple[Node | None, ...]:
        """The ``ratchet_tree`` form: every node, without trailing blanks."""
        out: list[Node | None] = []
        for x in range(node_width(self.n_leaves)):
            if x & 1 == 0:
                leaf = self._leaves[x >> 1]
                out.append(Node.leaf(leaf) if leaf is not None else None)
            else:
                parent = self._parents[x >> 1]
                out.append(Node.parent(parent) if parent is not None else None)
        while out and out[-1] is None:
            out.pop()
        return tuple(out)

    def copy(self) -> RatchetTree:
        """An independent tree sharing the (immutable) nodes and hash cache entries."""
        clone = RatchetTree.__new__(RatchetTree)
        clone._cs = self._cs
        clone._leaves = list(self._leaves)
        clone._parents = list(self._parents)
        clone._hashes = list(self._hashes)
        clone._resolutions = list(self._resolutions)
        clone.hash_computations = 0
        # Index values are tuples, so a shallow copy is independent.
        clone._enc_index = dict(self._enc_index) if self._enc_index is not None else None
        clone._sig_index = dict(self._sig_index) if self._sig_index is not None else None
        return clone

    # --- Accessors ---------------------------------------------------------------------------

    @property
    def cipher_suite(self) -> CipherSuiteProvider:
        return self._cs

    @property
    def n_leaves(self) -> int:
        return len(self._leaves)

    @property
    def root(self) -> NodeIndex:
        return root(len(self._leaves))

    def leaf(self, leaf: LeafIndex) -> LeafNode | None:
        if not 0 <= leaf < len(self._leaves):
            return None
        return self._leaves[leaf]

    def parent(self, x: NodeIndex) -> ParentNode | None:
        """The parent node at ``x`` (``None`` when blank or outside the tree)."""
        if x & 1 == 0 or not 0 <= x >> 1 < len(self._parents):
            return None
        return self._parents[x >> 1]

    def _node(self, x: int) -> LeafNode | ParentNode | None:
        if not 0 <= x < 2 * len(self._leaves) - 1:
            return None
        return self._leaves[x >> 1] if x & 1 == 0 else self._parents[x >> 1]

    def is_blank(self, x: NodeIndex) -> bool:
        """Whether node ``x`` is blank; nodes outside the tree count as blank."""
        return self._node(x) is None

    def encryption_key(self, x: NodeIndex) -> bytes | None:
        """The HPKE public key of a node, or ``None`` when blank."""
        node = self._node(x)
        return node.encryption_key if node is not None else None

    def leaves(self) -> Iterator[tuple[LeafIndex, LeafNode]]:
        """The non-blank leaves with their indices, left to right."""
        for i, leaf in enumerate(self._leaves):
            if leaf is not None:
                yield LeafIndex(i), leaf

    def parents(self) -> Iterator[tuple[NodeIndex, ParentNode]]:
        """The non-blank parent nodes with their node indices."""
        for i, p in enumerate(self._parents):
            if p is not None:
                yield NodeIndex(2 * i + 1), p

    def member_count(self) -> int:
        return sum(1 for leaf in self._leaves if leaf is not None)

    # --- Resolution and paths (§4.1.2) -----------------------------------------------------

    def resolution(self, x: NodeIndex) -> list[NodeIndex]:
        """The resolution of node ``x``: its non-blank descendants covering its subtree, with a
        non-blank parent contributing itself and its unmerged leaves (§4.1.2)."""
        return list(self._resolution(x))

    def _resolution(self, x: NodeIndex) -> tuple[NodeIndex, ...]:
        cached = self._resolutions[x]
        if cached is not None:
            return cached
        value: tuple[NodeIndex, ...]
        if x & 1 == 0:
            value = (x,) if self._leaves[x >> 1] is not None else ()
        else:
            p = self._parents[x >> 1]
            if p is not None:
                value = (x, *(NodeIndex(2 * u) for u in p.unmerged_leaves))
            else:
                value = self._resolution(left(x)) + self._resolution(right(x))
        self._resolutions[x] = value
        return value

    def resolution_size(self, x: NodeIndex) -> int:
        return len(self._resolution(x))

    def has_non_blank_descendant(self, x: NodeIndex) -> bool:
        """Whether the resolution of ``x`` is non-empty."""
        return bool(self._resolution(x))

    def direct_path(self, leaf: LeafIndex) -> list[NodeIndex]:
        return direct_path(NodeIndex(2 * leaf), len(self._leaves))

    def filtered_direct_path(self, leaf: LeafIndex) -> list[NodeIndex]:
        """The direct path minus nodes whose copath child has an empty resolution (§4.1.2)."""
        n = len(self._leaves)
        out: list[NodeIndex] = []
        child = NodeIndex(2 * leaf)
        for p in direct_path(child, n):
            if self.has_non_blank_descendant(sibling(child, n)):
                out.append(p)
            child = p
        return out

    def copath_child(self, parent_node: NodeIndex, leaf: LeafIndex) -> NodeIndex:
        """The child of ``parent_node`` that is not on the direct path of ``leaf``."""
        lc = left(parent_node)
        return right(parent_node) if is_in_subtree(NodeIndex(2 * leaf), lc) else lc

    # --- Key indexes -------------------------------------------------------------------------

    def _build_indexes(self) -> tuple[dict[bytes, tuple[int, ...]], dict[bytes, tuple[int, ...]]]:
        if self._enc_index is None or self._sig_index is None:
            enc: dict[bytes, tuple[int, ...]] = {}
            sig: dict[bytes, tuple[int, ...]] = {}
            for i, leaf in enumerate(self._leaves):
                if leaf is not None:
                    _index(enc, leaf.encryption_key, 2 * i)
                    _index(sig, leaf.signature_key, i)
            for i, p in enumerate(self._parents):
                if p is not None:
                    _index(enc, p.encryption_key, 2 * i + 1)
            self._enc_index, self._sig_index = enc, sig
        return self._enc_index, self._sig_index

    def find_encryption_key(self, key: bytes) -> NodeIndex | None:
        """A node holding HPKE public key ``key``, in O(1)."""
        nodes = self._build_indexes()[0].get(key)
        return NodeIndex(nodes[0]) if nodes else None

    def find_signature_key(self, key: bytes) -> LeafIndex | None:
        """A leaf holding signature key ``key``, in O(1)."""
        leaves = self._build_indexes()[1].get(key)
        return LeafIndex(leaves[0]) if leaves else None

    def _put_leaf(self, i: int, node: LeafNode | None) -> None:
        old = self._leaves[i]
        self._leaves[i] = node
        enc, sig = self._enc_index, self._sig_index
        if enc is None or sig is None:
            return
        if old is not None:
            _unindex(enc, old.encryption_key, 2 * i)
            _unindex(sig, old.signature_key, i)
        if node is not None:
            _index(enc, node.encryption_key, 2 * i)
            _index(sig, node.signature_key, i)

    def _put_parent(self, x: int, node: ParentNode | None) -> None:
        old = self._parents[x >> 1]
        self._parents[x >> 1] = node
        enc = self._enc_index
        if enc is None:
            return
        if old is not None:
            _unindex(enc, old.encryption_key, x)
        if node is not None:
            _index(enc, node.encryption_key, x)

    # --- Mutation ---------------------------------------------------------------------------

    def _invalidate(self, x: NodeIndex) -> None:
        """Drop the cached hashes of ``x`` and all its ancestors."""
        hashes = self._hashes
        resolutions = self._resolutions
        r = root(len(self._leaves))
        hashes[x] = None
        resolutions[x] = None
        while x != r:
            k = level(x)
            b = (x >> (k + 1)) & 0x01
            x = NodeIndex((x | (1 << k)) ^ (b << (k + 1)))
            hashes[x] = None
            resolutions[x] = None

    def set_leaf(self, leaf: LeafIndex, node: LeafNode | None) -> None:
        self._put_leaf(leaf, node)
        self._invalidate(NodeIndex(2 * leaf))

    def set_parent(self, x: NodeIndex, node: ParentNode | None) -> None:
        if x & 1 == 0:
            raise UsageError(f"node {x} is a leaf")
        self._put_parent(x, node)
        self._invalidate(x)

    def blank_direct_path(self, leaf: LeafIndex) -> None:
        for p in self.direct_path(leaf):
            if self._parents[p >> 1] is not None:
                self._put_parent(p, None)
        self._invalidate(NodeIndex(2 * leaf))

    def _extend(self) -> None:
        """Double the tree: the old tree becomes the left subtree of a new blank root."""
        n = len(self._leaves)
        self._leaves.extend([None] * n)
        self._parents.extend([None] * n)
        self._hashes.extend([None] * (2 * n))
        self._resolutions.extend([None] * (2 * n))
        # The new root's hash depends on everything; the left subtree's caches stay valid.

    def truncate(self) -> None:
        """Halve the tree while its right subtree is entirely blank (§7.7)."""
        leaves = self._leaves
        last = len(leaves) - 1
        while last >= 0 and leaves[last] is None:
            last -= 1
        n = len(leaves)
        while n > 1 and last < n // 2:
            n //= 2
        if n == len(leaves):
            return
        for slot in range(n - 1, len(self._parents)):
            if self._parents[slot] is not None:  # the old root, discarded even if non-blank
                self._put_parent(2 * slot + 1, None)
        del self._leaves[n:]
        del self._parents[n - 1 :]
        del self._hashes[node_width(n) :]
        del self._resolutions[node_width(n) :]

    def add_leaf(self, node: LeafNode) -> LeafIndex:
        """Insert at the leftmost blank leaf, extending the tree if full (§12.1.1), and add the
        new leaf to the unmerged leaves of each non-blank parent on its direct path."""
        try:
            index = LeafIndex(self._leaves.index(None))
        except ValueError:
            index = LeafIndex(len(self._leaves))
            self._extend()
        self._put_leaf(index, node)
        for p in self.direct_path(index):
            parent = self._parents[p >> 1]
            if parent is not None:
                unmerged = list(parent.unmerged_leaves)
                insort(unmerged, index)
                self._put_parent(
                    p, ParentNode(parent.encryption_key, parent.parent_hash, tuple(unmerged))
                )
        self._invalidate(NodeIndex(2 * index))
        return index

    def _require_member(self, leaf: LeafIndex) -> None:
        if not 0 <= leaf < len(self._leaves) or self._leaves[leaf] is None:
            raise UsageError(f"leaf {leaf} is blank or outside the tree")

    def update_leaf(self, leaf: LeafIndex, node: LeafNode) -> None:
        """Apply an Update: replace the leaf and blank its direct path (§12.1.2)."""
        self._require_member(leaf)
        self._put_leaf(leaf, node)
        self.blank_direct_path(leaf)

    def remove_leaf(self, leaf: LeafIndex) -> None:
        """Apply a Remove: blank the leaf and its direct path, then truncate (§12.1.3)."""
        self._require_member(leaf)
        self._put_leaf(leaf, None)
        self.blank_direct_path(leaf)
        self.truncate()

    # --- Tree hash (§7.8) ---------------------------------------------------------------------

    def tree_hash(self, x: NodeIndex | None = None) -> bytes:
        """The tree hash of the subtree at ``x`` (default: the root), from the cache."""
        if x is None:
            x = root(len(self._leaves))
        cached = self._hashes[x]
        if cached is not None:
            return cached
        cs = self._cs
        if x & 1 == 0:
            data = leaf_tree_hash_input(x >> 1, self._leaves[x >> 1])
        else:
            data = parent_tree_hash_input(
                self._parents[x >> 1], self.tree_hash(left(x)), self.tree_hash(right(x))
            )
        value = cs.hash(data)
        self.hash_computations += 1
        self._hashes[x] = value
        return value

    def tree_hashes(self) -> list[bytes]:
        """The tree hash of every node, by node index."""
        self.tree_hash()
        return [self.tree_hash(NodeIndex(i)) for i in range(len(self._hashes))]

    def original_tree_hash(self, x: NodeIndex, excluded: Iterable[int]) -> bytes:
        """The tree hash of ``x`` with the leaves in ``excluded`` blanked and removed from
        every unmerged_leaves list (the ``original_sibling_tree_hash`` of §7.9).

        The excluded leaves under ``x`` are kept sorted and split at each node, so the cost is
        O(|excluded| log n) plus the cached hashes of untouched subtrees.
        """
        half = 1 << level(x)
        lo, hi = (x - half + 1) >> 1, (x + half - 1) >> 1  # leaf range under x
        ex = sorted({leaf for leaf in excluded if lo <= leaf <= hi})
        if not ex:
            return self.tree_hash(x)
        return self._original_hash(x, ex, frozenset(ex))

    def _original_hash(self, x: NodeIndex, ex: list[int], ex_set: frozenset[int]) -> bytes:
        if not ex:
            return self.tree_hash(x)
        cs = self._cs
        if x & 1 == 0:
            return cs.hash(leaf_tree_hash_input(x >> 1, None))
        p = self._parents[x >> 1]
        if p is not None and any(u in ex_set for u in p.unmerged_leaves):
            p = ParentNode(
                p.encryption_key,
                p.parent_hash,
                tuple(u for u in p.unmerged_leaves if u not in ex_set),
            )
        split = bisect_left(ex, (x + 1) >> 1)  # leaves left of x's midpoint
        return cs.hash(
            parent_tree_hash_input(
                p,
                self._original_hash(left(x), ex[:split], ex_set),
                self._original_hash(right(x), ex[split:], ex_set),
            )
        )


def _index(index: dict[bytes, tuple[int, ...]], key: bytes, node: int) -> None:
    index[key] = (*index.get(key, ()), node)


def _unindex(index: dict[bytes, tuple[int, ...]], key: bytes, node: int) -> None:
    nodes = index.get(key)
    if nodes is None:
        return
    rest = tuple(x for x in nodes if x != node)
    if rest:
        index[key] = rest
    else:
        del index[key]
