"""Key packages (RFC 9420 §10)."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer
from mlspy.messages.extension import Extension, read_extensions, write_extensions
from mlspy.messages.leaf_node import LeafNode


@dataclass(frozen=True, slots=True)
class KeyPackage(Struct):
    """RFC 9420 §10::

        struct {
            ProtocolVersion version;
            CipherSuite cipher_suite;
            HPKEPublicKey init_key;
            LeafNode leaf_node;
            Extension extensions<V>;
            /* SignWithLabel(., "KeyPackageTBS", KeyPackageTBS) */
            opaque signature<V>;
        } KeyPackage;

    ``version`` and ``cipher_suite`` are plain ints: their validation is the receiver's job
    (§10.1), and an unknown cipher suite must still decode.
    """

    version: int
    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extensions: tuple[Extension, ...]
    signature: bytes

    def _encode_content(self, w: Writer) -> None:
        w.uint16(self.version)
        w.uint16(self.cipher_suite)
        w.opaque(self.init_key)
        self.leaf_node.encode_to(w)
        write_extensions(w, self.extensions)

    def encode_to(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode_from(cls, r: Reader) -> KeyPackage:
        return cls(
            r.uint16(),
            r.uint16(),
            r.opaque(),
            LeafNode.decode_from(r),
            read_extensions(r),
            r.opaque(),
        )

    def tbs(self) -> bytes:
        """The encoded KeyPackageTBS, signed with label "KeyPackageTBS" (§10)::

        struct {
            ProtocolVersion version;
            CipherSuite cipher_suite;
            HPKEPublicKey init_key;
            LeafNode leaf_node;
            Extension extensions<V>;
        } KeyPackageTBS;
        """
        w = Writer()
        self._encode_content(w)
        return w.getvalue()
