"""Versioned serialization of a member's whole group state, private keys included.

Theory of operation: the state is encoded with the same TLS presentation codec as the wire
structs, behind a 4-byte magic and a uint16 format version. Everything a :class:`Group` holds is
written: configuration, signing identity, the current epoch (context, ratchet tree, path
private keys, key-schedule secrets, secret-tree position and retained keys, transcript state),
retained past epochs, cached proposals, our pending commit, PSKs and lifecycle flags. Loading
restores it exactly. A new format gets a new version number and an entry in ``_MIGRATIONS``
that upgrades the previous one, so stored states keep loading.

The state can also be written in two parts (:func:`serialize_group_parts`): the *epoch part*,
everything except the secret trees, which changes only with handshake messages and is O(n) in
the group; and the *ratchet part*, the secret trees of the current and retained epochs, which
every application message advances and which stays small. A store that keeps them under two
keys writes only the ratchet part per application message instead of the whole group.

The encoding holds secrets: store it only where the application keeps secrets (the SQLite
store can encrypt it at rest).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from mlspy.codec import Reader, Writer, decode_all, write_struct
from mlspy.crypto import suite
from mlspy.errors import DecodeError, StorageError
from mlspy.group.group import Group, _PastEpochs
from mlspy.group.identity import SigningIdentity
from mlspy.group.proposals import QueuedProposal
from mlspy.group.state import EpochState, GroupConfig, PendingCommit, StagedCommit
from mlspy.messages import (
    Capabilities,
    Credential,
    GroupContext,
    KeyPackage,
    PreSharedKeyID,
    Proposal,
    ReInit,
    Sender,
    WireFormat,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from mlspy.messages.extension import read_extensions, write_extensions
from mlspy.schedule.key_schedule import EpochSecrets
from mlspy.schedule.secret_tree import SecretTree, decode_secret_tree, encode_secret_tree
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import TreePrivateKeys

MAGIC = b"MLSg"
FORMAT_VERSION = 1
EPOCH_PART_MAGIC = b"MLSe"  # a state without its secret trees (see serialize_group_parts)
RATCHET_PART_MAGIC = b"MLSr"  # the secret trees of a state's current and retained epochs
PARTS_VERSION = 1

_SECRET_FIELDS = (
    "joiner_secret",
    "welcome_secret",
    "epoch_secret",
    "sender_data_secret",
    "encryption_secret",
    "exporter_secret",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
    "epoch_authenticator",
    "init_secret",
)

# version -> function upgrading a state of that version to version + 1 (raw bytes to raw
# bytes). Empty while only version 1 exists; a format change adds an entry here.
_MIGRATIONS: dict[int, Callable[[bytes], bytes]] = {}


# --- Pieces ---------------------------------------------------------------------------------


def _write_config(w: Writer, c: GroupConfig) -> None:
    w.uint16(c.handshake_wire_format)
    w.uint32(c.padding_block)
    w.uint32(c.max_forward_distance)
    w.uint32(c.max_retained_keys)
    w.uint16(c.max_past_epochs)
    w.uint8(int(c.ratchet_tree_extension))
    w.uint8(int(c.external_pub_extension))
    w.uint8(int(c.check_lifetimes))
    w.uint16(c.max_resumption_psks)


def _read_config(r: Reader) -> GroupConfig:
    try:
        wire_format = WireFormat(r.uint16())
    except ValueError:
        raise DecodeError("stored handshake wire format is unknown", r.position) from None
    return GroupConfig(
        handshake_wire_format=wire_format,
        padding_block=r.uint32(),
        max_forward_distance=r.uint32(),
        max_retained_keys=r.uint32(),
        max_past_epochs=r.uint16(),
        ratchet_tree_extension=bool(r.uint8()),
        external_pub_extension=bool(r.uint8()),
        check_lifetimes=bool(r.uint8()),
        max_resumption_psks=r.uint16(),
    )


def _write_identity(w: Writer, i: SigningIdentity) -> None:
    w.uint16(i.cipher_suite)
    i.credential.encode_to(w)
    w.opaque(i.signature_private_key)
    w.opaque(i.signature_key)
    i.capabilities.encode_to(w)
    write_extensions(w, i.leaf_extensions)


def _read_identity(r: Reader) -> SigningIdentity:
    return SigningIdentity(
        r.uint16(),
        Credential.decode_from(r),
        r.opaque(),
        r.opaque(),
        Capabilities.decode_from(r),
        read_extensions(r),
    )


def _write_private(w: Writer, p: TreePrivateKeys | None) -> None:
    def write(w: Writer, p: TreePrivateKeys) -> None:
        w.uint32(p.leaf)
        w.vector(sorted(p.keys.items()), _write_node_key)

    w.optional(p, write)


def _write_node_key(w: Writer, item: tuple[int, bytes]) -> None:
    w.uint32(item[0])
    w.opaque(item[1])


def _read_private(r: Reader) -> TreePrivateKeys | None:
    def read(r: Reader) -> TreePrivateKeys:
        leaf = LeafIndex(r.uint32())
        keys = {NodeIndex(x): k for x, k in r.vector(lambda rr: (rr.uint32(), rr.opaque()))}
        return TreePrivateKeys(leaf, keys)

    return r.optional(read)


def _write_epoch(w: Writer, e: EpochState, *, with_secret_tree: bool = True) -> None:
    e.context.encode_to(w)
    w.uint32(e.tree.n_leaves)
    w.opaque(encode_ratchet_tree(e.tree.to_nodes()))
    _write_private(w, e.private)
    for name in _SECRET_FIELDS:
        w.opaque(getattr(e.secrets, name))
    if with_secret_tree:
        encode_secret_tree(e.secret_tree, w)
    w.opaque(e.interim_transcript_hash)
    w.opaque(e.confirmation_tag)


def _write_epoch_part(w: Writer, e: EpochState) -> None:
    _write_epoch(w, e, with_secret_tree=False)


# Where an epoch's secret tree comes from when the state was stored in parts.
_TreeSource = Callable[[GroupContext], SecretTree]


def _read_epoch(r: Reader, secret_trees: _TreeSource | None = None) -> EpochState:
    """An epoch; its secret tree is read inline, or taken from ``secret_trees`` when the
    state was stored in parts."""
    context = GroupContext.decode_from(r)
    cs = suite(context.cipher_suite)
    n_leaves = r.uint32()
    tree = RatchetTree.from_nodes(cs, decode_ratchet_tree(r.opaque()))
    while tree.n_leaves < n_leaves:
        tree._extend()
    if tree.n_leaves != n_leaves:
        raise DecodeError("stored tree size does not match its nodes", r.position)
    private = _read_private(r)
    secrets = EpochSecrets(**{name: r.opaque() for name in _SECRET_FIELDS})
    secret_tree = decode_secret_tree(cs, r) if secret_trees is None else secret_trees(context)
    return EpochState(
        context=context,
        tree=tree,
        private=private,
        secrets=secrets,
        secret_tree=secret_tree,
        interim_transcript_hash=r.opaque(),
        confirmation_tag=r.opaque(),
    )


def _write_queued(w: Writer, q: QueuedProposal) -> None:
    q.proposal.encode_to(w)
    q.sender.encode_to(w)
    w.optional(q.ref, Writer.opaque)


def _read_queued(r: Reader) -> QueuedProposal:
    return QueuedProposal(Proposal.decode_from(r), Sender.decode_from(r), r.optional(Reader.opaque))


def _write_pair(w: Writer, item: tuple[bytes, bytes]) -> None:
    w.opaque(item[0])
    w.opaque(item[1])


def _read_pair(r: Reader) -> tuple[bytes, bytes]:
    return r.opaque(), r.opaque()


def _write_staged(w: Writer, s: StagedCommit) -> None:
    s.sender.encode_to(w)
    w.optional(s.epoch, _write_epoch)

    def write_added(w: Writer, item: tuple[LeafIndex, KeyPackage]) -> None:
        w.uint32(item[0])
        item[1].encode_to(w)

    w.vector(s.added, write_added)
    w.vector(s.removed, Writer.uint32)
    w.vector(s.updated, Writer.uint32)
    w.vector(s.psks, write_struct)
    w.optional(s.reinit, write_struct)
    w.uint8(int(s.self_removed))
    w.uint8(int(s.own))
    w.uint8(int(s.merged))
    w.opaque(s.authenticated_data)


def _read_staged(r: Reader) -> StagedCommit:
    return StagedCommit(
        sender=Sender.decode_from(r),
        epoch=r.optional(_read_epoch),
        added=r.vector(lambda rr: (LeafIndex(rr.uint32()), KeyPackage.decode_from(rr))),
        removed=[LeafIndex(x) for x in r.vector(Reader.uint32)],
        updated=[LeafIndex(x) for x in r.vector(Reader.uint32)],
        psks=r.vector(PreSharedKeyID.decode_from),
        reinit=r.optional(ReInit.decode_from),
        self_removed=bool(r.uint8()),
        own=bool(r.uint8()),
        merged=bool(r.uint8()),
        authenticated_data=r.opaque(),
    )


def _write_pending(w: Writer, p: PendingCommit) -> None:
    w.opaque(p.content_bytes)
    w.opaque(p.message_bytes)
    _write_staged(w, p.staged)


def _read_pending(r: Reader) -> PendingCommit:
    return PendingCommit(r.opaque(), r.opaque(), _read_staged(r))


def _write_resumption(w: Writer, item: tuple[tuple[bytes, int], bytes]) -> None:
    (group_id, epoch), psk = item
    w.opaque(group_id)
    w.uint64(epoch)
    w.opaque(psk)


def _read_resumption(r: Reader) -> tuple[tuple[bytes, int], bytes]:
    group_id = r.opaque()
    epoch = r.uint64()
    return (group_id, epoch), r.opaque()


# --- Whole state ------------------------------------------------------------------------------


def serialize_group(group: Group) -> bytes:
    """Every bit of ``group``'s state, versioned."""
    w = Writer()
    w.fixed(MAGIC)
    w.uint16(FORMAT_VERSION)
    _write_body(w, group, _write_epoch)
    return w.getvalue()


