"""Authenticated content, public messages and their signed/MACed encodings (RFC 9420 §6.1,
§6.2) and the transcript-hash inputs (§8.2).

Theory of operation: a :class:`~.framed_content.FramedContent` is signed over
:func:`framed_content_tbs`, giving a :class:`~.framed_content.FramedContentAuthData`; the
pair with its wire format is an :class:`AuthenticatedContent`. As a :class:`PublicMessage` it
is additionally MACed over :func:`authenticated_content_tbm`; as a PrivateMessage
(:mod:`.private_message`) it is encrypted instead. A commit's content and signature feed the
confirmed transcript hash, its confirmation tag the interim one.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer
from mlspy.errors import UsageError
from mlspy.messages.enums import (
    WIRE_FORMAT_BY_VALUE,
    ContentType,
    ProtocolVersion,
    SenderType,
    WireFormat,
    read_enum16,
)
from mlspy.messages.framed_content import FramedContent, FramedContentAuthData, check_auth
from mlspy.messages.group_context import GroupContext


def _has_membership_context(sender_type: SenderType) -> bool:
    return sender_type in (SenderType.member, SenderType.new_member_commit)


def framed_content_tbs(
    wire_format: WireFormat, content: FramedContent, context: GroupContext | None
) -> bytes:
    """The encoded FramedContentTBS, signed with label "FramedContentTBS" (§6.1)::

        struct {
            ProtocolVersion version = mls10;
            WireFormat wire_format;
            FramedContent content;
            select (FramedContentTBS.content.sender.sender_type) {
                case member:
                case new_member_commit:
                    GroupContext context;
                case external:
                case new_member_proposal:
                    struct{};
            };
        } FramedContentTBS;

    ``context`` is required for ``member`` and ``new_member_commit`` senders and ignored for
    the others.
    """
    w = Writer()
    w.uint16(ProtocolVersion.mls10)
    w.uint16(wire_format)
    content.encode_to(w)
    if _has_membership_context(content.sender.sender_type):
        if context is None:
            raise UsageError("FramedContentTBS of a member or new_member_commit needs context")
        context.encode_to(w)
    return w.getvalue()


def authenticated_content_tbm(content_tbs: bytes, auth: FramedContentAuthData) -> bytes:
    """The encoded AuthenticatedContentTBM, input of the membership tag MAC (§6.2)::

        struct {
          FramedContentTBS content_tbs;
          FramedContentAuthData auth;
        } AuthenticatedContentTBM;

    ``content_tbs`` is the output of :func:`framed_content_tbs`.
    """
    return content_tbs + auth.encode()


def confirmed_transcript_hash_input(
    wire_format: WireFormat, content: FramedContent, signature: bytes
) -> bytes:
    """The encoded ConfirmedTranscriptHashInput (§8.2)::

    struct {
        WireFormat wire_format;
        FramedContent content; /* with content_type == commit */
        opaque signature<V>;
    } ConfirmedTranscriptHashInput;
    """
    if content.content_type != ContentType.commit:
        raise UsageError("ConfirmedTranscriptHashInput needs a commit")
    w = Writer()
    w.uint16(wire_format)
    content.encode_to(w)
    w.opaque(signature)
    return w.getvalue()


def interim_transcript_hash_input(confirmation_tag: bytes) -> bytes:
    """The encoded InterimTranscriptHashInput (§8.2)::

    struct {
        MAC confirmation_tag;
    } InterimTranscriptHashInput;
    """
    w = Writer()
    w.opaque(confirmation_tag)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class AuthenticatedContent(Struct):
    """RFC 9420 §6.1::

    struct {
        WireFormat wire_format;
        FramedContent content;
        FramedContentAuthData auth;
    } AuthenticatedContent;
    """

    wire_format: WireFormat
    content: FramedContent
    auth: FramedContentAuthData

    def __post_init__(self) -> None:
        check_auth(self.content.content_type, self.auth, "AuthenticatedContent")

    def encode_to(self, w: Writer) -> None:
        w.uint16(self.wire_format)
        self.content.encode_to(w)
        self.auth.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> AuthenticatedContent:
        wire_format = read_enum16(r, WIRE_FORMAT_BY_VALUE, "wire_format")
        content = FramedContent.decode_from(r)
        return cls(wire_format, content, FramedContentAuthData.decode_from(r, content.content_type))

    def tbs(self, context: GroupContext | None) -> bytes:
        """:func:`framed_content_tbs` of this content and wire format."""
        return framed_content_tbs(self.wire_format, self.content, context)

    def tbm(self, context: GroupContext | None) -> bytes:
        """:func:`authenticated_content_tbm` of this content (for PublicMessages)."""
        return authenticated_content_tbm(self.tbs(context), self.auth)

    def confirmed_transcript_hash_input(self) -> bytes:
        """:func:`confirmed_transcript_hash_input` of this commit."""
        return confirmed_transcript_hash_input(self.wire_format, self.content, self.auth.signature)

    def interim_transcript_hash_input(self) -> bytes:
        """:func:`interim_transcript_hash_input` of this commit's confirmation tag."""
        if self.auth.confirmation_tag is None:
            raise UsageError("InterimTranscriptHashInput needs a commit's confirmation_tag")
        return interim_transcript_hash_input(self.auth.confirmation_tag)


@dataclass(frozen=True, slots=True)
class PublicMessage(Struct):
    """RFC 9420 §6.2::

        struct {
            FramedContent content;
            FramedContentAuthData auth;
            select (PublicMessage.content.sender.sender_type) {
                case member:
                    MAC membership_tag;
                case external:
                case new_member_commit:
                case new_member_proposal:
                    struct{};
            };
        } PublicMessage;

    ``membership_tag`` is set exactly for ``member`` senders.
    """

    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None

    def __post_init__(self) -> None:
        check_auth(self.content.content_type, self.auth, "PublicMessage")
        is_member = self.content.sender.sender_type == SenderType.member
        if (self.membership_tag is not None) != is_member:
            raise UsageError("PublicMessage: membership_tag must be present exactly for members")

    @classmethod
    def from_authenticated_content(
        cls, content: AuthenticatedContent, membership_tag: bytes | None
    ) -> PublicMessage:
        if content.wire_format != WireFormat.mls_public_message:
            raise UsageError("a PublicMessage carries wire_format mls_public_message")
        return cls(content.content, content.auth, membership_tag)

    def authenticated_content(self) -> AuthenticatedContent:
        """This message's content as signed: wire format ``mls_public_message``."""
        return AuthenticatedContent(WireFormat.mls_public_message, self.content, self.auth)

    def tbm(self, context: GroupContext | None) -> bytes:
        """The AuthenticatedContentTBM whose MAC is ``membership_tag`` (§6.2)."""
        tbs = framed_content_tbs(WireFormat.mls_public_message, self.content, context)
        return authenticated_content_tbm(tbs, self.auth)

    def encode_to(self, w: Writer) -> None:
        self.content.encode_to(w)
        self.auth.encode_to(w)
        if self.membership_tag is not None:
            w.opaque(self.membership_tag)

    @classmethod
    def decode_from(cls, r: Reader) -> PublicMessage:
        content = FramedContent.decode_from(r)
        auth = FramedContentAuthData.decode_from(r, content.content_type)
        tag = r.opaque() if content.sender.sender_type is SenderType.member else None
        return cls(content, auth, tag)
