"""Ratchet tree nodes and the ``ratchet_tree`` vector (RFC 9420 §7.1, §12.4.3.3).

The tree is exchanged as the array of its nodes in left-to-right order, a blank node being an
absent ``optional<Node>``. This module only encodes it; the structural rules (leaves at even
indices, no trailing blank, parent hashes) are the tree layer's to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from mlspy.codec import Reader, Struct, Writer, decode_all, write_struct
from mlspy.errors import UsageError
from mlspy.messages._vectors import read_uint32s, write_uint32s
from mlspy.messages.enums import NODE_TYPE_BY_VALUE, NodeType, read_enum8
from mlspy.messages.leaf_node import LeafNode


@dataclass(frozen=True, slots=True)
class ParentNode(Struct):
    """RFC 9420 §7.1::

    struct {
        HPKEPublicKey encryption_key;
        opaque parent_hash<V>;
        uint32 unmerged_leaves<V>;
    } ParentNode;
    """

    encryption_key: bytes
    parent_hash: bytes
    unmerged_leaves: tuple[int, ...]

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.parent_hash)
        write_uint32s(w, self.unmerged_leaves, "ParentNode.unmerged_leaves")

    @classmethod
    def decode_from(cls, r: Reader) -> ParentNode:
        return cls(r.opaque(), r.opaque(), read_uint32s(r, "ParentNode.unmerged_leaves"))


@dataclass(frozen=True, slots=True)
class Node(Struct):
    """RFC 9420 §12.4.3.3::

        struct {
            NodeType node_type;
            select (Node.node_type) {
                case leaf:   LeafNode leaf_node;
                case parent: ParentNode parent_node;
            };
        } Node;

    Exactly one of ``leaf_node`` and ``parent_node`` is set, as ``node_type`` says; build one
    with :meth:`leaf` or :meth:`parent`.
    """

    node_type: NodeType
    leaf_node: LeafNode | None = None
    parent_node: ParentNode | None = None

    def __post_init__(self) -> None:
        if self.node_type == NodeType.leaf:
            ok = self.leaf_node is not None and self.parent_node is None
        elif self.node_type == NodeType.parent:
            ok = self.parent_node is not None and self.leaf_node is None
        else:
            raise UsageError(f"unknown node_type {self.node_type}")
        if not ok:
            raise UsageError(f"Node fields do not match node_type {self.node_type}")

    @classmethod
    def leaf(cls, leaf_node: LeafNode) -> Node:
        return cls(NodeType.leaf, leaf_node, None)

    @classmethod
    def parent(cls, parent_node: ParentNode) -> Node:
        return cls(NodeType.parent, None, parent_node)

    def encode_to(self, w: Writer) -> None:
        w.uint8(self.node_type)
        if self.leaf_node is not None:
            self.leaf_node.encode_to(w)
        elif self.parent_node is not None:
            self.parent_node.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> Node:
        node_type = read_enum8(r, NODE_TYPE_BY_VALUE, "node_type")
        if node_type is NodeType.leaf:
            return cls(node_type, LeafNode.decode_from(r), None)
        return cls(node_type, None, ParentNode.decode_from(r))


RatchetTreeNodes: TypeAlias = tuple[Node | None, ...]
"""``optional<Node> ratchet_tree<V>``: ``None`` is a blank node."""


def _read_optional_node(r: Reader) -> Node | None:
    return r.optional(Node.decode_from)


def _write_optional_node(w: Writer, node: Node | None) -> None:
    w.optional(node, write_struct)


def read_ratchet_tree(r: Reader) -> RatchetTreeNodes:
    """Read ``optional<Node> ratchet_tree<V>`` (§12.4.3.3)."""
    return tuple(r.vector(_read_optional_node))


def write_ratchet_tree(w: Writer, nodes: RatchetTreeNodes) -> None:
    """Write ``optional<Node> ratchet_tree<V>`` (§12.4.3.3)."""
    w.vector(nodes, _write_optional_node)


def decode_ratchet_tree(data: bytes) -> RatchetTreeNodes:
    """Decode exactly one ``optional<Node> ratchet_tree<V>``; trailing bytes are an error."""
    return decode_all(data, read_ratchet_tree, "ratchet_tree")


def encode_ratchet_tree(nodes: RatchetTreeNodes) -> bytes:
    """Encode ``optional<Node> ratchet_tree<V>``."""
    w = Writer()
    write_ratchet_tree(w, nodes)
    return w.getvalue()