def serialize_group_parts(group: Group) -> tuple[bytes, bytes]:
    """``group``'s state as (epoch part, ratchet part); see the module docstring."""
    w = Writer()
    w.fixed(EPOCH_PART_MAGIC)
    w.uint16(PARTS_VERSION)
    _write_body(w, group, _write_epoch_part)
    return w.getvalue(), serialize_ratchet_part(group)


def serialize_ratchet_part(group: Group) -> bytes:
    """The secret trees of the current and retained epochs, tagged with their epochs."""
    w = Writer()
    w.fixed(RATCHET_PART_MAGIC)
    w.uint16(PARTS_VERSION)
    w.opaque(group.group_id)
    w.uint16(group._epoch.context.cipher_suite)

    def write(w: Writer, e: EpochState) -> None:
        w.uint64(e.epoch)
        encode_secret_tree(e.secret_tree, w)

    w.vector([group._epoch, *group._past.epochs.values()], write)
    return w.getvalue()


def deserialize_group_parts(epoch_part: bytes, ratchet_part: bytes) -> Group:
    """Restore a group saved by :func:`serialize_group_parts`.

    Raises :class:`StorageError` for data that is not such a pair, or parts of two different
    states."""
    for data, magic in ((epoch_part, EPOCH_PART_MAGIC), (ratchet_part, RATCHET_PART_MAGIC)):
        if len(data) < 6 or data[:4] != magic:
            raise StorageError("not a stored mlspy group state part")
        if int.from_bytes(data[4:6], "big") != PARTS_VERSION:
            raise StorageError(f"stored state part version {data[4:6].hex()} is not supported")

    def read_ratchets(r: Reader) -> tuple[bytes, dict[int, SecretTree]]:
        r.fixed(6)
        group_id = r.opaque()
        cs = suite(r.uint16())
        trees = r.vector(lambda rr: (rr.uint64(), decode_secret_tree(cs, rr)))
        return group_id, dict(trees)

    mismatch = "the stored epoch and ratchet parts belong to different states"
    try:
        group_id, trees = decode_all(bytes(ratchet_part), read_ratchets, "stored ratchet part")
    except DecodeError as exc:
        raise StorageError(f"corrupt stored group state: {exc}") from None

    def tree_for(context: GroupContext) -> SecretTree:
        if context.group_id != group_id:
            raise StorageError(f"{mismatch} (another group's ratchets)")
        if context.epoch not in trees:
            raise StorageError(f"{mismatch} (no secret tree for epoch {context.epoch})")
        return trees.pop(context.epoch)  # each epoch's tree is used once

    try:
        group = decode_all(bytes(epoch_part), lambda r: _read_group(r, tree_for), "epoch part")
    except DecodeError as exc:
        raise StorageError(f"corrupt stored group state: {exc}") from None
    if trees:
        raise StorageError(f"{mismatch} (secret trees of epochs {sorted(trees)} left over)")
    return group


