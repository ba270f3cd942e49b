"""Message structs found in the other official vector files decode and re-encode byte for
byte; where a vector pins down an encoding we produce (membership-tag input, transcript-hash
inputs, GroupContext), it is checked with the standard library's HMAC and hashes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from mlspy.messages import (
    AuthenticatedContent,
    Commit,
    ContentType,
    GroupContext,
    MLSMessage,
    Proposal,
    ProposalType,
    ProtocolVersion,
    UpdatePath,
    WireFormat,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from vectors_dir import vector_params

# Hash function of each RFC 9420 cipher suite (§17.1).
HASHES = {1: "sha256", 2: "sha256", 3: "sha256", 4: "sha512", 5: "sha512", 6: "sha512", 7: "sha384"}


def _mls_message(hex_data: str, wire_format: WireFormat) -> MLSMessage:
    data = bytes.fromhex(hex_data)
    message = MLSMessage.decode(data)
    assert message.wire_format is wire_format
    assert message.encode() == data
    return message


def _tree(hex_data: str) -> None:
    data = bytes.fromhex(hex_data)
    nodes = decode_ratchet_tree(data)
    assert nodes[-1] is not None
    assert encode_ratchet_tree(nodes) == data


def _round_trip(cls: Any, hex_data: str) -> Any:
    data = bytes.fromhex(hex_data)
    value = cls.decode(data)
    assert value.encode() == data
    return value


@pytest.mark.parametrize("entry", vector_params("message-protection.json"))
def test_message_protection(entry: dict[str, Any]) -> None:
    proposal = _round_trip(Proposal, entry["proposal"])
    assert proposal.proposal_type in set(ProposalType)
    _round_trip(Commit, entry["commit"])
    context = GroupContext(
        ProtocolVersion.mls10,
        entry["cipher_suite"],
        bytes.fromhex(entry["group_id"]),
        entry["epoch"],
        bytes.fromhex(entry["tree_hash"]),
        bytes.fromhex(entry["confirmed_transcript_hash"]),
        (),
    )
    membership_key = bytes.fromhex(entry["membership_key"])
    for field in ("proposal_pub", "commit_pub"):
        pm = _mls_message(entry[field], WireFormat.mls_public_message).public_message
        assert pm is not None and pm.membership_tag is not None
        tbm = pm.tbm(context)
        assert tbm == pm.authenticated_content().tbm(context)
        tag = hmac.new(membership_key, tbm, HASHES[entry["cipher_suite"]]).digest()
        assert tag == pm.membership_tag, field
    for field in ("proposal_priv", "commit_priv", "application_priv"):
        _mls_message(entry[field], WireFormat.mls_private_message)


@pytest.mark.parametrize("entry", vector_params("transcript-hashes.json"))
def test_transcript_hashes(entry: dict[str, Any]) -> None:
    content = _round_trip(AuthenticatedContent, entry["authenticated_content"])
    assert isinstance(content, AuthenticatedContent)
    assert content.content.content_type is ContentType.commit
    hash_name = HASHES[entry["cipher_suite"]]
    interim_before = bytes.fromhex(entry["interim_transcript_hash_before"])
    confirmed = hashlib.new(
        hash_name, interim_before + content.confirmed_transcript_hash_input()
    ).digest()
    assert confirmed.hex() == entry["confirmed_transcript_hash_after"]
    interim = hashlib.new(hash_name, confirmed + content.interim_transcript_hash_input()).digest()
    assert interim.hex() == entry["interim_transcript_hash_after"]
    key = bytes.fromhex(entry["confirmation_key"])
    assert hmac.new(key, confirmed, hash_name).digest() == content.auth.confirmation_tag


@pytest.mark.parametrize("entry", vector_params("key-schedule.json"))
def test_key_schedule_group_contexts(entry: dict[str, Any]) -> None:
    for epoch, e in enumerate(entry["epochs"]):
        context = GroupContext(
            ProtocolVersion.mls10,
            entry["cipher_suite"],
            bytes.fromhex(entry["group_id"]),
            epoch,
            bytes.fromhex(e["tree_hash"]),
            bytes.fromhex(e["confirmed_transcript_hash"]),
            (),
        )
        assert context.encode().hex() == e["group_context"]
        assert _round_trip(GroupContext, e["group_context"]) == context


@pytest.mark.parametrize("entry", vector_params("welcome.json"))
def test_welcome(entry: dict[str, Any]) -> None:
    _mls_message(entry["key_package"], WireFormat.mls_key_package)
    _mls_message(entry["welcome"], WireFormat.mls_welcome)


@pytest.mark.parametrize("entry", vector_params("tree-operations.json"))
def test_tree_operations(entry: dict[str, Any]) -> None:
    _tree(entry["tree_before"])
    _tree(entry["tree_after"])
    proposal = _round_trip(Proposal, entry["proposal"])
    assert proposal.proposal_type in (ProposalType.add, ProposalType.remove, ProposalType.update)


@pytest.mark.parametrize("entry", vector_params("tree-validation.json"))
def test_tree_validation_trees(entry: dict[str, Any]) -> None:
    _tree(entry["tree"])


@pytest.mark.parametrize("entry", vector_params("treekem.json"))
def test_treekem(entry: dict[str, Any]) -> None:
    _tree(entry["ratchet_tree"])
    for update in entry["update_paths"]:
        _round_trip(UpdatePath, update["update_path"])


def _passive_client(entry: dict[str, Any]) -> None:
    _mls_message(entry["key_package"], WireFormat.mls_key_package)
    _mls_message(entry["welcome"], WireFormat.mls_welcome)
    if entry["ratchet_tree"] is not None:
        _tree(entry["ratchet_tree"])
    handshake = (WireFormat.mls_public_message, WireFormat.mls_private_message)
    for epoch in entry["epochs"]:
        for hex_data in [*epoch["proposals"], epoch["commit"]]:
            message = MLSMessage.decode(bytes.fromhex(hex_data))
            assert message.wire_format in handshake
            assert message.encode().hex() == hex_data


@pytest.mark.parametrize("entry", vector_params("passive-client-welcome.json"))
def test_passive_client_welcome(entry: dict[str, Any]) -> None:
    _passive_client(entry)


@pytest.mark.parametrize("entry", vector_params("passive-client-handling-commit.json"))
def test_passive_client_handling_commit(entry: dict[str, Any]) -> None:
    _passive_client(entry)


@pytest.mark.parametrize("entry", vector_params("passive-client-random.json"))
def test_passive_client_random(entry: dict[str, Any]) -> None:
    _passive_client(entry)
