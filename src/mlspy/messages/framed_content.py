"""Framed content: the sender, the content and its authentication data (RFC 9420 §6, §6.1).

``FramedContentAuthData`` cannot be decoded on its own — whether ``confirmation_tag`` is
present depends on the enclosing content type — so it is not a ``Struct``: its decoder takes
the content type as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlspy.codec import Reader, Struct, Writer
from mlspy.errors import UsageError
from mlspy.messages.commit import Commit
from mlspy.messages.enums import (
    CONTENT_TYPE_BY_VALUE,
    SENDER_TYPE_BY_VALUE,
    ContentType,
    SenderType,
    read_enum8,
)
from mlspy.messages.proposals import Proposal


@dataclass(frozen=True, slots=True)
class Sender(Struct):
    """RFC 9420 §6::

        struct {
            SenderType sender_type;
            select (Sender.sender_type) {
                case member:
                    uint32 leaf_index;
                case external:
                    uint32 sender_index;
                case new_member_commit:
                case new_member_proposal:
                    struct{};
            };
        } Sender;

    ``leaf_index`` is set exactly for ``member``, ``sender_index`` exactly for ``external``.
    Build one with :meth:`member`, :meth:`external`, :meth:`new_member_proposal` or
    :meth:`new_member_commit`.
    """

    sender_type: SenderType
    leaf_index: int | None = None
    sender_index: int | None = None

    def __post_init__(self) -> None:
        st = self.sender_type
        if st == SenderType.member:
            ok = self.leaf_index is not None and self.sender_index is None
        elif st == SenderType.external:
            ok = self.sender_index is not None and self.leaf_index is None
        elif st in (SenderType.new_member_proposal, SenderType.new_member_commit):
            ok = self.leaf_index is None and self.sender_index is None
        else:
            raise UsageError(f"unknown sender_type {st}")
        if not ok:
            raise UsageError(f"Sender fields do not match sender_type {st}")

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        return cls(SenderType.member, leaf_index, None)

    @classmethod
    def external(cls, sender_index: int) -> Sender:
        return cls(SenderType.external, None, sender_index)

    @classmethod
    def new_member_proposal(cls) -> Sender:
        return cls(SenderType.new_member_proposal, None, None)

    @classmethod
    def new_member_commit(cls) -> Sender:
        return cls(SenderType.new_member_commit, None, None)

    def encode_to(self, w: Writer) -> None:
        w.uint8(self.sender_type)
        if self.leaf_index is not None:
            w.uint32(self.leaf_index)
        elif self.sender_index is not None:
            w.uint32(self.sender_index)

    @classmethod
    def decode_from(cls, r: Reader) -> Sender:
        st = read_enum8(r, SENDER_TYPE_BY_VALUE, "sender_type")
        if st is SenderType.member:
            return cls(st, r.uint32(), None)
        if st is SenderType.external:
            return cls(st, None, r.uint32())
        return cls(st, None, None)


def check_content(
    content_type: ContentType,
    application_data: bytes | None,
    proposal: Proposal | None,
    commit: Commit | None,
    what: str,
) -> None:
    """Exactly the content arm ``content_type`` selects is set."""
    if content_type == ContentType.application:
        ok = application_data is not None and proposal is None and commit is None
    elif content_type == ContentType.proposal:
        ok = proposal is not None and application_data is None and commit is None
    elif content_type == ContentType.commit:
        ok = commit is not None and application_data is None and proposal is None
    else:
        raise UsageError(f"unknown content_type {content_type}")
    if not ok:
        raise UsageError(f"{what} fields do not match content_type {content_type}")


def encode_content_body(
    w: Writer,
    application_data: bytes | None,
    proposal: Proposal | None,
    commit: Commit | None,
) -> None:
    """The ``select (content_type)`` arm shared by FramedContent and PrivateMessageContent."""
    if application_data is not None:
        w.opaque(application_data)
    elif proposal is not None:
        proposal.encode_to(w)
    elif commit is not None:
        commit.encode_to(w)


def decode_content_body(
    r: Reader, content_type: ContentType
) -> tuple[bytes | None, Proposal | None, Commit | None]:
    """Read the ``select (content_type)`` arm: (application_data, proposal, commit)."""
    if content_type == ContentType.application:
        return r.opaque(), None, None
    if content_type == ContentType.proposal:
        return None, Proposal.decode_from(r), None
    if content_type == ContentType.commit:
        return None, None, Commit.decode_from(r)
    raise UsageError(f"unknown content_type {content_type}")


@dataclass(frozen=True, slots=True)
class FramedContent(Struct):
    """RFC 9420 §6::

        struct {
            opaque group_id<V>;
            uint64 epoch;
            Sender sender;
            opaque authenticated_data<V>;

            ContentType content_type;
            select (FramedContent.content_type) {
                case application:
                  opaque application_data<V>;
                case proposal:
                  Proposal proposal;
                case commit:
                  Commit commit;
            };
        } FramedContent;

    Exactly one of ``application_data``, ``proposal`` and ``commit`` is set, as
    ``content_type`` says.
    """

    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    content_type: ContentType
    application_data: bytes | None = None
    proposal: Proposal | None = None
    commit: Commit | None = None
    # The encoding, kept from decoding or computed once: a FramedContent is encoded for its
    # signature, membership tag and transcript hash, and a commit's can be large.
    _encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_content(
            self.content_type, self.application_data, self.proposal, self.commit, "FramedContent"
        )

    def encode_to(self, w: Writer) -> None:
        encoded = self._encoded
        if encoded is None:
            inner = Writer()
            self._write(inner)
            encoded = inner.getvalue()
            object.__setattr__(self, "_encoded", encoded)
        w.fixed(encoded)

    def _write(self, w: Writer) -> None:
        w.opaque(self.group_id)
        w.uint64(self.epoch)
        self.sender.encode_to(w)
        w.opaque(self.authenticated_data)
        w.uint8(self.content_type)
        encode_content_body(w, self.application_data, self.proposal, self.commit)

    @classmethod
    def decode_from(cls, r: Reader) -> FramedContent:
        start = r.position
        group_id = r.opaque()
        epoch = r.uint64()
        sender = Sender.decode_from(r)
        authenticated_data = r.opaque()
        content_type = read_enum8(r, CONTENT_TYPE_BY_VALUE, "content_type")
        app, proposal, commit = decode_content_body(r, content_type)
        value = cls(
            group_id, epoch, sender, authenticated_data, content_type, app, proposal, commit
        )
        object.__setattr__(value, "_encoded", r.span(start, r.position))
        return value


@dataclass(frozen=True, slots=True)
class FramedContentAuthData:
    """RFC 9420 §6.1::

        opaque MAC<V>;

        struct {
            /* SignWithLabel(., "FramedContentTBS", FramedContentTBS) */
            opaque signature<V>;
            select (FramedContent.content_type) {
                case commit:
                    /*
                      MAC(confirmation_key,
                          GroupContext.confirmed_transcript_hash)
                    */
                    MAC confirmation_tag;
                case application:
                case proposal:
                    struct{};
            };
        } FramedContentAuthData;

    ``confirmation_tag`` is set exactly for commits; the enclosing struct checks that.
    Decoding needs the content type: ``FramedContentAuthData.decode(data, content_type)``.
    """

    signature: bytes
    confirmation_tag: bytes | None = None

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.signature)
        if self.confirmation_tag is not None:
            w.opaque(self.confirmation_tag)

    def encode(self) -> bytes:
        w = Writer()
        self.encode_to(w)
        return w.getvalue()

    @classmethod
    def decode_from(cls, r: Reader, content_type: ContentType) -> FramedContentAuthData:
        signature = r.opaque()
        if content_type == ContentType.commit:
            return cls(signature, r.opaque())
        return cls(signature, None)

    @classmethod
    def decode(cls, data: bytes, content_type: ContentType) -> FramedContentAuthData:
        r = Reader(bytes(data))
        value = cls.decode_from(r, content_type)
        r.finish("FramedContentAuthData")
        return value


def check_auth(content_type: ContentType, auth: FramedContentAuthData, what: str) -> None:
    """A confirmation tag is present exactly for commits (§6.1)."""
    if (auth.confirmation_tag is not None) != (content_type == ContentType.commit):
        raise UsageError(f"{what}: confirmation_tag must be present exactly for commits")
