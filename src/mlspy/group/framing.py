"""Framing messages inside a group: building, protecting and unprotecting handshake and
application messages with the keys of an epoch (RFC 9420 §6, §12.1.8, §12.4.2)."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import (
    CommitError,
    ContentTypeError,
    EpochError,
    ExternalProposalError,
    FramingError,
    MLSError,
    PathRequiredError,
    ProtocolVersionError,
    SenderError,
    UsageError,
)
from mlspy.group.state import EpochState
from mlspy.messages import (
    Add,
    AuthenticatedContent,
    ContentType,
    ExternalSenders,
    FramedContent,
    GroupContext,
    MLSMessage,
    PrivateMessage,
    ProtocolVersion,
    PublicMessage,
    SenderType,
    WireFormat,
)
from mlspy.protection import (
    OpenedPrivateMessage,
    authenticate,
    open_private_message,
    protect_private_message,
    protect_public_message,
    unprotect_public_message,
    verify_content_signature,
)
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree


def decode_message(data: bytes | MLSMessage) -> MLSMessage:
    message = data if isinstance(data, MLSMessage) else MLSMessage.decode(data)
    if message.version != ProtocolVersion.mls10:
        raise ProtocolVersionError(f"MLSMessage version {message.version} is not mls10")
    return message


def sender_signature_key(context: GroupContext, tree: RatchetTree, content: FramedContent) -> bytes:
    """The key that must have signed ``content`` (§6.1), by sender type."""
    sender = content.sender
    st = sender.sender_type
    if st == SenderType.member:
        leaf = tree.leaf(LeafIndex(sender.leaf_index or 0))
        if sender.leaf_index is None or leaf is None:
            raise SenderError(f"sender leaf {sender.leaf_index} is not a member")
        return leaf.signature_key
    if st == SenderType.external:
        if content.content_type != ContentType.proposal:
            raise ExternalProposalError("an external sender may only send proposals")
        try:
            senders = ExternalSenders.find_in(context.extensions)
        except MLSError as exc:
            raise ExternalProposalError(f"malformed external_senders extension: {exc}") from None
        index = sender.sender_index or 0
        if senders is None or index >= len(senders.external_senders):
            raise ExternalProposalError(f"no external sender at index {sender.sender_index}")
        return senders.external_senders[index].signature_key
    if st == SenderType.new_member_proposal:
        proposal = content.proposal
        if (
            content.content_type != ContentType.proposal
            or proposal is None
            or not isinstance(proposal.body, Add)
        ):
            raise ExternalProposalError("a new_member_proposal must be an Add proposal")
        return proposal.body.key_package.leaf_node.signature_key
    # new_member_commit
    commit = content.commit
    if content.content_type != ContentType.commit or commit is None:
        raise CommitError("a new_member_commit sender may only send commits")
    if commit.path is None:
        raise PathRequiredError("an external commit must carry an UpdatePath (§12.4.3.2)")
    return commit.path.leaf_node.signature_key


@dataclass(frozen=True)
class Unprotected:
    """A verified message of the current epoch (or an application message of a past one)."""

    content: AuthenticatedContent
    wire_format: WireFormat
    epoch: EpochState
    # For PrivateMessages: the ratchet key to consume once processing succeeds.
    opened: OpenedPrivateMessage | None = None


def unprotect(
    cs: CipherSuiteProvider,
    message: MLSMessage,
    current: EpochState,
    past: dict[int, EpochState],
) -> Unprotected:
    """Check epoch and group, decrypt or MAC-check, and verify the signature (§6, §12.4.2)."""
    body = message.body
    if isinstance(body, PublicMessage):
        fc = body.content
        _check_group_and_epoch(current, fc.group_id, fc.epoch)
        key = sender_signature_key(current.context, current.tree, fc)
        needs_tag = fc.sender.sender_type == SenderType.member
        content = unprotect_public_message(
            cs,
            body,
            current.context,
            current.secrets.membership_key if needs_tag else None,
            key,
        )
        return Unprotected(content, WireFormat.mls_public_message, current)
    if isinstance(body, PrivateMessage):
        if body.group_id != current.context.group_id:
            raise EpochError("message for another group")
        epoch = current
        if body.epoch != current.epoch:
            old = past.get(body.epoch)
            if old is None or body.content_type != ContentType.application:
                raise EpochError(
                    f"message for epoch {body.epoch}, current epoch is {current.epoch}"
                )
            epoch = old
        opened = open_private_message(cs, body, epoch.secret_tree, epoch.secrets.sender_data_secret)
        leaf = epoch.tree.leaf(LeafIndex(opened.sender_data.leaf_index))
        if leaf is None:
            raise SenderError(f"sender leaf {opened.sender_data.leaf_index} is not a member")
        verify_content_signature(cs, leaf.signature_key, opened.content, epoch.context)
        return Unprotected(opened.content, WireFormat.mls_private_message, epoch, opened)
    raise FramingError(f"a {message.wire_format.name} message is not a group message")


def _check_group_and_epoch(current: EpochState, group_id: bytes, epoch: int) -> None:
    if group_id != current.context.group_id:
        raise EpochError("message for another group")
    if epoch != current.epoch:
        raise EpochError(f"message for epoch {epoch}, current epoch is {current.epoch}")


def protect(
    cs: CipherSuiteProvider,
    epoch: EpochState,
    signature_private_key: bytes,
    content: FramedContent,
    wire_format: WireFormat,
    *,
    padding_block: int = 0,
) -> MLSMessage:
    """Sign and protect a proposal or application ``content`` with the keys of ``epoch``."""
    if wire_format == WireFormat.mls_public_message and (
        content.content_type == ContentType.application
    ):
        raise ContentTypeError("application data is never sent as a PublicMessage")
    if wire_format not in (WireFormat.mls_public_message, WireFormat.mls_private_message):
        raise UsageError(f"cannot frame a {wire_format.name}")
    ac = authenticate(cs, signature_private_key, wire_format, content, epoch.context)
    return protect_signed(cs, epoch, ac, padding_block=padding_block)


def authenticated_for(
    cs: CipherSuiteProvider,
    epoch: EpochState,
    signature_private_key: bytes,
    content: FramedContent,
    wire_format: WireFormat,
) -> AuthenticatedContent:
    """Sign ``content``. A commit's confirmation tag depends on its signature, so commits get
    an empty placeholder tag here that the caller replaces."""
    tag = b"" if content.content_type == ContentType.commit else None
    return authenticate(cs, signature_private_key, wire_format, content, epoch.context, tag)


def protect_signed(
    cs: CipherSuiteProvider,
    epoch: EpochState,
    content: AuthenticatedContent,
    *,
    padding_block: int = 0,
) -> MLSMessage:
    """Protect already-signed content (used for commits, whose tag follows the signature)."""
    if content.wire_format == WireFormat.mls_public_message:
        membership_key = (
            epoch.secrets.membership_key
            if content.content.sender.sender_type == SenderType.member
            else None
        )
        return MLSMessage.wrap(protect_public_message(cs, content, epoch.context, membership_key))
    padding = _padding(cs, content, padding_block)
    return MLSMessage.wrap(
        protect_private_message(
            cs, content, epoch.secret_tree, epoch.secrets.sender_data_secret, padding=padding
        )
    )


def _padding(cs: CipherSuiteProvider, content: AuthenticatedContent, block: int) -> int:
    if block <= 1:
        return 0
    # Pad the PrivateMessageContent (content body + auth) to a multiple of ``block``.
    size = len(content.content.encode()) + len(content.auth.encode())
    return -size % block
