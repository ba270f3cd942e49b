"""Leaf nodes of the ratchet tree (RFC 9420 §7.2) and their signed content (LeafNodeTBS).

Capability lists hold plain ``int`` values: they may carry unknown and GREASE code points
(§13.5), which must survive a decode/encode round trip unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlspy.codec import Reader, Struct, Writer
from mlspy.errors import UsageError
from mlspy.messages._vectors import read_uint16s, write_uint16s
from mlspy.messages.credential import Credential
from mlspy.messages.enums import LEAF_NODE_SOURCE_BY_VALUE, LeafNodeSource, read_enum8
from mlspy.messages.extension import Extension, read_extensions, write_extensions


@dataclass(frozen=True, slots=True)
class Capabilities(Struct):
    """RFC 9420 §7.2::

    struct {
        ProtocolVersion versions<V>;
        CipherSuite cipher_suites<V>;
        ExtensionType extensions<V>;
        ProposalType proposals<V>;
        CredentialType credentials<V>;
    } Capabilities;
    """

    versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    proposals: tuple[int, ...]
    credentials: tuple[int, ...]

    def encode_to(self, w: Writer) -> None:
        write_uint16s(w, self.versions, "Capabilities.versions")
        write_uint16s(w, self.cipher_suites, "Capabilities.cipher_suites")
        write_uint16s(w, self.extensions, "Capabilities.extensions")
        write_uint16s(w, self.proposals, "Capabilities.proposals")
        write_uint16s(w, self.credentials, "Capabilities.credentials")

    @classmethod
    def decode_from(cls, r: Reader) -> Capabilities:
        return cls(
            read_uint16s(r, "Capabilities.versions"),
            read_uint16s(r, "Capabilities.cipher_suites"),
            read_uint16s(r, "Capabilities.extensions"),
            read_uint16s(r, "Capabilities.proposals"),
            read_uint16s(r, "Capabilities.credentials"),
        )


@dataclass(frozen=True, slots=True)
class Lifetime(Struct):
    """RFC 9420 §7.2::

    struct {
        uint64 not_before;
        uint64 not_after;
    } Lifetime;
    """

    not_before: int
    not_after: int

    def encode_to(self, w: Writer) -> None:
        w.uint64(self.not_before)
        w.uint64(self.not_after)

    @classmethod
    def decode_from(cls, r: Reader) -> Lifetime:
        return cls(r.uint64(), r.uint64())


@dataclass(frozen=True, slots=True)
class LeafNode(Struct):
    """RFC 9420 §7.2::

        struct {
            HPKEPublicKey encryption_key;
            SignaturePublicKey signature_key;
            Credential credential;
            Capabilities capabilities;

            LeafNodeSource leaf_node_source;
            select (LeafNode.leaf_node_source) {
                case key_package:
                    Lifetime lifetime;

                case update:
                    struct{};

                case commit:
                    opaque parent_hash<V>;
            };

            Extension extensions<V>;
            /* SignWithLabel(., "LeafNodeTBS", LeafNodeTBS) */
            opaque signature<V>;
        } LeafNode;

    ``lifetime`` is set exactly when the source is ``key_package`` and ``parent_hash`` exactly
    when it is ``commit``; both are ``None`` for ``update``.
    """

    encryption_key: bytes
    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None
    parent_hash: bytes | None
    extensions: tuple[Extension, ...]
    signature: bytes
    # The encoding of the fields above ``signature``: a leaf is encoded again and again (tree
    # hash, LeafNodeTBS, the tree extension), and the struct is immutable, so it is cached.
    _content: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = self.leaf_node_source
        if source == LeafNodeSource.key_package:
            ok = self.lifetime is not None and self.parent_hash is None
        elif source == LeafNodeSource.commit:
            ok = self.parent_hash is not None and self.lifetime is None
        elif source == LeafNodeSource.update:
            ok = self.lifetime is None and self.parent_hash is None
        else:
            raise UsageError(f"unknown leaf_node_source {source}")
        if not ok:
            raise UsageError(f"LeafNode lifetime/parent_hash do not match source {source}")

    def _encode_content(self, w: Writer) -> None:
        content = self._content
        if content is None:
            inner = Writer()
            self._write_content(inner)
            content = inner.getvalue()
            object.__setattr__(self, "_content", content)
        w.fixed(content)

    def _write_content(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.signature_key)
        self.credential.encode_to(w)
        self.capabilities.encode_to(w)
        w.uint8(self.leaf_node_source)
        if self.lifetime is not None:
            self.lifetime.encode_to(w)
        elif self.parent_hash is not None:
            w.opaque(self.parent_hash)
        write_extensions(w, self.extensions)

    def encode_to(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode_from(cls, r: Reader) -> LeafNode:
        start = r.position
        encryption_key = r.opaque()
        signature_key = r.opaque()
        credential = Credential.decode_from(r)
        capabilities = Capabilities.decode_from(r)
        source = read_enum8(r, LEAF_NODE_SOURCE_BY_VALUE, "leaf_node_source")
        lifetime = None
        parent_hash = None
        if source is LeafNodeSource.key_package:
            lifetime = Lifetime.decode_from(r)
        elif source is LeafNodeSource.commit:
            parent_hash = r.opaque()
        extensions = read_extensions(r)
        content_end = r.position
        value = cls(
            encryption_key,
            signature_key,
            credential,
            capabilities,
            source,
            lifetime,
            parent_hash,
            extensions,
            r.opaque(),
        )
        object.__setattr__(value, "_content", r.span(start, content_end))
        return value

    def tbs(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """The encoded LeafNodeTBS, the content signed with label "LeafNodeTBS" (§7.2)::

            struct {
                HPKEPublicKey encryption_key;
                SignaturePublicKey signature_key;
                Credential credential;
                Capabilities capabilities;

                LeafNodeSource leaf_node_source;
                select (LeafNodeTBS.leaf_node_source) {
                    case key_package:
                        Lifetime lifetime;

                    case update:
                        struct{};

                    case commit:
                        opaque parent_hash<V>;
                };

                Extension extensions<V>;

                select (LeafNodeTBS.leaf_node_source) {
                    case key_package:
                        struct{};

                    case update:
                        opaque group_id<V>;
                        uint32 leaf_index;

                    case commit:
                        opaque group_id<V>;
                        uint32 leaf_index;
                };
            } LeafNodeTBS;

        ``group_id`` and ``leaf_index`` are required for the ``update`` and ``commit``
        sources and ignored for ``key_package`` (whose signature is not bound to a group).
        """
        w = Writer()
        self._encode_content(w)
        if self.leaf_node_source != LeafNodeSource.key_package:
            if group_id is None or leaf_index is None:
                raise UsageError(
                    "LeafNodeTBS of an update or commit leaf needs group_id and leaf_index"
                )
            w.opaque(group_id)
            w.uint32(leaf_index)
        return w.getvalue()
