"""Every rejection path of the message decoders and constructors, each with its exact error.

The framing rules the validation catalogue lists (``docs/validation.md``) are also broken
inside a real handshake PublicMessage, which a member and its public view — the Delivery
Service's view of the group — must both refuse (``group_helpers.reject_edited_handshake``)."""

from __future__ import annotations

import pytest
from messages_samples import auth, capabilities, framed_content, key_package, leaf_node

from group_helpers import reject_edited_handshake
from mlspy.codec import Writer
from mlspy.errors import DecodeError, PaddingError, UsageError
from mlspy.messages import (
    Add,
    AuthenticatedContent,
    Capabilities,
    Commit,
    ContentType,
    Credential,
    CredentialType,
    CustomProposal,
    ExternalInit,
    ExternalPub,
    FramedContent,
    FramedContentAuthData,
    GroupSecrets,
    LeafNode,
    LeafNodeSource,
    MLSMessage,
    Node,
    NodeType,
    ParentNode,
    PathSecret,
    PreSharedKeyID,
    PrivateMessage,
    PrivateMessageContent,
    Proposal,
    ProposalOrRef,
    ProposalOrRefType,
    PSKType,
    PublicMessage,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Sender,
    SenderData,
    SenderType,
    WireFormat,
    decode_ratchet_tree,
    encode_ratchet_tree,
)


def _sender_type_offset(pm: PublicMessage) -> int:
    """Where a handshake's FramedContent ``sender_type`` sits: after the MLSMessage version
    and wire format (4 bytes), the group_id (1-byte header) and the epoch (8 bytes)."""
    return 4 + 1 + len(pm.content.group_id) + 8


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _decode_error(call: object, *args: object) -> DecodeError:
    assert callable(call)
    with pytest.raises(DecodeError) as info:
        call(*args)
    assert type(info.value) is DecodeError
    return info.value


# --- Unknown variant selectors -------------------------------------------------------------


def _private_message() -> PrivateMessage:
    return PrivateMessage(b"g", 1, ContentType.application, b"", b"sd", b"ct")


@pytest.mark.parametrize("wire_format", [0, 6, 0xF000])
def test_unknown_wire_format(wire_format: int) -> None:
    data = MLSMessage.wrap(_private_message()).encode()
    err = _decode_error(MLSMessage.decode, _patch(data, 2, wire_format.to_bytes(2, "big")))
    assert err.offset == 2
    assert "wire_format" in str(err)
    reject_edited_handshake(
        lambda m, _: _patch(m, 2, wire_format.to_bytes(2, "big")), match="wire_format"
    )


@pytest.mark.parametrize("content_type", [0, 4, 255])
def test_unknown_content_type_in_private_message(content_type: int) -> None:
    data = _private_message().encode()  # group_id (2 bytes), epoch (8), content_type
    err = _decode_error(PrivateMessage.decode, _patch(data, 10, bytes([content_type])))
    assert err.offset == 10
    assert "content_type" in str(err)


@pytest.mark.parametrize("content_type", [0, 4])
def test_unknown_content_type_in_framed_content(content_type: int) -> None:
    data = framed_content().encode()  # group_id 6, epoch 8, sender 5, aad 4
    err = _decode_error(FramedContent.decode, _patch(data, 23, bytes([content_type])))
    assert err.offset == 23
    assert "content_type" in str(err)

    def edit(message: bytes, pm: PublicMessage) -> bytes:
        # A member sender (1 + 4 bytes) and empty authenticated_data (1 byte) come first.
        at = _sender_type_offset(pm) + 5 + 1
        assert message[at] == ContentType.proposal
        return _patch(message, at, bytes([content_type]))

    reject_edited_handshake(edit, match="content_type")


@pytest.mark.parametrize("sender_type", [0, 5, 255])
def test_unknown_sender_type(sender_type: int) -> None:
    data = framed_content().encode()
    err = _decode_error(FramedContent.decode, _patch(data, 14, bytes([sender_type])))
    assert err.offset == 14
    assert "sender_type" in str(err)

    def edit(message: bytes, pm: PublicMessage) -> bytes:
        at = _sender_type_offset(pm)
        assert message[at] == SenderType.member
        return _patch(message, at, bytes([sender_type]))

    reject_edited_handshake(edit, match="sender_type")


