"""Versioned serialization of a member's whole group state, private keys included.

Theory of operation: the state (:class:`~mlspy.group.member_state.MemberState`) is encoded
with the same TLS presentation codec as the wire structs, behind a 4-byte magic and a uint16
format version. Everything a member holds is written: configuration, signing identity, the
current epoch (context, ratchet tree, path private keys, key-schedule secrets, secret-tree
position and retained keys, transcript state), retained past epochs, cached proposals, our
pending commit, PSKs and the lifecycle. Loading restores it exactly. Every older format stays
readable: a new format gets a new version number and the reader branches on the version
(:func:`migrate` rewrites an old state in the current format). Version 2 added the leaf
lifetime policy to the config, the lifecycle (joining by external commit) and staged commits
that describe their members; version 1 states are read and rewritten as version 2.

The state can also be written in two parts (:func:`serialize_group_parts`): the *epoch part*,
everything except the secret trees, which changes only with handshake messages and is O(n) in
the group; and the *ratchet part*, the secret trees of the current and retained epochs, which
every application message advances and which stays small. A store that keeps them under two
keys writes only the ratchet part per application message instead of the whole group.

Not stored, and passed again when loading (:func:`attach`): the Authentication Service hook,
the provider (randomness and time, :mod:`mlspy.provider`) and an external signer. An identity
whose key lives with an external signer (``SigningIdentity.external``) is stored with an empty
private key — representable in every format version — and loading it without the signer is a
:class:`UsageError`.

The encoding holds secrets: store it only where the application keeps secrets (the SQLite
store can encrypt it at rest).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from mlspy.codec import Reader, Writer, decode_all, write_struct
from mlspy.credentials import CredentialValidator
from mlspy.crypto import MessageSigner, suite
from mlspy.errors import DecodeError, StorageError, TreeError, UsageError
from mlspy.group.identity import SigningIdentity
from mlspy.group.member_state import Lifecycle, MemberState, PastEpochs
from mlspy.group.proposals import QueuedProposal
from mlspy.group.state import EpochState, GroupConfig, Member, PendingCommit, StagedCommit
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
from mlspy.provider import Provider
from mlspy.schedule.key_schedule import EpochSecrets
from mlspy.schedule.secret_tree import SecretTree, decode_secret_tree, encode_secret_tree
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import TreePrivateKeys

MAGIC = b"MLSg"
FORMAT_VERSION = 2
EPOCH_PART_MAGIC = b"MLSe"  # a state without its secret trees (see serialize_group_parts)
RATCHET_PART_MAGIC = b"MLSr"  # the secret trees of a state's current and retained epochs
PARTS_VERSION = 2

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

_LIFECYCLES = (
    Lifecycle.ACTIVE,
    Lifecycle.JOINING,
    Lifecycle.REMOVED,
    Lifecycle.REINIT,
)


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
    w.optional(c.max_leaf_lifetime, Writer.uint64)
    w.uint8(int(c.allow_wire_format_override))


def _read_config(r: Reader, version: int) -> GroupConfig:
    try:
        wire_format = WireFormat(r.uint16())
    except ValueError:
        raise DecodeError("stored handshake wire format is unknown", r.position) from None
    config = GroupConfig(
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
    if version == 1:
        return config
    return replace(
        config,
        max_leaf_lifetime=r.optional(Reader.uint64),
        allow_wire_format_override=bool(r.uint8()),
    )


def _write_identity(w: Writer, i: SigningIdentity) -> None:
    w.uint16(i.cipher_suite)
    i.credential.encode_to(w)
    # An external signer keeps its key: the identity is stored with an empty private key.
    w.opaque(b"" if i.signer is not None else i.signature_private_key)
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
    try:
        tree = RatchetTree.from_nodes(cs, decode_ratchet_tree(r.opaque()), n_leaves=n_leaves)
    except TreeError as exc:
        raise DecodeError(f"stored tree: {exc}", r.position) from exc
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


def _write_member(w: Writer, m: Member) -> None:
    w.uint32(m.leaf_index)
    m.credential.encode_to(w)
    w.opaque(m.signature_key)
    w.opaque(m.encryption_key)


def _read_member(r: Reader) -> Member:
    return Member(LeafIndex(r.uint32()), Credential.decode_from(r), r.opaque(), r.opaque())


def _write_staged(w: Writer, s: StagedCommit) -> None:
    s.sender.encode_to(w)
    w.optional(s.committer, _write_member)
    w.uint64(s.epoch)
    w.optional(s.new_state, _write_epoch)
    w.vector(list(s.added), _write_member)
    w.vector(list(s.key_packages), write_struct)
    w.vector(list(s.removed), _write_member)
    w.vector(list(s.updated), _write_member)
    w.vector(list(s.psks), write_struct)
    w.optional(s.reinit, write_struct)
    w.uint8(int(s.self_removed))
    w.uint8(int(s.own))
    w.opaque(s.authenticated_data)


def _read_staged(r: Reader) -> StagedCommit:
    return StagedCommit(
        sender=Sender.decode_from(r),
        committer=r.optional(_read_member),
        epoch=r.uint64(),
        new_state=r.optional(_read_epoch),
        added=tuple(r.vector(_read_member)),
        key_packages=tuple(r.vector(KeyPackage.decode_from)),
        removed=tuple(r.vector(_read_member)),
        updated=tuple(r.vector(_read_member)),
        psks=tuple(r.vector(PreSharedKeyID.decode_from)),
        reinit=r.optional(ReInit.decode_from),
        self_removed=bool(r.uint8()),
        own=bool(r.uint8()),
        authenticated_data=r.opaque(),
    )


def _read_staged_v1(r: Reader, current: EpochState) -> StagedCommit:
    """A version 1 staged commit (always our own pending one, relative to ``current``)."""
    sender = Sender.decode_from(r)
    new_state = r.optional(_read_epoch)
    added = r.vector(lambda rr: (LeafIndex(rr.uint32()), KeyPackage.decode_from(rr)))
    removed = [LeafIndex(x) for x in r.vector(Reader.uint32)]
    updated = [LeafIndex(x) for x in r.vector(Reader.uint32)]
    psks = tuple(r.vector(PreSharedKeyID.decode_from))
    reinit = r.optional(ReInit.decode_from)
    self_removed, own = bool(r.uint8()), bool(r.uint8())
    r.uint8()  # "merged": version 1 kept merged commits; nothing pending is merged
    authenticated_data = r.opaque()
    new_tree = new_state.tree if new_state is not None else current.tree

    def members(tree: RatchetTree, leaves: list[LeafIndex]) -> tuple[Member, ...]:
        return tuple(Member.of(i, leaf) for i in leaves if (leaf := tree.leaf(i)) is not None)

    committer = sender.leaf_index
    return StagedCommit(
        sender=sender,
        committer=members(new_tree, [LeafIndex(committer)])[0] if committer is not None else None,
        epoch=current.epoch + 1,
        added=tuple(Member.of(i, kp.leaf_node) for i, kp in added),
        removed=members(current.tree, removed),
        updated=members(new_tree, updated),
        psks=psks,
        reinit=reinit,
        self_removed=self_removed,
        own=own,
        authenticated_data=authenticated_data,
        new_state=new_state,
        key_packages=tuple(kp for _, kp in added),
    )


def _write_pending(w: Writer, p: PendingCommit) -> None:
    w.opaque(p.content_bytes)
    w.opaque(p.message_bytes)
    _write_staged(w, p.staged)


def _read_pending(r: Reader) -> PendingCommit:
    return PendingCommit(r.opaque(), r.opaque(), _read_staged(r))


def _read_pending_v1(r: Reader, current: EpochState) -> PendingCommit:
    return PendingCommit(r.opaque(), r.opaque(), _read_staged_v1(r, current))


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


def serialize_state(state: MemberState) -> bytes:
    """Every bit of ``state``, versioned."""
    w = Writer()
    w.fixed(MAGIC)
    w.uint16(FORMAT_VERSION)
    _write_body(w, state, _write_epoch)
    return w.getvalue()


def serialize_state_parts(state: MemberState) -> tuple[bytes, bytes]:
    """``state`` as (epoch part, ratchet part); see the module docstring."""
    w = Writer()
    w.fixed(EPOCH_PART_MAGIC)
    w.uint16(PARTS_VERSION)
    _write_body(w, state, _write_epoch_part)
    return w.getvalue(), serialize_ratchet_part(state)


def serialize_ratchet_part(state: MemberState) -> bytes:
    """The secret trees of the current and retained epochs, tagged with their epochs."""
    w = Writer()
    w.fixed(RATCHET_PART_MAGIC)
    w.uint16(PARTS_VERSION)
    w.opaque(state.group_id)
    w.uint16(state.epoch.context.cipher_suite)

    def write(w: Writer, e: EpochState) -> None:
        w.uint64(e.epoch)
        encode_secret_tree(e.secret_tree, w)

    w.vector([state.epoch, *state.past.epochs.values()], write)
    return w.getvalue()


def deserialize_state_parts(
    epoch_part: bytes,
    ratchet_part: bytes,
    *,
    credential_validator: CredentialValidator | None = None,
    provider: Provider | None = None,
    signer: MessageSigner | None = None,
) -> MemberState:
    """Restore a state saved by :func:`serialize_state_parts` (parts version 1 or 2),
    re-attaching what is not stored (see :func:`attach`).

    Raises :class:`StorageError` for data that is not such a pair, or parts of two different
    states; :class:`UsageError` as :func:`deserialize_state` does."""
    versions = []
    for data, magic in ((epoch_part, EPOCH_PART_MAGIC), (ratchet_part, RATCHET_PART_MAGIC)):
        if len(data) < 6 or data[:4] != magic:
            raise StorageError("not a stored mlspy group state part")
        version = int.from_bytes(data[4:6], "big")
        if not 1 <= version <= PARTS_VERSION:
            raise StorageError(f"stored state part version {data[4:6].hex()} is not supported")
        versions.append(version)

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
        raise StorageError(f"corrupt stored group state: {exc}") from exc

    def tree_for(context: GroupContext) -> SecretTree:
        if context.group_id != group_id:
            raise StorageError(f"{mismatch} (another group's ratchets)")
        if context.epoch not in trees:
            raise StorageError(f"{mismatch} (no secret tree for epoch {context.epoch})")
        return trees.pop(context.epoch)  # each epoch's tree is used once

    try:
        state = decode_all(
            bytes(epoch_part), lambda r: _read_state(r, versions[0], tree_for), "epoch part"
        )
    except DecodeError as exc:
        raise StorageError(f"corrupt stored group state: {exc}") from exc
    if trees:
        raise StorageError(f"{mismatch} (secret trees of epochs {sorted(trees)} left over)")
    return attach(
        state, credential_validator=credential_validator, provider=provider, signer=signer
    )


def _write_body(
    w: Writer, st: MemberState, write_epoch: Callable[[Writer, EpochState], None]
) -> None:
    _write_config(w, st.config)
    _write_identity(w, st.identity)
    w.uint32(st.own_leaf)
    write_epoch(w, st.epoch)
    w.vector(list(st.past.epochs.values()), write_epoch)
    w.vector(list(st.proposals.values()), _write_queued)
    w.vector(list(st.own_update_keys.items()), _write_pair)
    w.vector(list(st.own_messages.items()), _write_pair)
    w.optional(st.pending, _write_pending)
    w.vector(sorted(st.external_psks.items()), _write_pair)
    w.vector(list(st.resumption.items()), _write_resumption)
    w.uint8(_LIFECYCLES.index(st.lifecycle))
    w.optional(st.reinit, write_struct)
    w.vector(st.welcome_psks, write_struct)


def deserialize_state(
    data: bytes,
    *,
    credential_validator: CredentialValidator | None = None,
    provider: Provider | None = None,
    signer: MessageSigner | None = None,
) -> MemberState:
    """Restore a state saved by :func:`serialize_state` (any supported format version),
    re-attaching what is not stored (see :func:`attach`).

    Raises :class:`StorageError` for data that is not a stored group state, and
    :class:`UsageError` for a state whose identity signs with an external signer when no
    ``signer`` is given."""
    state = _decode_state(data)
    return attach(
        state, credential_validator=credential_validator, provider=provider, signer=signer
    )


def attach(
    state: MemberState,
    *,
    credential_validator: CredentialValidator | None = None,
    provider: Provider | None = None,
    signer: MessageSigner | None = None,
) -> MemberState:
    """Give a freshly loaded ``state`` what is never stored: the Authentication Service hook,
    the provider (default: the system's) and an external signer. A state stored with an
    empty private key belongs to an identity with an external signer: it needs ``signer``
    (:class:`UsageError` without it), whose public key must be the identity's."""
    identity = state.identity
    if signer is not None:
        if bytes(signer.public_key) != identity.signature_key:
            raise UsageError("the signer's public key is not the stored identity's signature key")
        state.identity = replace(identity, signer=signer)
    elif not identity.signature_private_key:
        raise UsageError(
            "this group state signs with an external signer (its private key is not stored): "
            "pass the signer when loading it (Group.from_bytes(data, signer=...))"
        )
    if credential_validator is not None:
        state.config = replace(state.config, credential_validator=credential_validator)
    if provider is not None:
        state.config = replace(state.config, provider=provider)
    return state


def _decode_state(data: bytes) -> MemberState:
    """The stored state as it is, nothing attached."""
    version = format_version(bytes(data))
    if version < 1:
        raise StorageError(f"stored format version {version} is not an mlspy format")
    if version > FORMAT_VERSION:
        raise StorageError(
            f"stored format version {version} is newer than this mlspy ({FORMAT_VERSION})"
        )
    try:
        return decode_all(bytes(data), lambda r: _read_state(r, version), "stored group state")
    except DecodeError as exc:
        raise StorageError(f"corrupt stored group state: {exc}") from exc


def format_version(data: bytes) -> int:
    if len(data) < 6 or data[:4] != MAGIC:
        raise StorageError("not a stored mlspy group state")
    return int.from_bytes(data[4:6], "big")


def migrate(data: bytes) -> bytes:
    """Upgrade a stored state to the current format (every older version is readable, so
    this reads it and writes it anew)."""
    if format_version(data) == FORMAT_VERSION:
        return data
    return serialize_state(_decode_state(data))


def _read_state(r: Reader, version: int, secret_trees: _TreeSource | None = None) -> MemberState:
    """The body after the magic and version; ``secret_trees`` for an epoch part."""
    r.fixed(6)
    config = _read_config(r, version)
    identity = _read_identity(r)
    own_leaf = LeafIndex(r.uint32())
    epoch = _read_epoch(r, secret_trees)
    past = PastEpochs(
        OrderedDict((e.epoch, e) for e in r.vector(lambda rr: _read_epoch(rr, secret_trees)))
    )
    proposals = OrderedDict((q.ref or b"", q) for q in r.vector(_read_queued))
    own_update_keys = dict(r.vector(_read_pair))
    own_messages = dict(r.vector(_read_pair))
    if version == 1:
        pending = r.optional(lambda rr: _read_pending_v1(rr, epoch))
    else:
        pending = r.optional(_read_pending)
    external_psks = dict(r.vector(_read_pair))
    resumption = OrderedDict(r.vector(_read_resumption))
    status = r.uint8()
    reinit = r.optional(ReInit.decode_from)
    if version == 1:  # an "active" flag: inactive is removed, or closed by a ReInit
        lifecycle = (
            Lifecycle.ACTIVE if status else Lifecycle.REINIT if reinit else Lifecycle.REMOVED
        )
    elif status < len(_LIFECYCLES):
        lifecycle = _LIFECYCLES[status]
    else:
        raise DecodeError(f"unknown stored lifecycle {status}", r.position)
    return MemberState(
        identity=identity,
        config=config,
        own_leaf=own_leaf,
        epoch=epoch,
        past=past,
        proposals=proposals,
        own_update_keys=own_update_keys,
        own_messages=own_messages,
        pending=pending,
        external_psks=external_psks,
        resumption=resumption,
        lifecycle=lifecycle,
        reinit=reinit,
        welcome_psks=tuple(r.vector(PreSharedKeyID.decode_from)),
    )


__all__ = [
    "FORMAT_VERSION",
    "attach",
    "deserialize_state",
    "deserialize_state_parts",
    "format_version",
    "migrate",
    "serialize_ratchet_part",
    "serialize_state",
    "serialize_state_parts",
]
