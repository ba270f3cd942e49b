"""Parent hashes (RFC 9420 §7.9): computing the chain of an UpdatePath and verifying that
every non-blank parent node of a tree is parent-hash valid (§7.9.2).

    struct {
        HPKEPublicKey encryption_key;
        opaque parent_hash<V>;
        opaque original_sibling_tree_hash<V>;
    } ParentHashInput;
"""

from __future__ import annotations

from mlspy.errors import ParentHashError
from mlspy.messages import LeafNodeSource, ParentNode
from mlspy.messages.hash_inputs import parent_hash_input
from mlspy.tree.math import LeafIndex, NodeIndex, is_in_subtree, left, right
from mlspy.tree.ratchet_tree import RatchetTree


def parent_hash_of(tree: RatchetTree, p: NodeIndex, copath_child: NodeIndex) -> bytes:
    """The parent hash of non-blank parent ``p`` with copath child ``copath_child``."""
    node = tree.parent(p)
    if node is None:
        raise ParentHashError(f"parent node {p} is blank")
    sibling_hash = tree.original_tree_hash(copath_child, node.unmerged_leaves)
    return tree.cipher_suite.hash(
        parent_hash_input(node.encryption_key, node.parent_hash, sibling_hash)
    )


def path_parent_hashes(
    tree: RatchetTree, leaf: LeafIndex, filtered_path: list[NodeIndex]
) -> tuple[list[bytes], bytes]:
    """Set the ``parent_hash`` of each node on a freshly merged filtered direct path.

    Walks from the top of the path down (§7.9: "computed from root to leaf"): the topmost node
    gets the empty parent hash, each lower node the parent hash of the node above it. Returns
    the parent_hash values set (bottom-up order) and the one the leaf must carry.
    """
    above = b""
    values: list[bytes] = [b""] * len(filtered_path)
    for i in range(len(filtered_path) - 1, -1, -1):
        p = filtered_path[i]
        node = tree.parent(p)
        if node is None:
            raise ParentHashError(f"parent node {p} on the path is blank")
        if node.parent_hash != above:
            tree.set_parent(p, ParentNode(node.encryption_key, above, node.unmerged_leaves))
        values[i] = above
        above = parent_hash_of(tree, p, tree.copath_child(p, leaf))
    return values, above


def _node_parent_hash(tree: RatchetTree, d: NodeIndex) -> bytes | None:
    if d & 1:
        node = tree.parent(d)
        return node.parent_hash if node is not None else None
    leaf = tree.leaf(LeafIndex(d >> 1))
    if leaf is None or leaf.leaf_node_source != LeafNodeSource.commit:
        return None
    return leaf.parent_hash


def verify_parent_hashes(tree: RatchetTree) -> None:
    """Every non-blank parent node must be parent-hash valid (§7.9.2).

    "Top down": a parent P is linked to a descendant D in the resolution of one child C when
    D's parent_hash is P's parent hash with copath child S, and P's unmerged leaves under C are
    exactly the resolution of C without D. Every linked D is strictly lower than P, so when
    every non-blank parent has a link, each chains down to a leaf.
    """
    for p, node in tree.parents():
        linked = False
        for c, s in ((left(p), right(p)), (right(p), left(p))):
            resolution = tree.resolution(c)
            candidates = [d for d in resolution if _node_parent_hash(tree, d) is not None]
            if not candidates:
                continue
            expected = parent_hash_of(tree, p, s)
            unmerged_under_c = {
                NodeIndex(2 * u) for u in node.unmerged_leaves if is_in_subtree(NodeIndex(2 * u), c)
            }
            for d in candidates:
                if _node_parent_hash(tree, d) != expected:
                    continue
                if unmerged_under_c == set(resolution) - {d}:
                    linked = True
                    break
            if linked:
                break
        if not linked:
            raise ParentHashError(f"parent node {p} is not parent-hash valid", rule="TR-03")
