"""Pre-shared key identifiers (RFC 9420 §8.4)."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer
from mlspy.errors import UsageError
from mlspy.messages.enums import (
    PSK_TYPE_BY_VALUE,
    RESUMPTION_PSK_USAGE_BY_VALUE,
    PSKType,
    ResumptionPSKUsage,
    read_enum8,
)


@dataclass(frozen=True, slots=True)
class PreSharedKeyID(Struct):
    """RFC 9420 §8.4::

        struct {
          PSKType psktype;
          select (PreSharedKeyID.psktype) {
            case external:
              opaque psk_id<V>;

            case resumption:
              ResumptionPSKUsage usage;
              opaque psk_group_id<V>;
              uint64 psk_epoch;
          };
          opaque psk_nonce<V>;
        } PreSharedKeyID;

    ``psk_id`` is set exactly for ``external``; ``usage``, ``psk_group_id`` and ``psk_epoch``
    exactly for ``resumption``. Build one with :meth:`external` or :meth:`resumption`.
    """

    psktype: PSKType
    psk_id: bytes | None
    usage: ResumptionPSKUsage | None
    psk_group_id: bytes | None
    psk_epoch: int | None
    psk_nonce: bytes

    def __post_init__(self) -> None:
        resumption_fields = (self.usage, self.psk_group_id, self.psk_epoch)
        if self.psktype == PSKType.external:
            ok = self.psk_id is not None and resumption_fields == (None, None, None)
        elif self.psktype == PSKType.resumption:
            ok = self.psk_id is None and None not in resumption_fields
        else:
            raise UsageError(f"unknown psktype {self.psktype}")
        if not ok:
            raise UsageError(f"PreSharedKeyID fields do not match psktype {self.psktype}")

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.external, psk_id, None, None, None, psk_nonce)

    @classmethod
    def resumption(
        cls, usage: ResumptionPSKUsage, psk_group_id: bytes, psk_epoch: int, psk_nonce: bytes
    ) -> PreSharedKeyID:
        return cls(PSKType.resumption, None, usage, psk_group_id, psk_epoch, psk_nonce)

    def encode_to(self, w: Writer) -> None:
        w.uint8(self.psktype)
        if self.psk_id is not None:
            w.opaque(self.psk_id)
        elif (
            self.usage is not None and self.psk_group_id is not None and self.psk_epoch is not None
        ):
            w.uint8(self.usage)
            w.opaque(self.psk_group_id)
            w.uint64(self.psk_epoch)
        w.opaque(self.psk_nonce)

    @classmethod
    def decode_from(cls, r: Reader) -> PreSharedKeyID:
        psktype = read_enum8(r, PSK_TYPE_BY_VALUE, "psktype")
        if psktype is PSKType.external:
            return cls(psktype, r.opaque(), None, None, None, r.opaque())
        usage = read_enum8(r, RESUMPTION_PSK_USAGE_BY_VALUE, "ResumptionPSKUsage")
        return cls(psktype, None, usage, r.opaque(), r.uint64(), r.opaque())
