"""Framing messages inside a group: building, protecting and unprotecting handshake and
application messages with the keys of an epoch (RFC 9420 §6, §12.1.8, §12.4.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlspy.crypto import CipherSuiteProvider, MessageSigner, Rng
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
        raise ProtocolVersionError(
            f"MLSMessage version {message.version} is not mls10", rule="FR-01"
        )
    return message


def decode_as(data: bytes | MLSMessage, kind: str) -> Any:
    """The body of an MLSMessage that must carry a ``kind`` ("welcome", "group_info",
    "key_package"); anything else is a :class:`UsageError`."""
    body = getattr(decode_message(data), kind)
    if body is None:
        raise UsageError(f"the message is not a {kind}")
    return body


def sender_signature_key(context: GroupContext, tree: RatchetTree, content: FramedContent) -> bytes:
    """The key that must have signed ``content`` (§6.1), by sender type."""
    st = content.sender.sender_type
    if st == SenderType.member:
        return _member_key(tree, content)
    if st == SenderType.external:
        return _external_sender_key(context, content)
    if st == SenderType.new_member_proposal:
        return _new_member_proposal_key(content)
    return _external_joiner_key(content)


def _member_key(tree: RatchetTree, content: FramedContent) -> bytes:
    """A member signs with its leaf's key (§6.1)."""
    index = content.sender.leaf_index
    leaf = tree.leaf(LeafIndex(index or 0))
    if index is None or leaf is None:
        outside = index is None or index >= tree.n_leaves
        raise SenderError(
            f"sender leaf {index} is not a member", rule="CM-07" if outside else "CM-08"
        )
    return leaf.signature_key


def _external_sender_key(context: GroupContext, content: FramedContent) -> bytes:
    """An external sender proposes with its key in the group's external_senders (§12.1.8)."""
    if content.content_type != ContentType.proposal:
        raise ExternalProposalError("an external sender may only send proposals", rule="CM-10")
    try:
        senders = ExternalSenders.find_in(context.extensions)
    except MLSError as exc:
        raise ExternalProposalError(
            f"malformed external_senders extension: {exc}", rule="EP-06"
        ) from exc
    index = content.sender.sender_index or 0
    if senders is None or index >= len(senders.external_senders):
        raise ExternalProposalError(
            f"no external sender at index {content.sender.sender_index}",
            rule="EP-01" if senders is None else "EP-02",
        )
    return senders.external_senders[index].signature_key


def _new_member_proposal_key(content: FramedContent) -> bytes:
    """A would-be member signs its own Add with its KeyPackage's key (§12.1.8)."""
    proposal = content.proposal
    if (
        content.content_type != ContentType.proposal
        or proposal is None
        or not isinstance(proposal.body, Add)
    ):
        raise ExternalProposalError(
            "a new_member_proposal must be an Add proposal",
            rule="EP-07" if content.content_type == ContentType.proposal else "CM-10",
        )
    return proposal.body.key_package.leaf_node.signature_key


def _external_joiner_key(content: FramedContent) -> bytes:
    """An external joiner signs with its new leaf's key, in its UpdatePath (§12.4.3.2)."""
    commit = content.commit
    if content.content_type != ContentType.commit or commit is None:
        raise CommitError("a new_member_commit sender may only send commits", rule="FR-08")
    if commit.path is None:
        raise PathRequiredError(
            "an external commit must carry an UpdatePath (§12.4.3.2)", rule="EC-01"
        )
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
        content = verify_public_message(
            cs, body, current.context, current.tree, current.secrets.membership_key
        )
        return Unprotected(content, WireFormat.mls_public_message, current)
    if isinstance(body, PrivateMessage):
        if body.group_id != current.context.group_id:
            raise EpochError("message for another group", rule="FR-12")
        epoch = current
        if body.epoch != current.epoch:
            old = past.get(body.epoch)
            if old is None or body.content_type != ContentType.application:
                # Past epochs serve application data only (FR-13), as long as retained (FR-14).
                application = body.content_type == ContentType.application
                raise EpochError(
                    f"message for epoch {body.epoch}, current epoch is {current.epoch}",
                    rule="FR-14" if application else "FR-13",
                )
            epoch = old
        opened = open_private_message(cs, body, epoch.secret_tree, epoch.secrets.sender_data_secret)
        leaf = epoch.tree.leaf(LeafIndex(opened.sender_data.leaf_index))
        if leaf is None:
            raise SenderError(
                f"sender leaf {opened.sender_data.leaf_index} is not a member", rule="FR-19"
            )
        verify_content_signature(cs, leaf.signature_key, opened.content, epoch.context)
        return Unprotected(opened.content, WireFormat.mls_private_message, epoch, opened)
    raise FramingError(
        f"a {message.wire_format.name} message is not a group message",
        rule="FR-04" if message.wire_format == WireFormat.mls_welcome else "FR-03",
    )