def _tree() -> tuple[bytes, int]:
    nodes = (Node.leaf(leaf_node()), None, Node.leaf(leaf_node()))
    data = encode_ratchet_tree(nodes)
    body = sum(1 + len(n.encode()) if n else 1 for n in nodes)
    return data, len(data) - body


@pytest.mark.parametrize("node_type", [0, 3])
def test_unknown_node_type(node_type: int) -> None:
    data, header = _tree()
    err = _decode_error(decode_ratchet_tree, _patch(data, header + 1, bytes([node_type])))
    assert err.offset == header + 1
    assert "node_type" in str(err)


@pytest.mark.parametrize("source", [0, 4])
def test_unknown_leaf_node_source(source: int) -> None:
    leaf = leaf_node()
    offset = 33 + 33 + len(leaf.credential.encode()) + len(leaf.capabilities.encode())
    data = leaf.encode()
    err = _decode_error(LeafNode.decode, _patch(data, offset, bytes([source])))
    assert err.offset == offset
    assert "leaf_node_source" in str(err)


@pytest.mark.parametrize("kind", [0, 3])
def test_unknown_proposal_or_ref_type(kind: int) -> None:
    data = Commit((ProposalOrRef.by_reference(b"r"),), None).encode()
    err = _decode_error(Commit.decode, _patch(data, 1, bytes([kind])))
    assert err.offset == 1
    assert "ProposalOrRef.type" in str(err)


@pytest.mark.parametrize("psktype", [0, 3])
def test_unknown_psktype(psktype: int) -> None:
    data = PreSharedKeyID.external(b"id", b"nonce").encode()
    err = _decode_error(PreSharedKeyID.decode, _patch(data, 0, bytes([psktype])))
    assert err.offset == 0
    assert "psktype" in str(err)


@pytest.mark.parametrize("usage", [0, 4])
def test_unknown_resumption_psk_usage(usage: int) -> None:
    psk = PreSharedKeyID.resumption(ResumptionPSKUsage.branch, b"g", 3, b"nonce")
    err = _decode_error(PreSharedKeyID.decode, _patch(psk.encode(), 1, bytes([usage])))
    assert err.offset == 1


# --- Optional presence octets -------------------------------------------------------------


@pytest.mark.parametrize("octet", [2, 0xFF])
def test_bad_optional_octet_in_commit_path(octet: int) -> None:
    data = Commit((), None).encode()
    assert data == b"\x00\x00"
    err = _decode_error(Commit.decode, _patch(data, 1, bytes([octet])))
    assert err.offset == 1
    assert "optional" in str(err)


def test_bad_optional_octet_in_ratchet_tree() -> None:
    data, header = _tree()
    err = _decode_error(decode_ratchet_tree, _patch(data, header, b"\x02"))
    assert err.offset == header


def test_bad_optional_octet_in_group_secrets() -> None:
    data = GroupSecrets(b"js", PathSecret(b"ps"), ()).encode()
    err = _decode_error(GroupSecrets.decode, _patch(data, 3, b"\x02"))
    assert err.offset == 3


# --- Vectors and lengths -------------------------------------------------------------------


def test_odd_length_uint16_vector() -> None:
    data = b"\x01\x00" + b"\x00" * 4
    err = _decode_error(Capabilities.decode, data)
    assert err.offset == 1


def test_uint32_vector_with_partial_item() -> None:
    data = ParentNode(b"k", b"h", ()).encode()[:-1] + b"\x03\x00\x00\x01"
    _decode_error(ParentNode.decode, data)


def test_required_capabilities_partial_item() -> None:
    _decode_error(RequiredCapabilities.decode, b"\x03\x00\x01\x00\x00\x00")


def test_non_minimal_vector_header() -> None:
    err = _decode_error(ExternalInit.decode, b"\x40\x01\x00")
    assert err.offset == 0


