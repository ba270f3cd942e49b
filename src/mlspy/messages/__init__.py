"""Every wire struct of RFC 9420 as a frozen, slotted dataclass with ``encode``/``decode``.

Conventions:

* Field names are the RFC's. Sequences are tuples; keys, hashes and MACs are ``bytes``.
* A ``select`` is a tag field plus the RFC's arm fields, the arms not selected being ``None``
  (e.g. ``Sender.leaf_index`` is set only for ``member``); constructors check consistency
  and raise ``UsageError``. The tagged union ``Proposal`` instead wraps a body struct
  (``Proposal(Add(key_package))``) and derives ``proposal_type`` from it.
* Registry values that may be unknown or GREASE on the wire are plain ``int``; a value that
  selects a variant and is unknown is a ``DecodeError`` naming the field and offset, except
  proposal and credential types, which decode as custom (``opaque data<V>``) like mls-rs.
* Every decode failure is a ``DecodeError``; a nonzero PrivateMessageContent padding byte is
  a ``PaddingError``.
* Structs whose decoding depends on an enclosing field (``FramedContentAuthData``,
  ``PrivateMessageContent``) take it as a parameter and are not ``Struct`` subclasses.
* Encodings that are only ever hashed, signed or MACed (``*TBS``, ``*TBM``, ``*AAD``,
  transcript and tree-hash inputs, ``PSKLabel``) are pure functions returning bytes.
"""

from __future__ import annotations

from mlspy.messages.commit import Commit, ProposalOrRef
from mlspy.messages.credential import Certificate, Credential
from mlspy.messages.enums import (
    ContentType,
    CredentialType,
    ExtensionType,
    LeafNodeSource,
    NodeType,
    ProposalOrRefType,
    ProposalType,
    ProtocolVersion,
    PSKType,
    ResumptionPSKUsage,
    SenderType,
    WireFormat,
)
from mlspy.messages.extension import Extension, find_extension
from mlspy.messages.extensions import (
    ApplicationId,
    ExtensionPayload,
    ExternalPub,
    ExternalSender,
    ExternalSenders,
    LastResort,
    RatchetTree,
    RequiredCapabilities,
)
from mlspy.messages.framed_content import FramedContent, FramedContentAuthData, Sender
from mlspy.messages.framing import (
    AuthenticatedContent,
    PublicMessage,
    authenticated_content_tbm,
    confirmed_transcript_hash_input,
    framed_content_tbs,
    interim_transcript_hash_input,
)
from mlspy.messages.group_context import GroupContext
from mlspy.messages.group_info import GroupInfo
from mlspy.messages.hash_inputs import (
    leaf_tree_hash_input,
    parent_hash_input,
    parent_tree_hash_input,
    psk_label,
)
from mlspy.messages.key_package import KeyPackage
from mlspy.messages.leaf_node import Capabilities, LeafNode, Lifetime
from mlspy.messages.mls_message import MLSMessage, MLSMessageBody
from mlspy.messages.private_message import (
    PrivateMessage,
    PrivateMessageContent,
    SenderData,
    private_content_aad,
    sender_data_aad,
)
from mlspy.messages.proposals import (
    Add,
    CustomProposal,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ProposalBody,
    ReInit,
    Remove,
    Update,
)
from mlspy.messages.psk import PreSharedKeyID
from mlspy.messages.tree_nodes import (
    Node,
    ParentNode,
    RatchetTreeNodes,
    decode_ratchet_tree,
    encode_ratchet_tree,
    read_ratchet_tree,
    write_ratchet_tree,
)
from mlspy.messages.update_path import HPKECiphertext, UpdatePath, UpdatePathNode
from mlspy.messages.welcome import EncryptedGroupSecrets, GroupSecrets, PathSecret, Welcome

__all__ = [
    "Add",
    "ApplicationId",
    "AuthenticatedContent",
    "Capabilities",
    "Certificate",
    "Commit",
    "ContentType",
    "Credential",
    "CredentialType",
    "CustomProposal",
    "EncryptedGroupSecrets",
    "Extension",
    "ExtensionPayload",
    "ExtensionType",
    "ExternalInit",
    "ExternalPub",
    "ExternalSender",
    "ExternalSenders",
    "FramedContent",
    "FramedContentAuthData",
    "GroupContext",
    "GroupContextExtensions",
    "GroupInfo",
    "GroupSecrets",
    "HPKECiphertext",
    "KeyPackage",
    "LastResort",
    "LeafNode",
    "LeafNodeSource",
    "Lifetime",
    "MLSMessage",
    "MLSMessageBody",
    "Node",
    "NodeType",
    "PSKType",
    "ParentNode",
    "PathSecret",
    "PreSharedKey",
    "PreSharedKeyID",
    "PrivateMessage",
    "PrivateMessageContent",
    "Proposal",
    "ProposalBody",
    "ProposalOrRef",
    "ProposalOrRefType",
    "ProposalType",
    "ProtocolVersion",
    "PublicMessage",
    "RatchetTree",
    "RatchetTreeNodes",
    "ReInit",
    "Remove",
    "RequiredCapabilities",
    "ResumptionPSKUsage",
    "Sender",
    "SenderData",
    "SenderType",
    "Update",
    "UpdatePath",
    "UpdatePathNode",
    "Welcome",
    "WireFormat",
    "authenticated_content_tbm",
    "confirmed_transcript_hash_input",
    "decode_ratchet_tree",
    "encode_ratchet_tree",
    "find_extension",
    "framed_content_tbs",
    "interim_transcript_hash_input",
    "leaf_tree_hash_input",
    "parent_hash_input",
    "parent_tree_hash_input",
    "private_content_aad",
    "psk_label",
    "read_ratchet_tree",
    "sender_data_aad",
    "write_ratchet_tree",
]
