"""Registries and enumerations of RFC 9420 with their RFC values.

Only values that name something are members: ``reserved(0)`` is left out so that decoding a
reserved value as a variant selector fails. Fields whose registry may legally carry unknown or
GREASE values on the wire (§13, §13.5) are stored as plain ``int`` in the structs; these enums
are then only names for the known values (an ``IntEnum`` compares equal to its ``int``).

The ``*_BY_VALUE`` tables map wire values to members; decoders use them (a dict lookup is
cheaper than calling the enum and lets a miss become a :class:`~mlspy.errors.DecodeError`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final, TypeVar

from mlspy.codec import Reader
from mlspy.errors import DecodeError


class ProtocolVersion(IntEnum):
    """``enum { reserved(0), mls10(1), (65535) } ProtocolVersion;`` (§6)."""

    mls10 = 1


class WireFormat(IntEnum):
    """``uint16 WireFormat;`` — the "MLS Wire Formats" registry (§6, §17.2)."""

    mls_public_message = 1
    mls_private_message = 2
    mls_welcome = 3
    mls_group_info = 4
    mls_key_package = 5


class ContentType(IntEnum):
    """``enum { reserved(0), application(1), proposal(2), commit(3), (255) } ContentType;``
    (§6)."""

    application = 1
    proposal = 2
    commit = 3


class SenderType(IntEnum):
    """``enum { reserved(0), member(1), external(2), new_member_proposal(3),
    new_member_commit(4), (255) } SenderType;`` (§6)."""

    member = 1
    external = 2
    new_member_proposal = 3
    new_member_commit = 4


class ProposalType(IntEnum):
    """``uint16 ProposalType;`` — the "MLS Proposal Types" registry (§12.1, §17.4)."""

    add = 1
    update = 2
    remove = 3
    psk = 4
    reinit = 5
    external_init = 6
    group_context_extensions = 7


class ProposalOrRefType(IntEnum):
    """``enum { reserved(0), proposal(1), reference(2), (255) } ProposalOrRefType;``
    (§12.4)."""

    proposal = 1
    reference = 2


class NodeType(IntEnum):
    """``enum { reserved(0), leaf(1), parent(2), (255) } NodeType;`` (§7.8)."""

    leaf = 1
    parent = 2


class LeafNodeSource(IntEnum):
    """``enum { reserved(0), key_package(1), update(2), commit(3), (255) } LeafNodeSource;``
    (§7.2)."""

    key_package = 1
    update = 2
    commit = 3


class CredentialType(IntEnum):
    """``uint16 CredentialType;`` — the "MLS Credential Types" registry (§5.3, §17.5)."""

    basic = 1
    x509 = 2


class PSKType(IntEnum):
    """``enum { reserved(0), external(1), resumption(2), (255) } PSKType;`` (§8.4)."""

    external = 1
    resumption = 2


class ResumptionPSKUsage(IntEnum):
    """``enum { reserved(0), application(1), reinit(2), branch(3), (255) }
    ResumptionPSKUsage;`` (§8.4)."""

    application = 1
    reinit = 2
    branch = 3


class ExtensionType(IntEnum):
    """``uint16 ExtensionType;`` — the "MLS Extension Types" registry (§13, §17.3).

    ``last_resort`` (0x000A) is registered by the MLS extensions document, not RFC 9420.
    """

    application_id = 1
    ratchet_tree = 2
    required_capabilities = 3
    external_pub = 4
    external_senders = 5
    last_resort = 0x000A
    # Private use (§17.3: 0xF000-0xFFFF): mlspy's group membership policy (group/policy.py).
    mlspy_membership_policy = 0xFF00


E = TypeVar("E", bound=IntEnum)


def _by_value(enum: type[E]) -> dict[int, E]:
    return {int(m): m for m in enum}


WIRE_FORMAT_BY_VALUE: Final = _by_value(WireFormat)
CONTENT_TYPE_BY_VALUE: Final = _by_value(ContentType)
SENDER_TYPE_BY_VALUE: Final = _by_value(SenderType)
PROPOSAL_TYPE_BY_VALUE: Final = _by_value(ProposalType)
PROPOSAL_OR_REF_TYPE_BY_VALUE: Final = _by_value(ProposalOrRefType)
NODE_TYPE_BY_VALUE: Final = _by_value(NodeType)
LEAF_NODE_SOURCE_BY_VALUE: Final = _by_value(LeafNodeSource)
CREDENTIAL_TYPE_BY_VALUE: Final = _by_value(CredentialType)
PSK_TYPE_BY_VALUE: Final = _by_value(PSKType)
RESUMPTION_PSK_USAGE_BY_VALUE: Final = _by_value(ResumptionPSKUsage)


def read_enum8(r: Reader, table: dict[int, E], field: str) -> E:
    """Read a ``uint8`` enum; a value outside ``table`` is a :class:`DecodeError`."""
    value = r.uint8()
    member = table.get(value)
    if member is None:
        raise DecodeError(f"unknown {field} {value}", r.position - 1)
    return member


def read_enum16(r: Reader, table: dict[int, E], field: str) -> E:
    """Read a ``uint16`` enum; a value outside ``table`` is a :class:`DecodeError`."""
    value = r.uint16()
    member = table.get(value)
    if member is None:
        raise DecodeError(f"unknown {field} {value}", r.position - 2)
    return member
