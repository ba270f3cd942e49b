"""Private messages (RFC 9420 §6.3): the ciphertext framing, the encrypted content with its
padding, the encrypted sender data, and the AEAD additional data of both.

``PrivateMessageContent`` has no type tag of its own — its content arm is selected by the
enclosing ``PrivateMessage.content_type`` — so it is not a ``Struct``: its decoder takes the
content type as a parameter, and it consumes the whole plaintext (the padding is whatever
follows ``auth``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer
from mlspy.errors import PaddingError, UsageError
from mlspy.messages.commit import Commit
from mlspy.messages.enums import CONTENT_TYPE_BY_VALUE, ContentType, WireFormat, read_enum8
from mlspy.messages.framed_content import (
    FramedContent,
    FramedContentAuthData,
    Sender,
    check_auth,
    check_content,
    decode_content_body,
    encode_content_body,
)
from mlspy.messages.framing import AuthenticatedContent
from mlspy.messages.proposals import Proposal


def private_content_aad(
    group_id: bytes, epoch: int, content_type: ContentType, authenticated_data: bytes
) -> bytes:
    """The encoded PrivateContentAAD, AEAD additional data of the ciphertext (§6.3.1)::

    struct {
        opaque group_id<V>;
        uint64 epoch;
        ContentType content_type;
        opaque authenticated_data<V>;
    } PrivateContentAAD;
    """
    w = Writer()
    w.opaque(group_id)
    w.uint64(epoch)
    w.uint8(content_type)
    w.opaque(authenticated_data)
    return w.getvalue()


def sender_data_aad(group_id: bytes, epoch: int, content_type: ContentType) -> bytes:
    """The encoded SenderDataAAD, AEAD additional data of the sender data (§6.3.2)::

    struct {
        opaque group_id<V>;
        uint64 epoch;
        ContentType content_type;
    } SenderDataAAD;
    """
    w = Writer()
    w.opaque(group_id)
    w.uint64(epoch)
    w.uint8(content_type)
    return w.getvalue()


@dataclass(frozen=True, slots=True)
class PrivateMessage(Struct):
    """RFC 9420 §6.3::

    struct {
        opaque group_id<V>;
        uint64 epoch;
        ContentType content_type;
        opaque authenticated_data<V>;
        opaque encrypted_sender_data<V>;
        opaque ciphertext<V>;
    } PrivateMessage;
    """

    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.uint64(self.epoch)
        w.uint8(self.content_type)
        w.opaque(self.authenticated_data)
        w.opaque(self.encrypted_sender_data)
        w.opaque(self.ciphertext)

    @classmethod
    def decode_from(cls, r: Reader) -> PrivateMessage:
        return cls(
            r.opaque(),
            r.uint64(),
            read_enum8(r, CONTENT_TYPE_BY_VALUE, "content_type"),
            r.opaque(),
            r.opaque(),
            r.opaque(),
        )

    def content_aad(self) -> bytes:
        """:func:`private_content_aad` of this message."""
        return private_content_aad(
            self.group_id, self.epoch, self.content_type, self.authenticated_data
        )

    def sender_data_aad(self) -> bytes:
        """:func:`sender_data_aad` of this message."""
        return sender_data_aad(self.group_id, self.epoch, self.content_type)


@dataclass(frozen=True, slots=True)
class SenderData(Struct):
    """RFC 9420 §6.3.2::

    struct {
        uint32 leaf_index;
        uint32 generation;
        opaque reuse_guard[4];
    } SenderData;
    """

    leaf_index: int
    generation: int
    reuse_guard: bytes

    def __post_init__(self) -> None:
        if len(self.reuse_guard) != 4:
            raise UsageError("SenderData.reuse_guard must be 4 bytes")

    def encode_to(self, w: Writer) -> None:
        w.uint32(self.leaf_index)
        w.uint32(self.generation)
        w.fixed(self.reuse_guard)

    @classmethod
    def decode_from(cls, r: Reader) -> SenderData:
        return cls(r.uint32(), r.uint32(), r.fixed(4))


@dataclass(frozen=True, slots=True)
class PrivateMessageContent:
    """RFC 9420 §6.3.1::

        struct {
            select (PrivateMessage.content_type) {
                case application:
                  opaque application_data<V>;

                case proposal:
                  Proposal proposal;

                case commit:
                  Commit commit;
            };

            FramedContentAuthData auth;
            opaque padding[length_of_padding];
        } PrivateMessageContent;

    ``content_type`` is ``PrivateMessage.content_type`` (not encoded here); exactly the
    matching one of ``application_data``, ``proposal`` and ``commit`` is set. The padding is
    all zero by rule, so only its length, ``padding_length``, is kept.
    """

    content_type: ContentType
    application_data: bytes | None
    proposal: Proposal | None
    commit: Commit | None
    auth: FramedContentAuthData
    padding_length: int = 0

    def __post_init__(self) -> None:
        check_content(
            self.content_type,
            self.application_data,
            self.proposal,
            self.commit,
            "PrivateMessageContent",
        )
        check_auth(self.content_type, self.auth, "PrivateMessageContent")
        if self.padding_length < 0:
            raise UsageError("PrivateMessageContent.padding_length must not be negative")

    @classmethod
    def from_authenticated_content(
        cls, content: AuthenticatedContent, padding_length: int = 0
    ) -> PrivateMessageContent:
        """The plaintext to encrypt for ``content`` (§6.3.1)."""
        if content.wire_format != WireFormat.mls_private_message:
            raise UsageError("a PrivateMessage carries wire_format mls_private_message")
        fc = content.content
        return cls(
            fc.content_type,
            fc.application_data,
            fc.proposal,
            fc.commit,
            content.auth,
            padding_length,
        )

    def to_authenticated_content(
        self, message: PrivateMessage, sender_data: SenderData
    ) -> AuthenticatedContent:
        """Reassemble the AuthenticatedContent of a decrypted ``message`` (§6.3)."""
        if message.content_type != self.content_type:
            raise UsageError("PrivateMessageContent does not match the message's content_type")
        content = FramedContent(
            message.group_id,
            message.epoch,
            Sender.member(sender_data.leaf_index),
            message.authenticated_data,
            self.content_type,
            self.application_data,
            self.proposal,
            self.commit,
        )
        return AuthenticatedContent(WireFormat.mls_private_message, content, self.auth)

    def encode_to(self, w: Writer) -> None:
        encode_content_body(w, self.application_data, self.proposal, self.commit)
        self.auth.encode_to(w)
        w.fixed(bytes(self.padding_length))

    def encode(self) -> bytes:
        w = Writer()
        self.encode_to(w)
        return w.getvalue()

    @classmethod
    def decode_from(cls, r: Reader, content_type: ContentType) -> PrivateMessageContent:
        """Decode the rest of ``r``: content, auth, then padding that must be all zero."""
        app, proposal, commit = decode_content_body(r, content_type)
        auth = FramedContentAuthData.decode_from(r, content_type)
        start = r.position
        padding = r.fixed(r.remaining)
        n = len(padding)
        if n and padding.count(0) != n:
            at = start + next(i for i, b in enumerate(padding) if b)
            raise PaddingError(f"nonzero padding byte at offset {at}", rule="FR-16")
        return cls(content_type, app, proposal, commit, auth, n)

    @classmethod
    def decode(cls, data: bytes, content_type: ContentType) -> PrivateMessageContent:
        return cls.decode_from(Reader(bytes(data)), content_type)
