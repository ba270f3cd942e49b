"""Proposals (RFC 9420 §12.1).

A :class:`Proposal` wraps one body struct — :class:`Add`, :class:`Update`, :class:`Remove`,
:class:`PreSharedKey`, :class:`ReInit`, :class:`ExternalInit`,
:class:`GroupContextExtensions` or :class:`CustomProposal` — and its ``proposal_type`` is
derived from the body, so the two can never disagree::

    proposal = Proposal(Add(key_package))
    data = proposal.encode()              # uint16 proposal_type || Add
    assert Proposal.decode(data) == proposal

A proposal type outside the RFC's seven decodes as a :class:`CustomProposal` whose body is
``opaque data<V>``, the convention mls-rs uses for application-defined proposals. Whether a
custom (or GREASE) proposal is acceptable is for the group layer to decide (§12.1, §13.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from mlspy.codec import Reader, Struct, Writer
from mlspy.errors import DecodeError, UsageError
from mlspy.messages.enums import PROPOSAL_TYPE_BY_VALUE, ProposalType
from mlspy.messages.extension import Extension, read_extensions, write_extensions
from mlspy.messages.key_package import KeyPackage
from mlspy.messages.leaf_node import LeafNode
from mlspy.messages.psk import PreSharedKeyID


@dataclass(frozen=True, slots=True)
class Add(Struct):
    """RFC 9420 §12.1.1::

    struct {
        KeyPackage key_package;
    } Add;
    """

    proposal_type: ClassVar[ProposalType] = ProposalType.add
    key_package: KeyPackage

    def encode_to(self, w: Writer) -> None:
        self.key_package.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> Add:
        return cls(KeyPackage.decode_from(r))


@dataclass(frozen=True, slots=True)
class Update(Struct):
    """RFC 9420 §12.1.2::

    struct {
        LeafNode leaf_node;
    } Update;
    """

    proposal_type: ClassVar[ProposalType] = ProposalType.update
    leaf_node: LeafNode

    def encode_to(self, w: Writer) -> None:
        self.leaf_node.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> Update:
        return cls(LeafNode.decode_from(r))


@dataclass(frozen=True, slots=True)
class Remove(Struct):
    """RFC 9420 §12.1.3::

    struct {
        uint32 removed;
    } Remove;
    """

    proposal_type: ClassVar[ProposalType] = ProposalType.remove
    removed: int

    def encode_to(self, w: Writer) -> None:
        w.uint32(self.removed)

    @classmethod
    def decode_from(cls, r: Reader) -> Remove:
        return cls(r.uint32())


@dataclass(frozen=True, slots=True)
class PreSharedKey(Struct):
    """RFC 9420 §12.1.4::

    struct {
        PreSharedKeyID psk;
    } PreSharedKey;
    """

    proposal_type: ClassVar[ProposalType] = ProposalType.psk
    psk: PreSharedKeyID

    def encode_to(self, w: Writer) -> None:
        self.psk.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> PreSharedKey:
        return cls(PreSharedKeyID.decode_from(r))


@dataclass(frozen=True, slots=True)
class ReInit(Struct):
    """RFC 9420 §12.1.5::

    struct {
        opaque group_id<V>;
        ProtocolVersion version;
        CipherSuite cipher_suite;
        Extension extensions<V>;
    } ReInit;
    """

    proposal_type: ClassVar[ProposalType] = ProposalType.reinit
    group_id: bytes
    version: int
    cipher_suite: int
    extensions: tuple[Extension, ...]

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.uint16(self.version)
        w.uint16(self.cipher_suite)
        write_extensions(w, self.extensions)

    @classmethod
    def decode_from(cls, r: Reader) -> ReInit:
        return cls(r.opaque(), r.uint16(), r.uint16(), read_extensions(r))


@dataclass(frozen=True, slots=True)
class ExternalInit(Struct):
    """RFC 9420 §12.1.6::

    struct {
      opaque kem_output<V>;
    } ExternalInit;
    """

    proposal_type: ClassVar[ProposalType] = ProposalType.external_init
    kem_output: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.kem_output)

    @classmethod
    def decode_from(cls, r: Reader) -> ExternalInit:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupContextExtensions(Struct):
    """RFC 9420 §12.1.7::

    struct {
      Extension extensions<V>;
    } GroupContextExtensions;
    """

    proposal_type: ClassVar[ProposalType] = ProposalType.group_context_extensions
    extensions: tuple[Extension, ...]

    def encode_to(self, w: Writer) -> None:
        write_extensions(w, self.extensions)

    @classmethod
    def decode_from(cls, r: Reader) -> GroupContextExtensions:
        return cls(read_extensions(r))


@dataclass(frozen=True, slots=True)
class CustomProposal(Struct):
    """A proposal of a type RFC 9420 does not define (§12.1, §13.1, §17.4).

    On the wire it is the whole proposal — the type, then ``opaque data<V>`` (the mls-rs
    convention for application-defined proposals)::

        struct {
            ProposalType proposal_type;   /* not one of add .. group_context_extensions */
            opaque data<V>;
        } CustomProposal;

    Unlike the RFC's body structs, its own encoding therefore includes ``proposal_type``, and
    ``Proposal(CustomProposal(t, d)).encode() == CustomProposal(t, d).encode()``.
    """

    proposal_type: int
    data: bytes

    def __post_init__(self) -> None:
        if self.proposal_type in PROPOSAL_TYPE_BY_VALUE:
            raise UsageError(f"proposal type {self.proposal_type} is not a custom type")

    def encode_to(self, w: Writer) -> None:
        w.uint16(self.proposal_type)
        w.opaque(self.data)

    @classmethod
    def decode_from(cls, r: Reader) -> CustomProposal:
        proposal_type = r.uint16()
        if proposal_type in PROPOSAL_TYPE_BY_VALUE:
            raise DecodeError(f"proposal type {proposal_type} is not a custom type", r.position - 2)
        return cls(proposal_type, r.opaque())


ProposalBody: TypeAlias = (
    Add
    | Update
    | Remove
    | PreSharedKey
    | ReInit
    | ExternalInit
    | GroupContextExtensions
    | CustomProposal
)

_BODY_DECODERS: dict[int, Callable[[Reader], ProposalBody]] = {
    ProposalType.add: Add.decode_from,
    ProposalType.update: Update.decode_from,
    ProposalType.remove: Remove.decode_from,
    ProposalType.psk: PreSharedKey.decode_from,
    ProposalType.reinit: ReInit.decode_from,
    ProposalType.external_init: ExternalInit.decode_from,
    ProposalType.group_context_extensions: GroupContextExtensions.decode_from,
}


@dataclass(frozen=True, slots=True)
class Proposal(Struct):
    """RFC 9420 §12.1::

        // See the "MLS Proposal Types" IANA registry for values
        uint16 ProposalType;

        struct {
            ProposalType proposal_type;
            select (Proposal.proposal_type) {
                case add:                      Add;
                case update:                   Update;
                case remove:                   Remove;
                case psk:                      PreSharedKey;
                case reinit:                   ReInit;
                case external_init:            ExternalInit;
                case group_context_extensions: GroupContextExtensions;
            };
        } Proposal;

    ``body`` is the selected struct; ``proposal_type`` is derived from it.
    """

    body: ProposalBody

    @property
    def proposal_type(self) -> int:
        return self.body.proposal_type

    def encode_to(self, w: Writer) -> None:
        body = self.body
        if not isinstance(body, CustomProposal):
            w.uint16(body.proposal_type)
        body.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> Proposal:
        proposal_type = r.uint16()
        decoder = _BODY_DECODERS.get(proposal_type)
        if decoder is None:
            return cls(CustomProposal(proposal_type, r.opaque()))
        return cls(decoder(r))
