"""Vector kind ``messages``: every field decodes with its struct and re-encodes byte for byte.

The proposal fields hold proposal *bodies* (``Add``, ``Update``, …) without the
``proposal_type`` prefix; the MLSMessage fields must also carry the wire format (and, for
PublicMessages, the content type) their name implies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlspy.codec import Struct
from mlspy.messages import (
    Add,
    Commit,
    ContentType,
    ExternalInit,
    GroupContextExtensions,
    GroupSecrets,
    MLSMessage,
    PreSharedKey,
    ReInit,
    Remove,
    Update,
    WireFormat,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from mlspy.vectors.check import Entry, expect_eq, h


@dataclass(frozen=True)
class FieldCodec:
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    wire_format: WireFormat | None = None
    content_type: ContentType | None = None


def _struct(
    cls: type[Struct], wire_format: WireFormat | None = None, content: ContentType | None = None
) -> FieldCodec:
    return FieldCodec(cls.decode, lambda value: value.encode(), wire_format, content)


FIELDS: dict[str, FieldCodec] = {
    "mls_welcome": _struct(MLSMessage, WireFormat.mls_welcome),
    "mls_group_info": _struct(MLSMessage, WireFormat.mls_group_info),
    "mls_key_package": _struct(MLSMessage, WireFormat.mls_key_package),
    "ratchet_tree": FieldCodec(decode_ratchet_tree, encode_ratchet_tree),
    "group_secrets": _struct(GroupSecrets),
    "add_proposal": _struct(Add),
    "update_proposal": _struct(Update),
    "remove_proposal": _struct(Remove),
    "pre_shared_key_proposal": _struct(PreSharedKey),
    "re_init_proposal": _struct(ReInit),
    "external_init_proposal": _struct(ExternalInit),
    "group_context_extensions_proposal": _struct(GroupContextExtensions),
    "commit": _struct(Commit),
    "public_message_application": _struct(
        MLSMessage, WireFormat.mls_public_message, ContentType.application
    ),
    "public_message_proposal": _struct(
        MLSMessage, WireFormat.mls_public_message, ContentType.proposal
    ),
    "public_message_commit": _struct(MLSMessage, WireFormat.mls_public_message, ContentType.commit),
    "private_message": _struct(MLSMessage, WireFormat.mls_private_message),
}


def check_messages(e: Entry) -> None:
    for field, codec in FIELDS.items():
        data = h(e[field])
        value = codec.decode(data)
        if codec.wire_format is not None:
            expect_eq(f"{field}: wire_format", value.wire_format, codec.wire_format)
        if codec.content_type is not None:
            pm = value.public_message
            expect_eq(f"{field}: content_type", pm.content.content_type, codec.content_type)
        expect_eq(f"{field}: re-encoding", codec.encode(value), data)
