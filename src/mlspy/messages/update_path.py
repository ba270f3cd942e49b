"""HPKE ciphertexts and the UpdatePath of a Commit (RFC 9420 §7.6)."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer, write_struct
from mlspy.messages.leaf_node import LeafNode


@dataclass(frozen=True, slots=True)
class HPKECiphertext(Struct):
    """RFC 9420 §7.6::

    struct {
        opaque kem_output<V>;
        opaque ciphertext<V>;
    } HPKECiphertext;
    """

    kem_output: bytes
    ciphertext: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.kem_output)
        w.opaque(self.ciphertext)

    @classmethod
    def decode_from(cls, r: Reader) -> HPKECiphertext:
        return cls(r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class UpdatePathNode(Struct):
    """RFC 9420 §7.6::

    struct {
        HPKEPublicKey encryption_key;
        HPKECiphertext encrypted_path_secret<V>;
    } UpdatePathNode;
    """

    encryption_key: bytes
    encrypted_path_secret: tuple[HPKECiphertext, ...]

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.vector(self.encrypted_path_secret, write_struct)

    @classmethod
    def decode_from(cls, r: Reader) -> UpdatePathNode:
        return cls(r.opaque(), tuple(r.vector(HPKECiphertext.decode_from)))


@dataclass(frozen=True, slots=True)
class UpdatePath(Struct):
    """RFC 9420 §7.6::

    struct {
        LeafNode leaf_node;
        UpdatePathNode nodes<V>;
    } UpdatePath;
    """

    leaf_node: LeafNode
    nodes: tuple[UpdatePathNode, ...]

    def encode_to(self, w: Writer) -> None:
        self.leaf_node.encode_to(w)
        w.vector(self.nodes, write_struct)

    @classmethod
    def decode_from(cls, r: Reader) -> UpdatePath:
        return cls(LeafNode.decode_from(r), tuple(r.vector(UpdatePathNode.decode_from)))
