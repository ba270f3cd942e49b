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
    """A peer broke a rule of RFC 9420. Subclasses name the section they enforce.

    ``rule`` is the rule's id in the validation catalogue (``docs/validation.md``, e.g.
    ``"LN-12"``) where the raise site enforces exactly one catalogued rule; an error that wraps
    another (an invalid KeyPackage inside an Add) keeps the inner error's rule and chains it
    as ``__cause__``."""

    section: ClassVar[str] = ""

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        suffix = f" (RFC 9420 §{self.section})" if self.section else ""
        super().__init__(f"{message}{suffix}")
        self.rule = rule


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


# --- Ratchet tree (§7, §12.4.3) ----------------------------------------------------------------


class TreeError(ValidationError):
    """The ratchet tree is malformed (§12.4.3.3: node types, trailing blanks, size)."""

    section = "12.4.3.3"


class TreeHashError(ValidationError):
    """The tree hash does not match the GroupContext (§12.4.3.1, §7.8)."""

    section = "12.4.3.1"


class ParentHashError(ValidationError):
    """A parent node is not parent-hash valid, or a leaf's parent_hash is wrong (§7.9.2)."""

    section = "7.9.2"


class UnmergedLeafError(ValidationError):
    """An unmerged_leaves entry does not belong where it is (§12.4.3.1, §7.1)."""

    section = "12.4.3.1"


class LeafNodeError(ValidationError):
    """A LeafNode breaks a rule of leaf node validation (§7.3)."""

    section = "7.3"


class LeafSignatureError(LeafNodeError):
    """The signature on a LeafNode does not verify (§7.3)."""


class DuplicateEncryptionKeyError(LeafNodeError):
    """An encryption key appears twice in the tree (§7.3, §12.4.3.1)."""


class DuplicateSignatureKeyError(LeafNodeError):
    """A signature key appears twice in the tree (§7.3)."""


class CredentialTypeError(LeafNodeError):
    """A credential type is not supported by every member, or a leaf does not support the
    credential types in use (§7.3)."""


class CapabilitiesError(LeafNodeError):
    """A leaf lacks a capability the group requires or its own extensions need (§7.3, §11.1)."""


class LifetimeError(LeafNodeError):
    """The current time is outside the LeafNode's lifetime (§7.3)."""


class LeafNodeSourceError(LeafNodeError):
    """The leaf_node_source is wrong for where the LeafNode appears (§7.3)."""


class UpdatePathError(ValidationError):
    """An UpdatePath does not match the tree or its keys do not derive (§7.5, §7.6)."""

    section = "7.6"


# --- Group engine (§10, §12) ---------------------------------------------------------------------


class KeyPackageError(ValidationError):
    """A KeyPackage is invalid (§10.1)."""

    section = "10.1"


class EpochError(ValidationError):
    """A message is for another epoch or group than the current one (§6, §12.4.2)."""

    section = "12.4.2"


class ProposalError(ValidationError):
    """A proposal is invalid on its own (§12.1)."""

    section = "12.1"


class ProposalListError(ValidationError):
    """A committed list of proposals is invalid (§12.2)."""

    section = "12.2"


class CommitError(ValidationError):
    """A Commit breaks a rule of commit processing (§12.4.2)."""

    section = "12.4.2"


class PathRequiredError(CommitError):
    """The Commit has no UpdatePath although its proposals require one (§12.4)."""

    section = "12.4"


class PskError(ValidationError):
    """A PSK is unknown or used where it may not be (§8.4, §12.1.4)."""

    section = "8.4"


class WelcomeError(ValidationError):
    """A Welcome cannot be joined (§12.4.3.1)."""

    section = "12.4.3.1"


class GroupInfoError(ValidationError):
    """A GroupInfo is invalid: bad signature, signer or confirmation tag (§12.4.3)."""

    section = "12.4.3"


class ExternalCommitError(ValidationError):
    """An external Commit breaks a rule of §12.4.3.2."""

    section = "12.4.3.2"


class ExternalProposalError(ValidationError):
    """An external proposal breaks a rule of §12.1.8."""

    section = "12.1.8"


class RequiredCapabilitiesError(ValidationError):
    """A member does not support the group's required capabilities (§11.1)."""

    section = "11.1"


class PolicyError(ValidationError):
    """The group's membership policy forbids this (an application-level permission, which
    makes a proposal list invalid, §12.2; mlspy carries the policy in a GroupContext
    extension, ``group/policy.py``)."""

    section = "12.2"


class GroupStateError(UsageError):
    """The group cannot do this in its current state (e.g. after ReInit or removal)."""
