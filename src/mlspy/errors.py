"""The error hierarchy of mlspy.

Every failure that reaches a caller is an :class:`MLSError`. Malformed bytes raise
:class:`DecodeError`; a peer that broke a protocol rule raises a :class:`ValidationError`
subclass naming the RFC 9420 section it enforces; misuse of the API raises :class:`UsageError`;
a failed cryptographic check raises :class:`CryptoError` without detail that could serve as an
oracle. ``IndexError``, ``KeyError``, ``struct.error`` and ``AssertionError`` never escape.
"""

from __future__ import annotations

from typing import ClassVar


class MLSError(Exception):
    """Root of every error mlspy raises."""


class DecodeError(MLSError):
    """The bytes are not a valid encoding (RFC 9420 §2.1 presentation language).

    ``offset`` is the position in the top-level input where decoding failed, when known.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{message}{where}")


class ValidationError(MLSError):
    """A peer broke a rule of RFC 9420. Subclasses name the section they enforce."""

    section: ClassVar[str] = ""

    def __init__(self, message: str) -> None:
        suffix = f" (RFC 9420 §{self.section})" if self.section else ""
        super().__init__(f"{message}{suffix}")


class UsageError(MLSError):
    """The caller used the API in a way it does not allow."""


class CryptoError(MLSError):
    """A cryptographic operation failed (bad tag, bad signature, bad key).

    Deliberately carries no detail that could help an attacker.
    """


class StorageError(MLSError):
    """The state store failed or holds data that cannot be loaded."""


class InternalError(MLSError):
    """A bug in mlspy: an invariant that should always hold did not."""


# --- Validation errors, one per rule family, each citing its section. ------------------------


class SignatureError(ValidationError):
    """A signature did not verify (§5.1.2)."""

    section = "5.1.2"


class UnsupportedCipherSuiteError(ValidationError):
    """The cipher suite is not one this implementation supports (§5.1, §17.1)."""

    section = "5.1"


class ProtocolVersionError(ValidationError):
    """The protocol version is not mls10 (§6)."""

    section = "6"


class FramingError(ValidationError):
    """A message's framing is inconsistent (§6)."""

    section = "6"


class MembershipTagError(ValidationError):
    """The membership tag of a PublicMessage did not verify (§6.2)."""

    section = "6.2"


class ConfirmationTagError(ValidationError):
    """The confirmation tag did not verify (§8.1, §12.4.2)."""

    section = "8.1"


class ContentTypeError(ValidationError):
    """Application data sent as a PublicMessage, or a content type where it may not be (§6.2)."""

    section = "6.2"


class PaddingError(ValidationError):
    """The padding of a PrivateMessageContent is not all zero (§6.3.1)."""

    section = "6.3.1"


class SecretTreeError(ValidationError):
    """A generation is outside the ratchet window or its key was already consumed (§9)."""

    section = "9"


class SenderError(ValidationError):
    """The sender of a message is not valid for the group (§6.3.2, §12.4.2)."""

    section = "6.3.2"
