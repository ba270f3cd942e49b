"""Vector kinds ``transcript-hashes`` and ``message-protection``."""

from __future__ import annotations

from mlspy.crypto import CipherSuiteProvider, suite
from mlspy.errors import UsageError
from mlspy.messages import (
    AuthenticatedContent,
    Commit,
    ContentType,
    FramedContent,
    GroupContext,
    MLSMessage,
    Proposal,
    Sender,
    WireFormat,
)
from mlspy.protection import (
    authenticate,
    protect_private_message,
    protect_public_message,
    unprotect_private_message,
    unprotect_public_message,
)
from mlspy.schedule.secret_tree import SecretTree
from mlspy.schedule.transcript import (
    confirmed_transcript_hash,
    interim_transcript_hash,
    verify_confirmation_tag,
)
from mlspy.tree.math import LeafIndex
from mlspy.vectors.check import CheckFailed, Entry, expect, expect_eq, h


def check_transcript_hashes(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    ac = AuthenticatedContent.decode(h(e["authenticated_content"]))
    expect("content is a commit", ac.content.content_type == ContentType.commit)
    tag = ac.auth.confirmation_tag or b""
    confirmed_after = h(e["confirmed_transcript_hash_after"])
    expect(
        "confirmation_tag",
        verify_confirmation_tag(cs, h(e["confirmation_key"]), confirmed_after, tag),
    )
    confirmed = confirmed_transcript_hash(
        cs, h(e["interim_transcript_hash_before"]), ac.confirmed_transcript_hash_input()
    )
    expect_eq("confirmed_transcript_hash_after", confirmed, confirmed_after)
    interim = interim_transcript_hash(cs, confirmed, tag)
    expect_eq("interim_transcript_hash_after", interim, h(e["interim_transcript_hash_after"]))


class _Protection:
    """The fixed inputs of one message-protection entry."""

    def __init__(self, e: Entry) -> None:
        self.e = e
        self.cs: CipherSuiteProvider = suite(e["cipher_suite"])
        self.context = GroupContext(
            version=1,
            cipher_suite=e["cipher_suite"],
            group_id=h(e["group_id"]),
            epoch=e["epoch"],
            tree_hash=h(e["tree_hash"]),
            confirmed_transcript_hash=h(e["confirmed_transcript_hash"]),
            extensions=(),
        )
        self.sig_priv = h(e["signature_priv"])
        self.sig_pub = h(e["signature_pub"])
        self.membership_key = h(e["membership_key"])
        self.sender_data_secret = h(e["sender_data_secret"])

    def tree(self) -> SecretTree:
        return SecretTree(self.cs, h(self.e["encryption_secret"]), 2)

    def signature_key_of(self, leaf: LeafIndex) -> bytes:
        expect("sender is leaf 1", leaf == 1)
        return self.sig_pub

    def framed(self, content_type: ContentType, **body: object) -> FramedContent:
        return FramedContent(
            self.context.group_id,
            self.context.epoch,
            Sender.member(1),
            b"",
            content_type,
            **body,  # type: ignore[arg-type]
        )

    def public_roundtrip(self, name: str, fc: FramedContent, tag: bytes | None) -> None:
        ac = authenticate(
            self.cs, self.sig_priv, WireFormat.mls_public_message, fc, self.context, tag
        )
        msg = protect_public_message(self.cs, ac, self.context, self.membership_key)
        wire = MLSMessage.wrap(msg).encode()
        received = MLSMessage.decode(wire).public_message
        expect(f"{name}: own PublicMessage decodes", received is not None)
        assert received is not None
        got = unprotect_public_message(
            self.cs, received, self.context, self.membership_key, self.sig_pub
        )
        expect_eq(f"{name}: own PublicMessage content", got.content, fc)

    def private_roundtrip(self, name: str, fc: FramedContent, tag: bytes | None) -> None:
        ac = authenticate(
            self.cs, self.sig_priv, WireFormat.mls_private_message, fc, self.context, tag
        )
        msg = protect_private_message(self.cs, ac, self.tree(), self.sender_data_secret)
        wire = MLSMessage.wrap(msg).encode()
        received = MLSMessage.decode(wire).private_message
        expect(f"{name}: own PrivateMessage decodes", received is not None)
        assert received is not None
        got = unprotect_private_message(
            self.cs,
            received,
            self.tree(),
            self.sender_data_secret,
            self.context,
            self.signature_key_of,
        )
        expect_eq(f"{name}: own PrivateMessage content", got.content, fc)

    def unprotect_given_public(self, name: str) -> AuthenticatedContent:
        msg = MLSMessage.decode(h(self.e[f"{name}_pub"])).public_message
        expect(f"{name}_pub is a PublicMessage", msg is not None)
        assert msg is not None
        return unprotect_public_message(
            self.cs, msg, self.context, self.membership_key, self.sig_pub
        )

    def unprotect_given_private(self, name: str) -> AuthenticatedContent:
        msg = MLSMessage.decode(h(self.e[f"{name}_priv"])).private_message
        expect(f"{name}_priv is a PrivateMessage", msg is not None)
        assert msg is not None
        return unprotect_private_message(
            self.cs, msg, self.tree(), self.sender_data_secret, self.context, self.signature_key_of
        )


def check_message_protection(e: Entry) -> None:
    p = _Protection(e)

    proposal = Proposal.decode(h(e["proposal"]))
    got = p.unprotect_given_public("proposal")
    expect_eq("proposal_pub: proposal", got.content.proposal, proposal)
    got = p.unprotect_given_private("proposal")
    expect_eq("proposal_priv: proposal", got.content.proposal, proposal)
    fc = p.framed(ContentType.proposal, proposal=proposal)
    p.public_roundtrip("proposal", fc, None)
    p.private_roundtrip("proposal", fc, None)

    commit = Commit.decode(h(e["commit"]))
    got = p.unprotect_given_public("commit")
    expect_eq("commit_pub: commit", got.content.commit, commit)
    tag = got.auth.confirmation_tag
    got = p.unprotect_given_private("commit")
    expect_eq("commit_priv: commit", got.content.commit, commit)
    fc = p.framed(ContentType.commit, commit=commit)
    p.public_roundtrip("commit", fc, tag)
    p.private_roundtrip("commit", fc, tag)

    application = h(e["application"])
    got = p.unprotect_given_private("application")
    expect_eq("application_priv: application_data", got.content.application_data, application)
    fc = p.framed(ContentType.application, application_data=application)
    try:
        p.public_roundtrip("application", fc, None)
    except UsageError:
        pass
    else:
        raise CheckFailed("application: protecting as a PublicMessage must fail")
    p.private_roundtrip("application", fc, None)