def verify_public_message(
    cs: CipherSuiteProvider,
    message: PublicMessage,
    context: GroupContext,
    tree: RatchetTree,
    membership_key: bytes | None,
) -> AuthenticatedContent:
    """The framing checks of a PublicMessage of the current epoch (§6.2, §12.1, §12.4.2):
    group and epoch, the sender's key, content type, membership tag and signature. The public
    view of a group passes ``membership_key=None`` (it cannot check the tag); members and the
    public view share everything else."""
    fc = message.content
    check_group_and_epoch(context, fc)
    key = sender_signature_key(context, tree, fc)
    return unprotect_public_message(
        cs,
        message,
        context,
        membership_key,
        key,
        check_membership_tag=membership_key is not None,
    )


def check_group_and_epoch(context: GroupContext, content: FramedContent) -> None:
    """A PublicMessage is for this group (§6) and its current epoch (§12.1, §12.4.2)."""
    commit = content.content_type == ContentType.commit
    if content.group_id != context.group_id:
        raise EpochError("message for another group", rule="CM-03" if commit else None)
    if content.epoch != context.epoch:
        if commit:
            rule = "CM-02" if content.epoch < context.epoch else "CM-01"
        else:
            rule = "EP-05" if content.sender.sender_type == SenderType.external else "PR-01"
        raise EpochError(
            f"message for epoch {content.epoch}, current epoch is {context.epoch}", rule=rule
        )


def protect(
    cs: CipherSuiteProvider,
    epoch: EpochState,
    signature_private_key: bytes | MessageSigner,
    content: FramedContent,
    wire_format: WireFormat,
    *,
    padding_block: int = 0,
    rng: Rng | None = None,
) -> MLSMessage:
    """Sign and protect a proposal or application ``content`` with the keys of ``epoch``;
    ``rng`` draws a PrivateMessage's reuse guard (the provider's, ``config.provider.rng``)."""
    if wire_format == WireFormat.mls_public_message and (
        content.content_type == ContentType.application
    ):
        raise ContentTypeError("application data is never sent as a PublicMessage")
    if wire_format not in (WireFormat.mls_public_message, WireFormat.mls_private_message):
        raise UsageError(f"cannot frame a {wire_format.name}")
    ac = authenticate(cs, signature_private_key, wire_format, content, epoch.context)
    return protect_signed(cs, epoch, ac, padding_block=padding_block, rng=rng)


def authenticated_for(
    cs: CipherSuiteProvider,
    epoch: EpochState,
    signature_private_key: bytes | MessageSigner,
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
    rng: Rng | None = None,
) -> MLSMessage:
    """Protect already-signed content (used for commits, whose tag follows the signature);
    ``rng`` draws a PrivateMessage's reuse guard."""
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
            cs,
            content,
            epoch.secret_tree,
            epoch.secrets.sender_data_secret,
            padding=padding,
            rng=rng,
        )
    )


def _padding(cs: CipherSuiteProvider, content: AuthenticatedContent, block: int) -> int:
    if block <= 1:
        return 0
    # Pad the PrivateMessageContent (content body + auth) to a multiple of ``block``.
    size = len(content.content.encode()) + len(content.auth.encode())
    return -size % block
