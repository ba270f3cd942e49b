"""Message protection (RFC 9420 §6): signing, PublicMessage MACs, PrivateMessage encryption.

Theory of operation: an :class:`AuthenticatedContent` is a signed :class:`FramedContent`.
As a PublicMessage it gains a membership tag (§6.2) for member senders; as a PrivateMessage
its content and auth are encrypted under a key from the sender's ratchet in the secret tree
(§6.3.1), and the sender's leaf index, generation and reuse guard are encrypted under a key
derived from ``sender_data_secret`` and a sample of that ciphertext (§6.3.2).

Receiving a PrivateMessage is two-phase so failure leaves no trace: :func:`open_private_message`
decrypts without consuming a ratchet key; :func:`unprotect_private_message` verifies the
signature and only then consumes the key (the deletion schedule of §9.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlspy.codec import Reader
from mlspy.crypto import CipherSuiteProvider, MessageSigner
from mlspy.crypto.rng import draw
from mlspy.errors import (
    ContentTypeError,
    DecodeError,
    MembershipTagError,
    SenderError,
    SignatureError,
    UsageError,
)
from mlspy.messages import (
    AuthenticatedContent,
    ContentType,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    SenderData,
    SenderType,
    WireFormat,
    framed_content_tbs,
    private_content_aad,
    sender_data_aad,
)
from mlspy.schedule.secret_tree import Lookup, RatchetType, SecretTree, sender_data_key_nonce
from mlspy.tree.math import LeafIndex

FRAMED_CONTENT_TBS = "FramedContentTBS"


# --- Content authentication (§6.1) ---------------------------------------------------------


def sign_content(
    cs: CipherSuiteProvider,
    signature_private_key: bytes | MessageSigner,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext | None,
) -> bytes:
    """``SignWithLabel(., "FramedContentTBS", FramedContentTBS)``; the key is the raw private
    key or a :class:`~mlspy.crypto.MessageSigner`."""
    return cs.sign_with_label(
        signature_private_key, FRAMED_CONTENT_TBS, framed_content_tbs(wire_format, content, context)
    )


def authenticate(
    cs: CipherSuiteProvider,
    signature_private_key: bytes | MessageSigner,
    wire_format: WireFormat,
    content: FramedContent,
    context: GroupContext | None,
    confirmation_tag: bytes | None = None,
) -> AuthenticatedContent:
    """Sign ``content`` into an AuthenticatedContent (commits also take their tag)."""
    signature = sign_content(cs, signature_private_key, wire_format, content, context)
    return AuthenticatedContent(
        wire_format, content, FramedContentAuthData(signature, confirmation_tag)
    )


def verify_content_signature(
    cs: CipherSuiteProvider,
    signature_public_key: bytes,
    content: AuthenticatedContent,
    context: GroupContext | None,
) -> None:
    """Raise :class:`SignatureError` unless the FramedContentTBS signature verifies."""
    if not cs.verify_with_label(
        signature_public_key, FRAMED_CONTENT_TBS, content.tbs(context), content.auth.signature
    ):
        raise SignatureError(
            "FramedContent signature does not verify", rule=_signature_rule(content)
        )


def _signature_rule(content: AuthenticatedContent) -> str | None:
    """The catalogue rule a bad signature breaks, by wire format, sender and content type."""
    if content.wire_format == WireFormat.mls_private_message:
        return "FR-17"
    sender = content.content.sender.sender_type
    if sender == SenderType.member:
        return "CM-05" if content.content.content_type == ContentType.commit else "PR-02"
    return {
        SenderType.external: "EP-03",
        SenderType.new_member_proposal: "EP-08",
        SenderType.new_member_commit: "EC-03",
    }.get(sender)


# --- PublicMessage (§6.2) ------------------------------------------------------------------


def protect_public_message(
    cs: CipherSuiteProvider,
    content: AuthenticatedContent,
    context: GroupContext | None,
    membership_key: bytes | None,
) -> PublicMessage:
    """Wrap signed content as a PublicMessage, adding the membership tag for members."""
    if content.wire_format != WireFormat.mls_public_message:
        raise UsageError("content was signed for another wire format")
    if content.content.content_type == ContentType.application:
        raise UsageError("application data must be sent as a PrivateMessage (RFC 9420 §6.2)")
    tag = None
    if content.content.sender.sender_type == SenderType.member:
        if membership_key is None:
            raise UsageError("a member's PublicMessage needs the membership key")
        tag = cs.mac(membership_key, content.tbm(context))
    return PublicMessage.from_authenticated_content(content, tag)


def unprotect_public_message(
    cs: CipherSuiteProvider,
    message: PublicMessage,
    context: GroupContext | None,
    membership_key: bytes | None,
    signature_public_key: bytes,
    *,
    check_membership_tag: bool = True,
) -> AuthenticatedContent:
    """Check the membership tag (member senders) and the signature (§6.2). The public view of
    a group, which holds no membership key, passes ``check_membership_tag=False``: every
    other check is the same code."""
    if message.content.content_type == ContentType.application:
        raise ContentTypeError("application data received in a PublicMessage", rule="FR-11")
    if check_membership_tag and message.content.sender.sender_type == SenderType.member:
        tag_rule = "CM-04" if message.content.content_type == ContentType.commit else "FR-10"
        if membership_key is None or message.membership_tag is None:
            raise MembershipTagError("membership tag missing", rule=tag_rule)
        if not cs.verify_mac(membership_key, message.tbm(context), message.membership_tag):
            raise MembershipTagError("membership tag does not verify", rule=tag_rule)
    content = message.authenticated_content()
    verify_content_signature(cs, signature_public_key, content, context)
    return content


# --- PrivateMessage (§6.3) -----------------------------------------------------------------


def _ratchet_type(content_type: ContentType) -> RatchetType:
    return (
        RatchetType.APPLICATION
        if content_type == ContentType.application
        else (RatchetType.HANDSHAKE)
    )


def _guarded_nonce(nonce: bytes, reuse_guard: bytes) -> bytes:
    """XOR the 4-byte reuse guard into the first four bytes of the nonce (§6.3.1)."""
    head = int.from_bytes(nonce[:4], "big") ^ int.from_bytes(reuse_guard, "big")
    return head.to_bytes(4, "big") + nonce[4:]


def protect_private_message(
    cs: CipherSuiteProvider,
    content: AuthenticatedContent,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    *,
    padding: int = 0,
    reuse_guard: bytes | None = None,
    rng: Callable[[int], bytes] | None = None,
) -> PrivateMessage:
    """Encrypt signed content from a member; advances the sender's ratchet (single use).

    The 4-byte ``reuse_guard`` (§6.3.1) is ``reuse_guard`` if given, else drawn from ``rng``
    (``os.urandom`` by default).
    """
    fc = content.content
    if content.wire_format != WireFormat.mls_private_message:
        raise UsageError("content was signed for another wire format")
    if fc.sender.sender_type != SenderType.member or fc.sender.leaf_index is None:
        raise UsageError("only members send PrivateMessages (RFC 9420 §6.3)")
    guard = reuse_guard
    if guard is None:
        guard = draw(rng, 4)
    if len(guard) != 4:
        raise UsageError("reuse_guard is 4 bytes")
    leaf = LeafIndex(fc.sender.leaf_index)
    key = secret_tree.next_key(leaf, _ratchet_type(fc.content_type))
    plaintext = PrivateMessageContent.from_authenticated_content(content, padding).encode()
    aad = private_content_aad(fc.group_id, fc.epoch, fc.content_type, fc.authenticated_data)
    ciphertext = cs.aead_seal(key.key, _guarded_nonce(key.nonce, guard), aad, plaintext)
    sd_key, sd_nonce = sender_data_key_nonce(cs, sender_data_secret, ciphertext)
    sender_data = SenderData(leaf, key.generation, guard).encode()
    encrypted_sender_data = cs.aead_seal(
        sd_key, sd_nonce, sender_data_aad(fc.group_id, fc.epoch, fc.content_type), sender_data
    )
    return PrivateMessage(
        fc.group_id,
        fc.epoch,
        fc.content_type,
        fc.authenticated_data,
        encrypted_sender_data,
        ciphertext,
    )


@dataclass(frozen=True, slots=True)
class OpenedPrivateMessage:
    """A decrypted PrivateMessage whose ratchet key is not yet consumed."""

    content: AuthenticatedContent
    sender_data: SenderData
    lookup: Lookup

    def __repr__(self) -> str:  # holds the message key
        return f"OpenedPrivateMessage(sender={self.sender_data.leaf_index}, <secret>)"


def decrypt_sender_data(
    cs: CipherSuiteProvider, message: PrivateMessage, sender_data_secret: bytes
) -> SenderData:
    """Decrypt and decode ``encrypted_sender_data`` (§6.3.2)."""
    sd_key, sd_nonce = sender_data_key_nonce(cs, sender_data_secret, message.ciphertext)
    plaintext = cs.aead_open(
        sd_key, sd_nonce, message.sender_data_aad(), message.encrypted_sender_data
    )
    return SenderData.decode(plaintext)


def open_private_message(
    cs: CipherSuiteProvider,
    message: PrivateMessage,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
) -> OpenedPrivateMessage:
    """Decrypt a PrivateMessage without consuming anything (§6.3).

    Raises :class:`CryptoError` when a ciphertext does not decrypt, :class:`SecretTreeError`
    when the generation is unusable, :class:`DecodeError` for a malformed plaintext.
    """
    sender_data = decrypt_sender_data(cs, message, sender_data_secret)
    if sender_data.leaf_index >= secret_tree.n_leaves:
        raise SenderError(
            f"sender leaf {sender_data.leaf_index} is outside the group", rule="FR-20"
        )
    leaf = LeafIndex(sender_data.leaf_index)
    found = secret_tree.lookup(leaf, _ratchet_type(message.content_type), sender_data.generation)
    nonce = _guarded_nonce(found.key.nonce, sender_data.reuse_guard)
    plaintext = cs.aead_open(found.key.key, nonce, message.content_aad(), message.ciphertext)
    r = Reader(plaintext)
    try:
        private_content = PrivateMessageContent.decode_from(r, message.content_type)
    except UsageError as exc:  # a struct invariant broken by peer bytes is a decode error
        raise DecodeError(f"PrivateMessageContent: {exc}") from exc
    content = private_content.to_authenticated_content(message, sender_data)
    return OpenedPrivateMessage(content, sender_data, found)


def unprotect_private_message(
    cs: CipherSuiteProvider,
    message: PrivateMessage,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    context: GroupContext,
    signature_key_of: Callable[[LeafIndex], bytes],
) -> AuthenticatedContent:
    """Decrypt, verify the sender's signature, then consume the ratchet key.

    ``signature_key_of`` maps the sender's leaf index to its signature public key (from the
    ratchet tree); it raises :class:`SenderError` for a blank or unknown leaf.
    """
    opened = open_private_message(cs, message, secret_tree, sender_data_secret)
    public_key = signature_key_of(LeafIndex(opened.sender_data.leaf_index))
    verify_content_signature(cs, public_key, opened.content, context)
    secret_tree.consume(opened.lookup)
    return opened.content


__all__ = [
    "FRAMED_CONTENT_TBS",
    "OpenedPrivateMessage",
    "authenticate",
    "decrypt_sender_data",
    "open_private_message",
    "protect_private_message",
    "protect_public_message",
    "sign_content",
    "unprotect_private_message",
    "unprotect_public_message",
    "verify_content_signature",
]