def _write_body(w: Writer, group: Group, write_epoch: Callable[[Writer, EpochState], None]) -> None:
    _write_config(w, group._config)
    _write_identity(w, group._identity)
    w.uint32(group._own_leaf)
    write_epoch(w, group._epoch)
    w.vector(list(group._past.epochs.values()), write_epoch)
    w.vector(list(group._proposals.values()), _write_queued)
    w.vector(list(group._own_update_keys.items()), _write_pair)
    w.vector(list(group._own_messages.items()), _write_pair)
    w.optional(group._pending, _write_pending)
    w.vector(sorted(group._external_psks.items()), _write_pair)
    w.vector(list(group._resumption.items()), _write_resumption)
    w.uint8(int(group._active))
    w.optional(group._reinit, write_struct)
    w.vector(group._welcome_psks, write_struct)


def deserialize_group(data: bytes) -> Group:
    """Restore a group saved by :func:`serialize_group` (any supported format version).

    Raises :class:`StorageError` for data that is not a stored group state."""
    data = migrate(bytes(data))
    try:
        return decode_all(data, _read_group, "stored group state")
    except DecodeError as exc:
        raise StorageError(f"corrupt stored group state: {exc}") from None


def format_version(data: bytes) -> int:
    if len(data) < 6 or data[:4] != MAGIC:
        raise StorageError("not a stored mlspy group state")
    return int.from_bytes(data[4:6], "big")


