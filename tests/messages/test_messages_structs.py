"""The message API: constructors, round trips, tagged unions and the TBS/TBM/AAD encoders."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from messages_samples import (
    GREASE_EXTENSION,
    auth,
    capabilities,
    commit,
    framed_content,
    group_context,
    key_package,
    leaf_node,
)

from mlspy.codec import Writer
from mlspy.errors import UsageError
from mlspy.messages import (
    Add,
    ApplicationId,
    AuthenticatedContent,
    Certificate,
    ContentType,
    Credential,
    CredentialType,
    CustomProposal,
    EncryptedGroupSecrets,
    Extension,
    ExtensionType,
    ExternalInit,
    ExternalPub,
    ExternalSender,
    ExternalSenders,
    GroupContextExtensions,
    GroupInfo,
    GroupSecrets,
    HPKECiphertext,
    LastResort,
    LeafNodeSource,
    MLSMessage,
    Node,
    ParentNode,
    PathSecret,
    PreSharedKey,
    PreSharedKeyID,
    PrivateMessage,
    PrivateMessageContent,
    Proposal,
    ProposalOrRef,
    ProposalType,
    PublicMessage,
    RatchetTree,
    ReInit,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Sender,
    SenderData,
    Update,
    Welcome,
    WireFormat,
    authenticated_content_tbm,
    confirmed_transcript_hash_input,
    decode_ratchet_tree,
    encode_ratchet_tree,
    find_extension,
    framed_content_tbs,
    interim_transcript_hash_input,
    leaf_tree_hash_input,
    parent_hash_input,
    parent_tree_hash_input,
    private_content_aad,
    psk_label,
    sender_data_aad,
)


def _opaque(data: bytes) -> bytes:
    w = Writer()
    w.opaque(data)
    return w.getvalue()


def _group_info() -> GroupInfo:
    tree = RatchetTree((Node.leaf(leaf_node()),)).to_extension()
    return GroupInfo(group_context(), (tree, GREASE_EXTENSION), b"tag", 0, b"sig")


def _welcome() -> Welcome:
    secrets = EncryptedGroupSecrets(b"kp-ref", HPKECiphertext(b"kem", b"ct"))
    return Welcome(0xF0F0, (secrets,), b"encrypted group info")


SAMPLES: dict[str, Any] = {
    "leaf-key-package": leaf_node(LeafNodeSource.key_package),
    "leaf-update": leaf_node(LeafNodeSource.update),
    "leaf-commit": leaf_node(LeafNodeSource.commit),
    "x509": Credential.x509((Certificate(b"a"), Certificate(b"bc"))),
    "custom-credential": Credential.custom(0x0A0A, b"grease"),
    "key-package": key_package(),
    "commit": commit(),
    "group-info": _group_info(),
    "welcome": _welcome(),
    "group-secrets": GroupSecrets(
        b"joiner",
        PathSecret(b"path"),
        (
            PreSharedKeyID.external(b"id", b"nonce"),
            PreSharedKeyID.resumption(ResumptionPSKUsage.reinit, b"g", 2**64 - 1, b"n"),
        ),
    ),
    "group-secrets-no-path": GroupSecrets(b"joiner", None, ()),
    "sender-data": SenderData(1, 2, b"\x01\x02\x03\x04"),
    "private-message": PrivateMessage(b"g", 1, ContentType.commit, b"", b"sd", b"ct"),
    "public-member": PublicMessage(framed_content(), auth(ContentType.application), b"mac"),
    "public-external": PublicMessage(
        framed_content(ContentType.proposal, Sender.external(4)), auth(ContentType.proposal)
    ),
    "public-new-member-commit": PublicMessage(
        framed_content(ContentType.commit, Sender.new_member_commit()), auth(ContentType.commit)
    ),
    "public-new-member-proposal": PublicMessage(
        framed_content(ContentType.proposal, Sender.new_member_proposal()),
        auth(ContentType.proposal),
    ),
    "authenticated-content": AuthenticatedContent(
        WireFormat.mls_private_message,
        framed_content(ContentType.commit),
        auth(ContentType.commit),
    ),
    "parent-node": ParentNode(b"key", b"hash", (1, 2, 2**32 - 1)),
    "required-capabilities": RequiredCapabilities(
        (ExtensionType.external_senders,), (0xF000,), (1,)
    ),
    "external-senders": ExternalSenders((ExternalSender(b"key", Credential.basic(b"ds")),)),
    "application-id": ApplicationId(b"app"),
    "external-pub": ExternalPub(b"pub"),
    "last-resort": LastResort(),
    "re-init": ReInit(b"new", 0x0A0A, 0xFAFA, (GREASE_EXTENSION,)),
    "custom-proposal": Proposal(CustomProposal(0xF001, b"payload")),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_round_trip(name: str) -> None:
    value = SAMPLES[name]
    data = value.encode()
    decoded = type(value).decode(data)
    assert decoded == value
    assert decoded.encode() == data
    assert hash(decoded) == hash(value)


@pytest.mark.parametrize("name", SAMPLES)
def test_frozen_and_slotted(name: str) -> None:
    value = SAMPLES[name]
    assert not hasattr(value, "__dict__")
    fields = dataclasses.fields(value)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, fields[0].name, None)


@pytest.mark.parametrize(
    "message",
    [
        SAMPLES["public-member"],
        SAMPLES["private-message"],
        _welcome(),
        _group_info(),
        key_package(),
    ],
)
def test_mls_message_wrap(message: Any) -> None:
    wrapped = MLSMessage.wrap(message)
    assert wrapped.body == message
    assert wrapped.version == 1
    data = wrapped.encode()
    assert data[:4] == b"\x00\x01" + wrapped.wire_format.to_bytes(2, "big")
    assert data[4:] == message.encode()
    assert MLSMessage.decode(data) == wrapped


def test_mls_message_keeps_unknown_version() -> None:
    data = b"\x00\x07" + MLSMessage.wrap(key_package()).encode()[2:]
    message = MLSMessage.decode(data)
    assert message.version == 7
    assert message.encode() == data


# --- Proposals ----------------------------------------------------------------------------


def test_add_proposal_api() -> None:
    kp = key_package()
    proposal = Proposal(Add(kp))
    assert proposal.proposal_type == ProposalType.add
    data = proposal.encode()
    assert data == b"\x00\x01" + kp.encode()
    decoded = Proposal.decode(data)
    assert decoded == proposal
    assert isinstance(decoded.body, Add) and decoded.body.key_package == kp


@pytest.mark.parametrize(
    "body",
    [
        Add(key_package()),
        Update(leaf_node(LeafNodeSource.update)),
        Remove(5),
        PreSharedKey(PreSharedKeyID.external(b"id", b"nonce")),
        ReInit(b"g", 1, 3, ()),
        ExternalInit(b"kem"),
        GroupContextExtensions((Extension(ExtensionType.external_senders, b"\x00"),)),
    ],
)
def test_proposal_bodies(body: Any) -> None:
    proposal = Proposal(body)
    data = proposal.encode()
    assert data[:2] == body.proposal_type.to_bytes(2, "big")
    assert data[2:] == body.encode()
    assert Proposal.decode(data).body == body
    assert type(body).decode(body.encode()) == body


@pytest.mark.parametrize("proposal_type", [0, 8, 0x0A0A, 0xF000, 0xFFFF])
def test_unknown_proposal_type_is_custom(proposal_type: int) -> None:
    data = proposal_type.to_bytes(2, "big") + _opaque(b"app data")
    proposal = Proposal.decode(data)
    assert proposal.body == CustomProposal(proposal_type, b"app data")
    assert proposal.proposal_type == proposal_type
    assert proposal.encode() == data
    assert proposal.body.encode() == data
    assert CustomProposal.decode(data) == proposal.body


def test_proposal_or_ref() -> None:
    by_value = ProposalOrRef.by_value(Proposal(Remove(1)))
    assert by_value.encode() == b"\x01\x00\x03\x00\x00\x00\x01"
    by_ref = ProposalOrRef.by_reference(b"ref")
    assert by_ref.encode() == b"\x02\x03ref"
    assert ProposalOrRef.decode(by_ref.encode()) == by_ref


# --- Credentials, capabilities and extensions ---------------------------------------------


def test_custom_credential_follows_mls_rs() -> None:
    data = b"\xf0\x00" + _opaque(b"opaque credential")
    credential = Credential.decode(data)
    assert credential == Credential.custom(0xF000, b"opaque credential")
    assert credential.encode() == data
    basic = Credential.decode(b"\x00\x01\x03bob")
    assert basic.credential_type is CredentialType.basic and basic.identity == b"bob"


def test_grease_values_survive() -> None:
    caps = capabilities()
    assert type(caps).decode(caps.encode()) == caps
    leaf = leaf_node()
    assert type(leaf).decode(leaf.encode()).extensions == (GREASE_EXTENSION,)


def test_extension_payload_helpers() -> None:
    senders = ExternalSenders((ExternalSender(b"key", Credential.basic(b"ds")),))
    extensions = (GREASE_EXTENSION, senders.to_extension())
    assert find_extension(extensions, ExtensionType.external_senders) == extensions[1]
    assert find_extension(extensions, ExtensionType.external_pub) is None
    assert ExternalSenders.find_in(extensions) == senders
    assert RequiredCapabilities.find_in(extensions) is None
    tree = (Node.leaf(leaf_node()), None, Node.leaf(leaf_node()))
    ext = RatchetTree(tree).to_extension()
    assert ext.extension_type == ExtensionType.ratchet_tree
    assert ext.extension_data == encode_ratchet_tree(tree)
    assert RatchetTree.from_extension(ext).ratchet_tree == tree
    assert LastResort().to_extension() == Extension(ExtensionType.last_resort, b"")


def test_ratchet_tree_blank_nodes() -> None:
    parent = Node.parent(ParentNode(b"k", b"", ()))
    tree = (Node.leaf(leaf_node()), parent, None, None, Node.leaf(leaf_node()))
    data = encode_ratchet_tree(tree)
    assert decode_ratchet_tree(data) == tree
    assert decode_ratchet_tree(b"\x00") == ()


# --- Signed, MACed and hashed encodings ----------------------------------------------------


def _without_signature(encoded: bytes, signature: bytes) -> bytes:
    suffix = _opaque(signature)
    assert encoded.endswith(suffix)
    return encoded[: -len(suffix)]


def test_leaf_node_tbs() -> None:
    kp_leaf = leaf_node(LeafNodeSource.key_package)
    content = _without_signature(kp_leaf.encode(), kp_leaf.signature)
    assert kp_leaf.tbs() == content
    assert kp_leaf.tbs(b"group", 3) == content  # not bound to a group
    for source in (LeafNodeSource.update, LeafNodeSource.commit):
        leaf = leaf_node(source)
        content = _without_signature(leaf.encode(), leaf.signature)
        assert leaf.tbs(b"group", 3) == content + _opaque(b"group") + b"\x00\x00\x00\x03"


def test_key_package_and_group_info_tbs() -> None:
    kp = key_package()
    assert kp.tbs() == _without_signature(kp.encode(), kp.signature)
    gi = _group_info()
    assert gi.tbs() == _without_signature(gi.encode(), gi.signature)


def test_framed_content_tbs() -> None:
    ctx = group_context()
    for sender in (Sender.member(1), Sender.new_member_commit()):
        content = framed_content(ContentType.commit, sender)
        expected = b"\x00\x01\x00\x01" + content.encode() + ctx.encode()
        assert framed_content_tbs(WireFormat.mls_public_message, content, ctx) == expected
        with pytest.raises(UsageError, match="context"):
            framed_content_tbs(WireFormat.mls_public_message, content, None)
    for sender in (Sender.external(0), Sender.new_member_proposal()):
        content = framed_content(ContentType.proposal, sender)
        expected = b"\x00\x01\x00\x02" + content.encode()
        assert framed_content_tbs(WireFormat.mls_private_message, content, ctx) == expected
        assert framed_content_tbs(WireFormat.mls_private_message, content, None) == expected


def test_tbm_and_transcript_inputs() -> None:
    ctx = group_context()
    content = framed_content(ContentType.commit)
    a = auth(ContentType.commit)
    ac = AuthenticatedContent(WireFormat.mls_public_message, content, a)
    tbs = framed_content_tbs(WireFormat.mls_public_message, content, ctx)
    assert ac.tbs(ctx) == tbs
    assert ac.tbm(ctx) == authenticated_content_tbm(tbs, a) == tbs + a.encode()
    pm = PublicMessage.from_authenticated_content(ac, b"mac")
    assert pm.tbm(ctx) == ac.tbm(ctx)
    assert pm.authenticated_content() == ac
    expected = b"\x00\x01" + content.encode() + _opaque(a.signature)
    assert ac.confirmed_transcript_hash_input() == expected
    assert confirmed_transcript_hash_input(ac.wire_format, content, a.signature) == expected
    assert a.confirmation_tag is not None
    assert ac.interim_transcript_hash_input() == _opaque(a.confirmation_tag)
    assert interim_transcript_hash_input(a.confirmation_tag) == _opaque(a.confirmation_tag)
    with pytest.raises(UsageError, match="commit"):
        confirmed_transcript_hash_input(ac.wire_format, framed_content(), b"s")


def test_private_message_aads() -> None:
    pm = PrivateMessage(b"g", 9, ContentType.proposal, b"aad", b"sd", b"ct")
    head = _opaque(b"g") + (9).to_bytes(8, "big") + b"\x02"
    assert pm.sender_data_aad() == sender_data_aad(b"g", 9, ContentType.proposal) == head
    expected = head + _opaque(b"aad")
    assert pm.content_aad() == expected
    assert private_content_aad(b"g", 9, ContentType.proposal, b"aad") == expected


@pytest.mark.parametrize("content_type", list(ContentType))
def test_private_message_content(content_type: ContentType) -> None:
    content = framed_content(content_type)
    ac = AuthenticatedContent(WireFormat.mls_private_message, content, auth(content_type))
    pmc = PrivateMessageContent.from_authenticated_content(ac, padding_length=3)
    data = pmc.encode()
    body_len = len(content.encode()) - len(framed_content_prefix(content))
    assert data == content.encode()[-body_len:] + ac.auth.encode() + bytes(3)
    assert PrivateMessageContent.decode(data, content_type) == pmc
    message = PrivateMessage(content.group_id, content.epoch, content_type, b"aad", b"", b"")
    sender_data = SenderData(3, 0, bytes(4))
    assert pmc.to_authenticated_content(message, sender_data) == ac


def framed_content_prefix(content: Any) -> bytes:
    w = Writer()
    w.opaque(content.group_id)
    w.uint64(content.epoch)
    content.sender.encode_to(w)
    w.opaque(content.authenticated_data)
    w.uint8(content.content_type)
    return w.getvalue()


def test_hash_inputs() -> None:
    leaf = leaf_node()
    assert leaf_tree_hash_input(5, leaf) == b"\x01\x00\x00\x00\x05\x01" + leaf.encode()
    assert leaf_tree_hash_input(5, None) == b"\x01\x00\x00\x00\x05\x00"
    parent = ParentNode(b"k", b"h", (1,))
    expected = b"\x02\x01" + parent.encode() + _opaque(b"L") + _opaque(b"R")
    assert parent_tree_hash_input(parent, b"L", b"R") == expected
    assert parent_tree_hash_input(None, b"L", b"R") == b"\x02\x00" + _opaque(b"L") + _opaque(b"R")
    assert parent_hash_input(b"k", b"p", b"s") == _opaque(b"k") + _opaque(b"p") + _opaque(b"s")
    psk = PreSharedKeyID.external(b"id", b"n")
    assert psk_label(psk, 1, 2) == psk.encode() + b"\x00\x01\x00\x02"
