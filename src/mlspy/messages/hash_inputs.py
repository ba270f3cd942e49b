"""Encodings hashed by the tree and key schedule layers (RFC 9420 §7.8, §7.9, §8.4).

These structs are never sent; they are built, encoded and hashed, so they are pure encoding
functions rather than dataclasses.
"""

from __future__ import annotations

from mlspy.codec import Writer, write_struct
from mlspy.messages.enums import NodeType
from mlspy.messages.leaf_node import LeafNode
from mlspy.messages.psk import PreSharedKeyID
from mlspy.messages.tree_nodes import ParentNode


def leaf_tree_hash_input(leaf_index: int, leaf_node: LeafNode | None) -> bytes:
    """The encoded TreeHashInput of a leaf (§7.8); ``None`` is a blank leaf::

    struct {
      NodeType node_type;
      select (TreeHashInput.node_type) {
        case leaf:   LeafNodeHashInput leaf_node;
        case parent: ParentNodeHashInput parent_node;
      };
    } TreeHashInput;

    struct {
        uint32 leaf_index;
        optional<LeafNode> leaf_node;
    } LeafNodeHashInput;
    """
    w = Writer()
    w.uint8(NodeType.leaf)
    w.uint32(leaf_index)
    w.optional(leaf_node, write_struct)
    return w.getvalue()


def parent_tree_hash_input(
    parent_node: ParentNode | None, left_hash: bytes, right_hash: bytes
) -> bytes:
    """The encoded TreeHashInput of a parent (§7.8); ``None`` is a blank parent::

    struct {
        optional<ParentNode> parent_node;
        opaque left_hash<V>;
        opaque right_hash<V>;
    } ParentNodeHashInput;
    """
    w = Writer()
    w.uint8(NodeType.parent)
    w.optional(parent_node, write_struct)
    w.opaque(left_hash)
    w.opaque(right_hash)
    return w.getvalue()


def parent_hash_input(
    encryption_key: bytes, parent_hash: bytes, original_sibling_tree_hash: bytes
) -> bytes:
    """The encoded ParentHashInput (§7.9)::

    struct {
        HPKEPublicKey encryption_key;
        opaque parent_hash<V>;
        opaque original_sibling_tree_hash<V>;
    } ParentHashInput;
    """
    w = Writer()
    w.opaque(encryption_key)
    w.opaque(parent_hash)
    w.opaque(original_sibling_tree_hash)
    return w.getvalue()


def psk_label(psk_id: PreSharedKeyID, index: int, count: int) -> bytes:
    """The encoded PSKLabel, context of "derived psk" (§8.4)::

    struct {
        PreSharedKeyID id;
        uint16 index;
        uint16 count;
    } PSKLabel;
    """
    w = Writer()
    psk_id.encode_to(w)
    w.uint16(index)
    w.uint16(count)
    return w.getvalue()
