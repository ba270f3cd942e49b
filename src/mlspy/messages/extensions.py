"""Typed payloads of the extensions RFC 9420 defines (§5.3.3, §11.1, §12.1.8.1, §12.4.3).

Each payload class knows its ``extension_type`` and converts to and from the generic
:class:`~mlspy.messages.extension.Extension` container: ``payload.to_extension()``,
``Payload.from_extension(ext)`` and ``Payload.find_in(extensions)``. Parsing a payload is
separate from decoding the container so that unknown extensions cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from mlspy.codec import Reader, Struct, Writer, write_struct
from mlspy.errors import UsageError
from mlspy.messages._vectors import read_uint16s, write_uint16s
from mlspy.messages.credential import Credential
from mlspy.messages.enums import ExtensionType
from mlspy.messages.extension import Extension, find_extension
from mlspy.messages.tree_nodes import RatchetTreeNodes, read_ratchet_tree, write_ratchet_tree

P = TypeVar("P", bound="ExtensionPayload")


class ExtensionPayload(Struct):
    """Base of typed extension payloads: the struct carried in ``extension_data``."""

    __slots__ = ()
    extension_type: ClassVar[ExtensionType]

    def to_extension(self) -> Extension:
        return Extension(self.extension_type, self.encode())

    @classmethod
    def from_extension(cls: type[P], ext: Extension) -> P:
        """Parse ``ext.extension_data``; raises ``DecodeError`` if it is malformed."""
        if ext.extension_type != cls.extension_type:
            raise UsageError(f"extension type {ext.extension_type} is not {cls.extension_type!r}")
        return cls.decode(ext.extension_data)

    @classmethod
    def find_in(cls: type[P], extensions: Iterable[Extension]) -> P | None:
        """Find and parse this extension in a list, or ``None`` when absent."""
        ext = find_extension(extensions, cls.extension_type)
        return None if ext is None else cls.from_extension(ext)


@dataclass(frozen=True, slots=True)
class ApplicationId(ExtensionPayload):
    """RFC 9420 §5.3.3 (extension type ``application_id``, in LeafNode)::

    opaque application_id<V>;
    """

    extension_type: ClassVar[ExtensionType] = ExtensionType.application_id
    application_id: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.application_id)

    @classmethod
    def decode_from(cls, r: Reader) -> ApplicationId:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class RatchetTree(ExtensionPayload):
    """RFC 9420 §12.4.3.3 (extension type ``ratchet_tree``, in GroupInfo)::

    optional<Node> ratchet_tree<V>;
    """

    extension_type: ClassVar[ExtensionType] = ExtensionType.ratchet_tree
    ratchet_tree: RatchetTreeNodes

    def encode_to(self, w: Writer) -> None:
        write_ratchet_tree(w, self.ratchet_tree)

    @classmethod
    def decode_from(cls, r: Reader) -> RatchetTree:
        return cls(read_ratchet_tree(r))


@dataclass(frozen=True, slots=True)
class RequiredCapabilities(ExtensionPayload):
    """RFC 9420 §11.1 (extension type ``required_capabilities``, in GroupContext)::

    struct {
        ExtensionType extension_types<V>;
        ProposalType proposal_types<V>;
        CredentialType credential_types<V>;
    } RequiredCapabilities;
    """

    extension_type: ClassVar[ExtensionType] = ExtensionType.required_capabilities
    extension_types: tuple[int, ...]
    proposal_types: tuple[int, ...]
    credential_types: tuple[int, ...]

    def encode_to(self, w: Writer) -> None:
        write_uint16s(w, self.extension_types, "RequiredCapabilities.extension_types")
        write_uint16s(w, self.proposal_types, "RequiredCapabilities.proposal_types")
        write_uint16s(w, self.credential_types, "RequiredCapabilities.credential_types")

    @classmethod
    def decode_from(cls, r: Reader) -> RequiredCapabilities:
        return cls(
            read_uint16s(r, "RequiredCapabilities.extension_types"),
            read_uint16s(r, "RequiredCapabilities.proposal_types"),
            read_uint16s(r, "RequiredCapabilities.credential_types"),
        )


@dataclass(frozen=True, slots=True)
class ExternalPub(ExtensionPayload):
    """RFC 9420 §12.4.3.2 (extension type ``external_pub``, in GroupInfo)::

    struct {
        HPKEPublicKey external_pub;
    } ExternalPub;
    """

    extension_type: ClassVar[ExtensionType] = ExtensionType.external_pub
    external_pub: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.external_pub)

    @classmethod
    def decode_from(cls, r: Reader) -> ExternalPub:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class ExternalSender(Struct):
    """RFC 9420 §12.1.8.1::

    struct {
      SignaturePublicKey signature_key;
      Credential credential;
    } ExternalSender;
    """

    signature_key: bytes
    credential: Credential

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.signature_key)
        self.credential.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> ExternalSender:
        return cls(r.opaque(), Credential.decode_from(r))


@dataclass(frozen=True, slots=True)
class ExternalSenders(ExtensionPayload):
    """RFC 9420 §12.1.8.1 (extension type ``external_senders``, in GroupContext)::

        ExternalSender external_senders<V>;

    ``Sender.sender_index`` of an ``external`` sender indexes this list.
    """

    extension_type: ClassVar[ExtensionType] = ExtensionType.external_senders
    external_senders: tuple[ExternalSender, ...]

    def encode_to(self, w: Writer) -> None:
        w.vector(self.external_senders, write_struct)

    @classmethod
    def decode_from(cls, r: Reader) -> ExternalSenders:
        return cls(tuple(r.vector(ExternalSender.decode_from)))


@dataclass(frozen=True, slots=True)
class LastResort(ExtensionPayload):
    """The ``last_resort`` KeyPackage extension (type 0x000A, registered by the MLS
    extensions document, not RFC 9420): an empty ``extension_data``::

        struct {} LastResort;
    """

    extension_type: ClassVar[ExtensionType] = ExtensionType.last_resort

    def encode_to(self, w: Writer) -> None:
        return None

    @classmethod
    def decode_from(cls, r: Reader) -> LastResort:
        return cls()