def migrate(data: bytes) -> bytes:
    """Upgrade a stored state to the current format, one version at a time."""
    version = format_version(data)
    while version < FORMAT_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            raise StorageError(f"no migration from stored format version {version}")
        data = step(data)
        version = format_version(data)
    if version != FORMAT_VERSION:
        raise StorageError(
            f"stored format version {version} is newer than this mlspy ({FORMAT_VERSION})"
        )
    return data


def _read_group(r: Reader, secret_trees: _TreeSource | None = None) -> Group:
    """The body after the magic and version; ``secret_trees`` for an epoch part."""
    r.fixed(4)
    r.uint16()
    config = _read_config(r)
    identity = _read_identity(r)
    own_leaf = LeafIndex(r.uint32())
    epoch = _read_epoch(r, secret_trees)
    group = Group.__new__(Group)
    group._cs = suite(epoch.context.cipher_suite)
    group._identity = identity
    group._epoch = epoch
    group._own_leaf = own_leaf
    group._config = config
    group._past = _PastEpochs(
        OrderedDict((e.epoch, e) for e in r.vector(lambda rr: _read_epoch(rr, secret_trees)))
    )
    group._proposals = OrderedDict((q.ref or b"", q) for q in r.vector(_read_queued))
    group._own_update_keys = dict(r.vector(_read_pair))
    group._own_messages = dict(r.vector(_read_pair))
    group._pending = r.optional(_read_pending)
    group._external_psks = dict(r.vector(_read_pair))
    group._resumption = OrderedDict(r.vector(_read_resumption))
    group._active = bool(r.uint8())
    group._reinit = r.optional(ReInit.decode_from)
    group._welcome_psks = tuple(r.vector(PreSharedKeyID.decode_from))
    return group


__all__ = [
    "FORMAT_VERSION",
    "deserialize_group",
    "format_version",
    "migrate",
    "serialize_group",
]