def test_vector_header_prefix_0b11() -> None:
    _decode_error(ExternalInit.decode, b"\xc0\x00\x00\x00")


def test_vector_longer_than_input() -> None:
    _decode_error(ExternalInit.decode, b"\x05abc")


def test_trailing_bytes() -> None:
    err = _decode_error(Remove.decode, b"\x00\x00\x00\x01\x00")
    assert err.offset == 4


def test_extension_payload_malformed_is_decode_error() -> None:
    ext = ExternalPub(b"key").to_extension()
    bad = type(ext)(ext.extension_type, ext.extension_data + b"\x00")
    _decode_error(ExternalPub.from_extension, bad)


def test_custom_proposal_decode_with_known_type() -> None:
    err = _decode_error(CustomProposal.decode, b"\x00\x01\x00")
    assert err.offset == 0


def test_auth_data_needs_confirmation_tag_for_commit() -> None:
    data = FramedContentAuthData(b"sig").encode()
    _decode_error(FramedContentAuthData.decode, data, ContentType.commit)
    _decode_error(FramedContentAuthData.decode, data + b"\x00", ContentType.proposal)

    def drop_the_tag(message: bytes, pm: PublicMessage) -> bytes:
        """A commit without its confirmation tag (which sits before the membership tag)."""
        tag, membership_tag = pm.auth.confirmation_tag, pm.membership_tag
        assert tag is not None and membership_tag is not None
        tail = _opaque(tag) + _opaque(membership_tag)
        assert message.endswith(tail)
        return message[: -len(tail)] + _opaque(membership_tag)

    reject_edited_handshake(drop_the_tag, match="truncated", commit=True)


def _opaque(data: bytes) -> bytes:
    w = Writer()
    w.opaque(data)
    return w.getvalue()


def test_public_message_member_needs_membership_tag() -> None:
    content = framed_content()
    data = PublicMessage(content, auth(ContentType.application), b"tag").encode()
    _decode_error(PublicMessage.decode, data[:-4])


# --- Padding ------------------------------------------------------------------------------


def _content(padding_length: int) -> PrivateMessageContent:
    return PrivateMessageContent(
        ContentType.application, b"hi", None, None, auth(ContentType.application), padding_length
    )


def test_zero_padding_is_stripped() -> None:
    data = _content(7).encode()
    assert data.endswith(bytes(7))
    decoded = PrivateMessageContent.decode(data, ContentType.application)
    assert decoded == _content(7)
    assert decoded.padding_length == 7


@pytest.mark.parametrize("position", [-1, -7])
def test_nonzero_padding_is_padding_error(position: int) -> None:
    data = bytearray(_content(7).encode())
    data[position] = 1
    with pytest.raises(PaddingError) as info:
        PrivateMessageContent.decode(bytes(data), ContentType.application)
    assert type(info.value) is PaddingError
    assert f"offset {len(data) + position}" in str(info.value)


def test_private_message_content_truncated_is_decode_error() -> None:
    data = PrivateMessageContent(
        ContentType.commit,
        None,
        None,
        framed_content(ContentType.commit).commit,
        auth(ContentType.commit),
    ).encode()
    _decode_error(PrivateMessageContent.decode, data[:-1], ContentType.commit)


# --- Constructors refuse inconsistent selects -------------------------------------------


def _usage_error(call: object, *args: object, **kwargs: object) -> None:
    assert callable(call)
    with pytest.raises(UsageError):
        call(*args, **kwargs)


def test_inconsistent_sender() -> None:
    _usage_error(Sender, SenderType.member)
    _usage_error(Sender, SenderType.member, 1, 2)
    _usage_error(Sender, SenderType.external, 1)
    _usage_error(Sender, SenderType.new_member_commit, 1)
    _usage_error(Sender, 9, 1)


def test_inconsistent_node() -> None:
    _usage_error(Node, NodeType.leaf)
    _usage_error(Node, NodeType.parent, leaf_node())
    _usage_error(Node, 3, leaf_node())


