"""Commits (RFC 9420 §12.4)."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer, write_struct
from mlspy.errors import UsageError
from mlspy.messages.enums import PROPOSAL_OR_REF_TYPE_BY_VALUE, ProposalOrRefType, read_enum8
from mlspy.messages.proposals import Proposal
from mlspy.messages.update_path import UpdatePath


@dataclass(frozen=True, slots=True)
class ProposalOrRef(Struct):
    """RFC 9420 §12.4::

        enum {
          reserved(0),
          proposal(1),
          reference(2),
          (255)
        } ProposalOrRefType;

        struct {
          ProposalOrRefType type;
          select (ProposalOrRef.type) {
            case proposal:  Proposal proposal;
            case reference: ProposalRef reference;
          };
        } ProposalOrRef;

    ``proposal`` is set exactly when ``type`` is ``proposal``, ``reference`` (the
    ``ProposalRef`` hash, ``opaque<V>``) exactly when it is ``reference``. Build one with
    :meth:`by_value` or :meth:`by_reference`.
    """

    type: ProposalOrRefType
    proposal: Proposal | None = None
    reference: bytes | None = None

    def __post_init__(self) -> None:
        if self.type == ProposalOrRefType.proposal:
            ok = self.proposal is not None and self.reference is None
        elif self.type == ProposalOrRefType.reference:
            ok = self.reference is not None and self.proposal is None
        else:
            raise UsageError(f"unknown ProposalOrRef type {self.type}")
        if not ok:
            raise UsageError(f"ProposalOrRef fields do not match type {self.type}")

    @classmethod
    def by_value(cls, proposal: Proposal) -> ProposalOrRef:
        return cls(ProposalOrRefType.proposal, proposal, None)

    @classmethod
    def by_reference(cls, reference: bytes) -> ProposalOrRef:
        return cls(ProposalOrRefType.reference, None, reference)

    def encode_to(self, w: Writer) -> None:
        w.uint8(self.type)
        if self.proposal is not None:
            self.proposal.encode_to(w)
        elif self.reference is not None:
            w.opaque(self.reference)

    @classmethod
    def decode_from(cls, r: Reader) -> ProposalOrRef:
        kind = read_enum8(r, PROPOSAL_OR_REF_TYPE_BY_VALUE, "ProposalOrRef.type")
        if kind is ProposalOrRefType.proposal:
            return cls(kind, Proposal.decode_from(r), None)
        return cls(kind, None, r.opaque())


@dataclass(frozen=True, slots=True)
class Commit(Struct):
    """RFC 9420 §12.4::

    struct {
        ProposalOrRef proposals<V>;
        optional<UpdatePath> path;
    } Commit;
    """

    proposals: tuple[ProposalOrRef, ...]
    path: UpdatePath | None

    def encode_to(self, w: Writer) -> None:
        w.vector(self.proposals, write_struct)
        w.optional(self.path, write_struct)

    @classmethod
    def decode_from(cls, r: Reader) -> Commit:
        return cls(tuple(r.vector(ProposalOrRef.decode_from)), r.optional(UpdatePath.decode_from))
