"""Small, fully populated sample structs for the message unit tests.

GREASE and private-use code points are sprinkled in where RFC 9420 §13.5 allows them, so the
samples also exercise the "unknown values survive a round trip" rule.
"""

from __future__ import annotations

from mlspy.messages import (
    Add,
    Capabilities,
    Commit,
    ContentType,
    Credential,
    Extension,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    HPKECiphertext,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    Proposal,
    ProposalOrRef,
    ProtocolVersion,
    Sender,
    UpdatePath,
    UpdatePathNode,
)

GREASE_EXTENSION = Extension(0x0A0A, b"grease me")


def capabilities() -> Capabilities:
    return Capabilities(
        versions=(ProtocolVersion.mls10,),
        cipher_suites=(1, 0x1A1A, 0xF00D),
        extensions=(0x0A0A, 2, 0xFFFF),
        proposals=(0x2A2A, 0xF000),
        credentials=(1, 2, 0x3A3A),
    )


def leaf_node(source: LeafNodeSource = LeafNodeSource.key_package) -> LeafNode:
    return LeafNode(
        encryption_key=b"\x01" * 32,
        signature_key=b"\x02" * 32,
        credential=Credential.basic(b"alice"),
        capabilities=capabilities(),
        leaf_node_source=source,
        lifetime=Lifetime(1, 2**64 - 1) if source == LeafNodeSource.key_package else None,
        parent_hash=b"\x03" * 32 if source == LeafNodeSource.commit else None,
        extensions=(GREASE_EXTENSION,),
        signature=b"\x04" * 64,
    )


def key_package() -> KeyPackage:
    return KeyPackage(
        version=ProtocolVersion.mls10,
        cipher_suite=1,
        init_key=b"\x05" * 32,
        leaf_node=leaf_node(),
        extensions=(GREASE_EXTENSION,),
        signature=b"\x06" * 64,
    )


def group_context() -> GroupContext:
    return GroupContext(
        version=ProtocolVersion.mls10,
        cipher_suite=1,
        group_id=b"group",
        epoch=7,
        tree_hash=b"\x07" * 32,
        confirmed_transcript_hash=b"\x08" * 32,
        extensions=(),
    )


def commit() -> Commit:
    path = UpdatePath(
        leaf_node(LeafNodeSource.commit),
        (UpdatePathNode(b"\x09" * 32, (HPKECiphertext(b"kem", b"ct"),)),),
    )
    return Commit(
        (ProposalOrRef.by_value(Proposal(Add(key_package()))), ProposalOrRef.by_reference(b"r")),
        path,
    )


def framed_content(
    content_type: ContentType = ContentType.application, sender: Sender | None = None
) -> FramedContent:
    sender = Sender.member(3) if sender is None else sender
    if content_type == ContentType.application:
        return FramedContent(b"group", 7, sender, b"aad", content_type, application_data=b"hi")
    if content_type == ContentType.proposal:
        proposal = Proposal(Add(key_package()))
        return FramedContent(b"group", 7, sender, b"aad", content_type, proposal=proposal)
    return FramedContent(b"group", 7, sender, b"aad", content_type, commit=commit())


def auth(content_type: ContentType) -> FramedContentAuthData:
    tag = b"\x0a" * 32 if content_type == ContentType.commit else None
    return FramedContentAuthData(b"\x0b" * 64, tag)