def test_inconsistent_leaf_node() -> None:
    leaf = leaf_node()
    kwargs = {
        "encryption_key": leaf.encryption_key,
        "signature_key": leaf.signature_key,
        "credential": leaf.credential,
        "capabilities": leaf.capabilities,
        "extensions": (),
        "signature": b"",
    }
    _usage_error(
        LeafNode,
        leaf_node_source=LeafNodeSource.key_package,
        lifetime=None,
        parent_hash=None,
        **kwargs,
    )
    _usage_error(
        LeafNode, leaf_node_source=LeafNodeSource.commit, lifetime=None, parent_hash=None, **kwargs
    )
    _usage_error(
        LeafNode,
        leaf_node_source=LeafNodeSource.update,
        lifetime=leaf.lifetime,
        parent_hash=None,
        **kwargs,
    )


def test_inconsistent_credential() -> None:
    _usage_error(Credential, CredentialType.basic)
    _usage_error(Credential, CredentialType.basic, b"id", data=b"x")
    _usage_error(Credential, CredentialType.x509, identity=b"id")
    _usage_error(Credential, 0xF000, identity=b"id")
    _usage_error(Credential.custom, CredentialType.basic, b"x")


def test_inconsistent_content() -> None:
    sender = Sender.member(0)
    _usage_error(FramedContent, b"g", 0, sender, b"", ContentType.application)
    _usage_error(FramedContent, b"g", 0, sender, b"", ContentType.commit, application_data=b"x")
    _usage_error(FramedContent, b"g", 0, sender, b"", 9, application_data=b"x")


def test_confirmation_tag_only_for_commits() -> None:
    fc = framed_content(ContentType.commit)
    _usage_error(
        AuthenticatedContent, WireFormat.mls_public_message, fc, FramedContentAuthData(b"s")
    )
    app = framed_content()
    _usage_error(
        AuthenticatedContent, WireFormat.mls_public_message, app, FramedContentAuthData(b"s", b"t")
    )


def test_membership_tag_only_for_members() -> None:
    app = framed_content()
    _usage_error(PublicMessage, app, auth(ContentType.application))
    ext = framed_content(ContentType.proposal, Sender.external(0))
    _usage_error(PublicMessage, ext, auth(ContentType.proposal), b"tag")


def test_inconsistent_psk_id() -> None:
    _usage_error(PreSharedKeyID, PSKType.external, None, None, None, None, b"n")
    _usage_error(PreSharedKeyID, PSKType.resumption, b"id", None, None, None, b"n")
    _usage_error(
        PreSharedKeyID, PSKType.resumption, None, ResumptionPSKUsage.reinit, b"g", None, b"n"
    )


def test_inconsistent_proposal_or_ref() -> None:
    _usage_error(ProposalOrRef, ProposalOrRefType.proposal)
    _usage_error(ProposalOrRef, ProposalOrRefType.reference, Proposal(Remove(1)))
    _usage_error(ProposalOrRef, 3, reference=b"r")


def test_inconsistent_mls_message() -> None:
    kp = key_package()
    _usage_error(MLSMessage, 1, WireFormat.mls_welcome, key_package=kp)
    _usage_error(MLSMessage, 1, WireFormat.mls_key_package)
    _usage_error(MLSMessage.wrap, Add(kp))


def test_custom_proposal_with_rfc_type() -> None:
    for proposal_type in range(1, 8):
        _usage_error(CustomProposal, proposal_type, b"")


def test_sender_data_reuse_guard_length() -> None:
    _usage_error(SenderData, 0, 0, b"abc")


def test_out_of_range_integers_are_usage_errors() -> None:
    _usage_error(Remove(2**32).encode)
    caps = capabilities()
    _usage_error(Capabilities(caps.versions, (70000,), (), (), ()).encode)
    _usage_error(ParentNode(b"", b"", (-1,)).encode)


def test_payload_type_mismatch() -> None:
    _usage_error(ExternalPub.from_extension, RequiredCapabilities((), (), ()).to_extension())


def test_tbs_of_update_leaf_needs_group_and_index() -> None:
    leaf = leaf_node(LeafNodeSource.update)
    _usage_error(leaf.tbs)
    _usage_error(leaf.tbs, b"group")
