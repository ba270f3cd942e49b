"""The top-level message container (RFC 9420 §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from mlspy.codec import Reader, Struct, Writer
from mlspy.errors import UsageError
from mlspy.messages.enums import WIRE_FORMAT_BY_VALUE, ProtocolVersion, WireFormat, read_enum16
from mlspy.messages.framing import PublicMessage
from mlspy.messages.group_info import GroupInfo
from mlspy.messages.key_package import KeyPackage
from mlspy.messages.private_message import PrivateMessage
from mlspy.messages.welcome import Welcome

MLSMessageBody: TypeAlias = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

_WIRE_FORMAT_OF: dict[type[Struct], WireFormat] = {
    PublicMessage: WireFormat.mls_public_message,
    PrivateMessage: WireFormat.mls_private_message,
    Welcome: WireFormat.mls_welcome,
    GroupInfo: WireFormat.mls_group_info,
    KeyPackage: WireFormat.mls_key_package,
}


@dataclass(frozen=True, slots=True)
class MLSMessage(Struct):
    """RFC 9420 §6::

        struct {
            ProtocolVersion version = mls10;
            WireFormat wire_format;
            select (MLSMessage.wire_format) {
                case mls_public_message:
                    PublicMessage public_message;
                case mls_private_message:
                    PrivateMessage private_message;
                case mls_welcome:
                    Welcome welcome;
                case mls_group_info:
                    GroupInfo group_info;
                case mls_key_package:
                    KeyPackage key_package;
            };
        } MLSMessage;

    Exactly the field ``wire_format`` selects is set; :meth:`wrap` builds a message from its
    body and :attr:`body` returns it. ``version`` is kept as read (an ``int``): rejecting a
    version other than ``mls10`` is the receiver's job (§6, ``ProtocolVersionError``).
    """

    version: int
    wire_format: WireFormat
    public_message: PublicMessage | None = None
    private_message: PrivateMessage | None = None
    welcome: Welcome | None = None
    group_info: GroupInfo | None = None
    key_package: KeyPackage | None = None

    def __post_init__(self) -> None:
        bodies = (
            self.public_message,
            self.private_message,
            self.welcome,
            self.group_info,
            self.key_package,
        )
        present = [b for b in bodies if b is not None]
        if len(present) != 1 or _WIRE_FORMAT_OF.get(type(present[0])) != self.wire_format:
            raise UsageError(f"MLSMessage fields do not match wire_format {self.wire_format}")

    @classmethod
    def wrap(cls, body: MLSMessageBody, version: int = ProtocolVersion.mls10) -> MLSMessage:
        """An MLSMessage carrying ``body``, its wire format derived from the body's type."""
        wire_format = _WIRE_FORMAT_OF.get(type(body))
        if wire_format is None:
            raise UsageError(f"{type(body).__name__} is not an MLSMessage body")
        if isinstance(body, PublicMessage):
            return cls(version, wire_format, public_message=body)
        if isinstance(body, PrivateMessage):
            return cls(version, wire_format, private_message=body)
        if isinstance(body, Welcome):
            return cls(version, wire_format, welcome=body)
        if isinstance(body, GroupInfo):
            return cls(version, wire_format, group_info=body)
        return cls(version, wire_format, key_package=body)

    @property
    def body(self) -> MLSMessageBody:
        """The selected body."""
        for b in (
            self.public_message,
            self.private_message,
            self.welcome,
            self.group_info,
            self.key_package,
        ):
            if b is not None:
                return b
        raise UsageError("MLSMessage has no body")  # unreachable: __post_init__ checks

    def encode_to(self, w: Writer) -> None:
        w.uint16(self.version)
        w.uint16(self.wire_format)
        self.body.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> MLSMessage:
        version = r.uint16()
        wire_format = read_enum16(r, WIRE_FORMAT_BY_VALUE, "wire_format")
        if wire_format is WireFormat.mls_public_message:
            return cls(version, wire_format, public_message=PublicMessage.decode_from(r))
        if wire_format is WireFormat.mls_private_message:
            return cls(version, wire_format, private_message=PrivateMessage.decode_from(r))
        if wire_format is WireFormat.mls_welcome:
            return cls(version, wire_format, welcome=Welcome.decode_from(r))
        if wire_format is WireFormat.mls_group_info:
            return cls(version, wire_format, group_info=GroupInfo.decode_from(r))
        return cls(version, wire_format, key_package=KeyPackage.decode_from(r))
