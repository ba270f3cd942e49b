"""Helpers for group-level negative tests.

Real groups are built with the public API. A committer's own ``Group.commit`` validates its
proposal list, so it refuses to *build* most invalid commits; :func:`forge_commit` and
:func:`forge_external_commit` build them anyway with the library's lower-level pieces (TreeKEM,
key schedule, transcript hashes, message protection), honestly in every respect but the one
the test breaks: the UpdatePath is real, the signature and membership tag verify and the
confirmation tag is the one the receiver would compute. A receiver that failed to enforce the
rule under test would therefore *accept* the forged message, not reject it for another reason.

:func:`reject` feeds a message to a receiver, checks the exact error class (not a subclass) and
the RFC section its message ends with, and checks that the receiver's observable state is
unchanged; :func:`assert_recovers` then checks that the receiver still follows the group.

The helpers read a few ``Group`` internals (``_cs``, ``_epoch``, ``_identity``); they never
write them.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import pytest

from mlspy.crypto import suite
from mlspy.errors import DecodeError, MLSError, ValidationError
from mlspy.group import (
    Group,
    GroupConfig,
    SigningIdentity,
    StagedCommit,
    create_key_package,
)
from mlspy.group.key_package import KEY_PACKAGE_TBS
from mlspy.messages import (
    Add,
    Commit,
    ContentType,
    Extension,
    ExternalInit,
    ExternalPub,
    FramedContent,
    GroupContextExtensions,
    GroupInfo,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    ProposalType,
    ProtocolVersion,
    PSKType,
    PublicMessage,
    ReInit,
    Remove,
    Sender,
    SenderType,
    Update,
    UpdatePath,
    WireFormat,
)
from mlspy.protection import authenticate, protect_private_message, protect_public_message
from mlspy.schedule.key_schedule import advance_epoch
from mlspy.schedule.psk import compute_psk_secret
from mlspy.schedule.transcript import confirmed_transcript_hash, interim_transcript_hash
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import LeafNodeParams, create_update_path, sign_leaf_node
from parity import assert_public_parity, public_view_for, record_rejection

# §8.3: the HPKE export label of an external init secret.
EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"
EXPORT_LABEL = "mlspy test"
EXPORT_CONTEXT = b"state check"

# §12.4: the proposal types defined by RFC 9420 that do not require an UpdatePath.
PATH_OPTIONAL = frozenset({ProposalType.add, ProposalType.psk, ProposalType.reinit})

ContentTweak = Callable[[FramedContent], FramedContent]
PathTweak = Callable[[UpdatePath], UpdatePath]


# --- Building groups ------------------------------------------------------------------------


def make_identities(n: int, prefix: str = "member") -> list[SigningIdentity]:
    return [SigningIdentity.generate(f"{prefix}-{i}".encode()) for i in range(n)]


def make_group(
    n: int = 4,
    *,
    identities: Sequence[SigningIdentity] | None = None,
    config: GroupConfig | None = None,
    extensions: tuple[Extension, ...] = (),
) -> list[Group]:
    """An ``n``-member group in epoch 1: member 0 creates it and adds the others at once.
    ``groups[i]`` sits at leaf ``i``."""
    ids = list(identities) if identities is not None else make_identities(n)
    creator = Group.create(ids[0], extensions=extensions, config=config)
    groups = [creator]
    if len(ids) > 1:
        bundles = [create_key_package(i) for i in ids[1:]]
        out = creator.commit([Proposal(Add(b.key_package)) for b in bundles])
        creator.merge_pending_commit()
        assert out.welcome is not None
        groups += [Group.join(out.welcome, b, config=config) for b in bundles]
    for i, g in enumerate(groups):
        assert g.own_leaf_index == i
        assert g.epoch_authenticator == creator.epoch_authenticator
    return groups


def deliver(groups: Sequence[Group], message: bytes, *, sender: Group | None = None) -> None:
    """Pass a handshake message to every member but its sender; merge commits (an echo of
    a member's own pending commit included)."""
    for g in groups:
        if g is sender or not g.active:
            continue
        event = g.process(message)
        if isinstance(event, StagedCommit):
            g.merge_staged_commit(event)


def commit_and_deliver(
    groups: Sequence[Group], committer: Group, proposals: Sequence[Proposal] = (), **kw: object
) -> bytes:
    """``committer`` commits, merges, and every other member processes and merges."""
    out = committer.commit(proposals, **kw)  # type: ignore[arg-type]
    committer.merge_pending_commit()
    deliver(groups, out.commit, sender=committer)
    return out.commit


# --- State checks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything observable about a member that a rejected message must not change."""

    epoch: int
    epoch_authenticator: bytes
    exported: bytes
    tree_hash: bytes
    context: bytes
    pending_proposals: int
    proposal_refs: tuple[bytes | None, ...]
    has_pending_commit: bool
    members: tuple[tuple[int, bytes, bytes], ...]
    active: bool


def snapshot(group: Group) -> Snapshot:
    pending = group.pending_proposals
    return Snapshot(
        epoch=group.epoch,
        epoch_authenticator=group.epoch_authenticator,
        exported=group.export_secret(EXPORT_LABEL, EXPORT_CONTEXT, 32),
        tree_hash=group.tree.tree_hash(),
        context=group.context.encode(),
        pending_proposals=len(pending),
        proposal_refs=tuple(q.ref for q in pending),
        has_pending_commit=group.pending_commit is not None,
        members=tuple(
            (int(m.leaf_index), m.signature_key, m.encryption_key) for m in group.members()
        ),
        active=group.active,
    )


def assert_exact(exc: BaseException, error: type[ValidationError], match: str | None) -> None:
    """``exc`` is exactly ``error`` (not a subclass), cites its section, and matches."""
    text = str(exc)
    assert type(exc) is error, f"expected {error.__name__}, got {type(exc).__name__}: {text}"
    assert error.section, f"{error.__name__} names no RFC section"
    assert text.endswith(f"(RFC 9420 §{error.section})"), text
    if match is not None:
        assert re.search(match, text, re.IGNORECASE), f"{text!r} does not match {match!r}"


def reject(
    receiver: Group,
    message: bytes,
    error: type[ValidationError],
    match: str | None = None,
    *,
    member_only: bool = False,
) -> ValidationError:
    """``receiver.process(message)`` raises exactly ``error`` and changes nothing.

    Parity (DESIGN.md, "One home per rule"): unless ``member_only`` (the rule needs the
    member's secrets, e.g. a membership or confirmation tag) or the message is a
    PrivateMessage, the receiver's public view — taken before the member processes — must
    reject the message with the same class and stay unchanged. Both the parity check and the
    error's catalogue rule id are recorded for the catalogue meta-test (``tests/parity.py``)."""
    view = public_view_for(receiver, message, member_only=member_only)
    before = snapshot(receiver)
    with pytest.raises(MLSError) as info:
        receiver.process(message)
    assert_exact(info.value, error, match)
    assert snapshot(receiver) == before, "a rejected message changed the receiver's state"
    assert isinstance(info.value, ValidationError)
    record_rejection(info.value)
    if view is not None:
        assert_public_parity(view, message, info.value)
    return info.value


def reject_any(
    receiver: Group,
    message: bytes,
    error: type[MLSError],
    match: str | None = None,
    *,
    member_only: bool = False,
) -> MLSError:
    """Like :func:`reject` for any MLSError class (DecodeError and CryptoError name no RFC
    section): ``receiver.process(message)`` raises exactly ``error`` and changes nothing;
    unless ``member_only`` or a PrivateMessage, the receiver's public view rejects it alike."""
    if issubclass(error, ValidationError):
        return reject(receiver, message, error, match, member_only=member_only)
    view = public_view_for(receiver, message, member_only=member_only)
    before = snapshot(receiver)
    with pytest.raises(MLSError) as info:
        receiver.process(message)
    assert type(info.value) is error, f"expected {error.__name__}, got {info.value!r}"
    if match is not None:
        assert re.search(match, str(info.value), re.IGNORECASE), str(info.value)
    assert snapshot(receiver) == before, "a rejected message changed the receiver's state"
    record_rejection(info.value)
    if view is not None:
        assert_public_parity(view, message, info.value)
    return info.value


def reject_edited_handshake(
    edit: Callable[[bytes, PublicMessage], bytes],
    error: type[MLSError] = DecodeError,
    match: str | None = None,
    *,
    commit: bool = False,
) -> MLSError:
    """The message-level form of a codec or framing rule: in a fresh three-member group,
    bob's genuine handshake PublicMessage — a Remove proposal, or with ``commit`` a commit
    with a path — edited by ``edit`` (given its bytes and its decoded form) is refused alike
    by carol and by her public view (:func:`reject_any`)."""
    groups = make_group(3)
    bob, carol = groups[1], groups[2]
    if commit:
        message = bob.commit([Proposal(Remove(0))]).commit
        bob.clear_pending_commit()
    else:
        message = bob.propose_remove(0)
    pm = MLSMessage.decode(message).public_message
    assert pm is not None, "handshakes are PublicMessages by default"
    return reject_any(carol, edit(message, pm), error, match)


def assert_recovers(groups: Sequence[Group], receiver: Group) -> None:
    """After a rejection the receiver still follows the group: it processes the next valid
    commit (from another member, into the same new epoch as everyone) and application
    messages in both directions."""
    sender = next(g for g in groups if g is not receiver and g.active and g.epoch == receiver.epoch)
    before = receiver.epoch
    out = sender.commit(include_pending=False)
    sender.merge_pending_commit()
    deliver([g for g in groups if g.active and g.epoch == before], out.commit, sender=sender)
    assert receiver.epoch == sender.epoch == before + 1
    assert receiver.epoch_authenticator == sender.epoch_authenticator
    assert receiver.export_secret(EXPORT_LABEL, EXPORT_CONTEXT, 32) == sender.export_secret(
        EXPORT_LABEL, EXPORT_CONTEXT, 32
    )
    assert receiver.tree.tree_hash() == sender.tree.tree_hash()
    got = receiver.process(sender.encrypt_application(b"still here?"))
    assert getattr(got, "data", None) == b"still here?"
    back = sender.process(receiver.encrypt_application(b"yes"))
    assert getattr(back, "data", None) == b"yes"


# --- Forging proposals and KeyPackages -------------------------------------------------------


def forge_proposal(
    proposer: Group,
    proposal: Proposal,
    *,
    tweak_content: ContentTweak | None = None,
) -> bytes:
    """A proposal PublicMessage from ``proposer``, signed and MACed for its current epoch,
    without the proposer's own checks."""
    cs = proposer.cipher_suite
    epoch = proposer.state.epoch
    fc = FramedContent(
        epoch.context.group_id,
        epoch.epoch,
        Sender.member(proposer.own_leaf_index),
        b"",
        ContentType.proposal,
        proposal=proposal,
    )
    if tweak_content is not None:
        fc = tweak_content(fc)
    ac = authenticate(
        cs,
        proposer.identity.signature_private_key,
        WireFormat.mls_public_message,
        fc,
        epoch.context,
    )
    pm = protect_public_message(cs, ac, epoch.context, epoch.secrets.membership_key)
    return MLSMessage.wrap(pm).encode()


@dataclass(frozen=True)
class Ref:
    """A proposal sent in its own message, to be committed by reference."""

    ref: bytes
    proposal: Proposal
    sender: int

    @property
    def por(self) -> ProposalOrRef:
        return ProposalOrRef.by_reference(self.ref)


def ref_of(group: Group, proposal_message: bytes) -> Ref:
    """The ProposalRef (§5.2), proposal and sender leaf of a proposal PublicMessage."""
    pm = MLSMessage.decode(proposal_message).public_message
    assert pm is not None and pm.content.proposal is not None
    leaf = pm.content.sender.leaf_index
    assert leaf is not None
    ref = group.cipher_suite.make_proposal_ref(pm.authenticated_content().encode())
    return Ref(ref, pm.content.proposal, leaf)


def resign_leaf(
    cs_group: Group, leaf: LeafNode, signature_private_key: bytes, leaf_index: int | None
) -> LeafNode:
    """Re-sign ``leaf`` (update/commit leaves bind the group id and leaf index)."""
    gid = cs_group.group_id if leaf_index is not None else None
    return sign_leaf_node(cs_group.cipher_suite, signature_private_key, leaf, gid, leaf_index)


def update_leaf(
    member: Group,
    *,
    leaf_index: int | None = None,
    signature_private_key: bytes | None = None,
    **changes: object,
) -> LeafNode:
    """A signed ``update`` LeafNode for ``member`` with a fresh encryption key, then
    ``changes`` applied and the result re-signed (for ``leaf_index``, default its own)."""
    ident = member.identity
    _, enc_pub = member.cipher_suite.hpke_key_pair()
    leaf = LeafNode(
        enc_pub,
        ident.signature_key,
        ident.credential,
        ident.capabilities,
        LeafNodeSource.update,
        None,
        None,
        ident.leaf_extensions,
        b"",
    )
    leaf = replace(leaf, **changes)  # type: ignore[arg-type]
    return resign_leaf(
        member,
        leaf,
        signature_private_key or ident.signature_private_key,
        member.own_leaf_index if leaf_index is None else leaf_index,
    )


def forge_key_package(
    identity: SigningIdentity,
    *,
    leaf_changes: Mapping[str, object] | None = None,
    sign_leaf: bool = True,
    sign: bool = True,
    **changes: object,
) -> KeyPackage:
    """A fresh KeyPackage for ``identity`` with ``leaf_changes`` applied to its LeafNode and
    ``changes`` to the KeyPackage, each re-signed unless told not to. A ``changes`` value may
    be a function of the unmodified KeyPackage."""
    cs = suite(identity.cipher_suite)
    original = create_key_package(identity).key_package
    leaf = original.leaf_node
    if leaf_changes:
        leaf = replace(leaf, **leaf_changes)  # type: ignore[arg-type]
        if sign_leaf:
            # An update/commit leaf signs a group id and leaf index: any will do here.
            bound = leaf.leaf_node_source != LeafNodeSource.key_package
            gid, index = (b"no group", 0) if bound else (None, None)
            leaf = sign_leaf_node(cs, identity.signature_private_key, leaf, gid, index)
    values = {k: v(original) if callable(v) else v for k, v in changes.items()}
    kp = replace(original, leaf_node=leaf, **values)  # type: ignore[arg-type]
    if sign:
        kp = resign_key_package(identity, kp)
    return kp


def resign_key_package(identity: SigningIdentity, kp: KeyPackage) -> KeyPackage:
    cs = suite(identity.cipher_suite)
    signature = cs.sign_with_label(identity.signature_private_key, KEY_PACKAGE_TBS, kp.tbs())
    return replace(kp, signature=signature)


# --- Forging commits --------------------------------------------------------------------------


def _as_por(p: Proposal | Ref | ProposalOrRef) -> ProposalOrRef:
    if isinstance(p, Ref):
        return p.por
    return p if isinstance(p, ProposalOrRef) else ProposalOrRef.by_value(p)


def _psk_secret(
    group: Group, psk_ids: Sequence[PreSharedKeyID], external: dict[bytes, bytes]
) -> bytes | None:
    """``psk_secret`` (§8.4) with the values the committer knows: ``external`` PSKs by id and
    the group's retained resumption PSKs; an unknown PSK contributes zeros."""
    if not psk_ids:
        return None
    cs = group.cipher_suite
    pairs = []
    for pid in psk_ids:
        if pid.psktype == PSKType.external:
            value = external.get(pid.psk_id or b"")
        else:
            value = group.resumption_psk(pid.psk_epoch)
        pairs.append((pid.encode(), value if value is not None else bytes(cs.nh)))
    return compute_psk_secret(cs, pairs)


def _apply_unchecked(
    tree: RatchetTree,
    resolved: Sequence[tuple[Proposal, int | None]],
    extensions: tuple[Extension, ...],
) -> tuple[tuple[Extension, ...], list[int], list[PreSharedKeyID]]:
    """Apply proposals to ``tree`` in the order of §12.3 *without any validation* (what a
    careless committer would do). Returns (extensions, added leaves, PSK ids)."""
    for p, _ in resolved:
        if isinstance(p.body, GroupContextExtensions):
            extensions = p.body.extensions
    for p, sender_leaf in resolved:
        body = p.body
        if (
            isinstance(body, Update)
            and sender_leaf is not None
            and tree.leaf(LeafIndex(sender_leaf)) is not None
        ):
            tree.update_leaf(LeafIndex(sender_leaf), body.leaf_node)
    for p, _ in resolved:
        if isinstance(p.body, Remove) and tree.leaf(LeafIndex(p.body.removed)) is not None:
            tree.remove_leaf(LeafIndex(p.body.removed))
    added = [
        int(tree.add_leaf(p.body.key_package.leaf_node))
        for p, _ in resolved
        if isinstance(p.body, Add)
    ]
    psks = [p.body.psk for p, _ in resolved if isinstance(p.body, PreSharedKey)]
    return extensions, added, psks


def _path_required(
    pors: Sequence[ProposalOrRef], resolved: Sequence[tuple[Proposal, int | None]]
) -> bool:
    if not pors or len(resolved) < len(pors):
        return True
    return any(p.proposal_type not in PATH_OPTIONAL for p, _ in resolved)


def forge_commit(
    committer: Group,
    proposals: Sequence[Proposal | Ref | ProposalOrRef] = (),
    *,
    path: bool | None = None,
    psks: dict[bytes, bytes] | None = None,
    tweak_path: PathTweak | None = None,
    tweak_content: ContentTweak | None = None,
    confirmation_tag: bytes | None = None,
    signature_private_key: bytes | None = None,
    membership_key: bytes | None = None,
    wire_format: WireFormat = WireFormat.mls_public_message,
    authenticated_data: bytes = b"",
) -> bytes:
    """A Commit from ``committer`` covering ``proposals`` — by value, by reference (a
    :class:`Ref` from :func:`ref_of`), or a bare ``ProposalOrRef`` (e.g. an unknown
    reference, which the committer cannot apply) — built without proposal validation.

    ``path`` defaults to what §12.4 requires. ``tweak_path`` edits the UpdatePath and
    ``tweak_content`` the FramedContent before signing; the confirmation tag is then computed
    honestly (from the tweaked content) unless ``confirmation_tag`` overrides it.
    ``signature_private_key`` / ``membership_key`` override the keys used to sign / MAC.
    """
    cs = committer.cipher_suite
    epoch = committer.state.epoch
    ctx = epoch.context
    ident = committer.identity
    me = committer.own_leaf_index
    pors = [_as_por(p) for p in proposals]
    resolved: list[tuple[Proposal, int | None]] = []
    for p in proposals:
        if isinstance(p, Ref):
            resolved.append((p.proposal, p.sender))
        elif isinstance(p, Proposal):
            resolved.append((p, int(me)))
        elif p.proposal is not None:
            resolved.append((p.proposal, int(me)))
    tree = epoch.tree.copy()
    extensions, added, psk_ids = _apply_unchecked(tree, resolved, ctx.extensions)
    if path is None:
        path = _path_required(pors, resolved)
    provisional = replace(ctx, epoch=ctx.epoch + 1, extensions=extensions)
    commit_secret = bytes(cs.nh)
    update_path: UpdatePath | None = None
    if path and tree.leaf(me) is not None:
        created = create_update_path(
            tree,
            me,
            LeafNodeParams(
                ident.signature_key, ident.credential, ident.capabilities, ident.leaf_extensions
            ),
            ident.signature_private_key,
            ctx.group_id,
            lambda th: replace(provisional, tree_hash=th).encode(),
            excluded_leaves=set(added),
        )
        commit_secret = created.commit_secret
        update_path = created.update_path
        if tweak_path is not None:
            update_path = tweak_path(update_path)
    provisional = replace(provisional, tree_hash=tree.tree_hash())
    fc = FramedContent(
        ctx.group_id,
        ctx.epoch,
        Sender.member(me),
        authenticated_data,
        ContentType.commit,
        commit=Commit(tuple(pors), update_path),
    )
    if tweak_content is not None:
        fc = tweak_content(fc)
    ac = authenticate(
        cs, signature_private_key or ident.signature_private_key, wire_format, fc, ctx, b""
    )
    confirmed = confirmed_transcript_hash(
        cs, epoch.interim_transcript_hash, ac.confirmed_transcript_hash_input()
    )
    new_ctx = replace(provisional, confirmed_transcript_hash=confirmed)
    psk_secret = _psk_secret(committer, psk_ids, psks or {})
    secrets = advance_epoch(
        cs, epoch.secrets.init_secret, commit_secret, psk_secret, new_ctx.encode()
    )
    tag = (
        confirmation_tag
        if confirmation_tag is not None
        else cs.mac(secrets.confirmation_key, confirmed)
    )
    signed = replace(ac, auth=replace(ac.auth, confirmation_tag=tag))
    if wire_format == WireFormat.mls_private_message:
        # A copy of the secret tree (sharing the suite): the committer's ratchet stays put.
        secret_tree = copy.deepcopy(epoch.secret_tree, {id(cs): cs})
        body = protect_private_message(cs, signed, secret_tree, epoch.secrets.sender_data_secret)
        return MLSMessage.wrap(body).encode()
    mk = membership_key if membership_key is not None else epoch.secrets.membership_key
    sender_is_member = fc.sender.sender_type == SenderType.member
    return MLSMessage.wrap(
        protect_public_message(cs, signed, ctx, mk if sender_is_member else None)
    ).encode()


def reframe(
    committer: Group,
    message: bytes,
    *,
    tweak_content: ContentTweak | None = None,
    confirmation_tag: bytes | None = None,
) -> bytes:
    """Decode a valid commit PublicMessage from ``committer``, edit it, re-sign and re-MAC it."""
    cs = committer.cipher_suite
    epoch = committer.state.epoch
    pm = MLSMessage.decode(message).public_message
    assert pm is not None
    fc = pm.content if tweak_content is None else tweak_content(pm.content)
    tag = pm.auth.confirmation_tag if confirmation_tag is None else confirmation_tag
    ac = authenticate(
        cs,
        committer.identity.signature_private_key,
        WireFormat.mls_public_message,
        fc,
        epoch.context,
        tag,
    )
    return MLSMessage.wrap(
        protect_public_message(cs, ac, epoch.context, epoch.secrets.membership_key)
    ).encode()


def forge_external_commit(
    member: Group,
    joiner: SigningIdentity,
    *,
    external_inits: int = 1,
    extra: Sequence[Proposal | Ref | ProposalOrRef] = (),
    path: bool = True,
    kem_output: bytes | None = None,
    tweak_path: PathTweak | None = None,
    confirmation_tag: bytes | None = None,
    signature_private_key: bytes | None = None,
    external_psks: dict[bytes, bytes] | None = None,
) -> bytes:
    """An external Commit by ``joiner`` against ``member``'s current GroupInfo, built without
    proposal validation: ``external_inits`` ExternalInit proposals (all with the real KEM
    output, unless ``kem_output`` replaces it), then ``extra``. ``external_psks`` are the PSK
    values the joiner uses."""
    gi_msg = MLSMessage.decode(member.group_info(with_ratchet_tree=True, external_pub=True))
    gi = gi_msg.group_info
    assert isinstance(gi, GroupInfo)
    ctx = gi.group_context
    cs = member.cipher_suite
    ext_pub = ExternalPub.find_in(gi.extensions)
    assert ext_pub is not None
    real_kem, init_secret = cs.hpke.send_export(
        ext_pub.external_pub, b"", EXTERNAL_INIT_LABEL, cs.nh
    )
    kem = real_kem if kem_output is None else kem_output
    pors = [ProposalOrRef.by_value(Proposal(ExternalInit(kem))) for _ in range(external_inits)]
    pors += [_as_por(p) for p in extra]
    resolved: list[tuple[Proposal, int | None]] = [
        (por.proposal, None) for por in pors if por.proposal is not None
    ]
    tree = member.tree
    extensions, _, psks = _apply_unchecked(tree, resolved, ctx.extensions)
    provisional = replace(ctx, epoch=ctx.epoch + 1, extensions=extensions)
    _, enc_pub = cs.hpke_key_pair()
    own = tree.add_leaf(
        LeafNode(
            enc_pub,
            joiner.signature_key,
            joiner.credential,
            joiner.capabilities,
            LeafNodeSource.update,
            None,
            None,
            joiner.leaf_extensions,
            b"",
        )
    )
    commit_secret = bytes(cs.nh)
    update_path = None
    if path:
        created = create_update_path(
            tree,
            own,
            LeafNodeParams(
                joiner.signature_key, joiner.credential, joiner.capabilities, joiner.leaf_extensions
            ),
            joiner.signature_private_key,
            ctx.group_id,
            lambda th: replace(provisional, tree_hash=th).encode(),
        )
        commit_secret = created.commit_secret
        update_path = created.update_path
        if tweak_path is not None:
            update_path = tweak_path(update_path)
    provisional = replace(provisional, tree_hash=tree.tree_hash())
    fc = FramedContent(
        ctx.group_id,
        ctx.epoch,
        Sender.new_member_commit(),
        b"",
        ContentType.commit,
        commit=Commit(tuple(pors), update_path),
    )
    ac = authenticate(
        cs,
        signature_private_key or joiner.signature_private_key,
        WireFormat.mls_public_message,
        fc,
        ctx,
        b"",
    )
    interim = interim_transcript_hash(cs, ctx.confirmed_transcript_hash, gi.confirmation_tag)
    confirmed = confirmed_transcript_hash(cs, interim, ac.confirmed_transcript_hash_input())
    new_ctx = replace(provisional, confirmed_transcript_hash=confirmed)
    psk_secret = _psk_secret(member, psks, external_psks or {})
    secrets = advance_epoch(cs, init_secret, commit_secret, psk_secret, new_ctx.encode())
    tag = (
        confirmation_tag
        if confirmation_tag is not None
        else cs.mac(secrets.confirmation_key, confirmed)
    )
    signed = replace(ac, auth=replace(ac.auth, confirmation_tag=tag))
    return MLSMessage.wrap(protect_public_message(cs, signed, ctx, None)).encode()


PSK_ID = b"shared psk"
PSK_VALUE = b"\x42" * 32


def new_kp(name: bytes = b"newcomer") -> Proposal:
    return Proposal(Add(create_key_package(SigningIdentity.generate(name)).key_package))


def share_psk(groups: list[Group]) -> None:
    for g in groups:
        g.add_external_psk(PSK_ID, PSK_VALUE)


def psk_proposal(group: Group, nonce: bytes | None = None) -> Proposal:
    pid = PreSharedKeyID.external(
        PSK_ID, os.urandom(group.cipher_suite.nh) if nonce is None else nonce
    )
    return Proposal(PreSharedKey(pid))


def propose_to_all(groups: list[Group], message: bytes, proposer: Group) -> Ref:
    """Deliver a proposal to every other member (each caches it) and return its reference."""
    deliver(groups, message, sender=proposer)
    return ref_of(proposer, message)


def reinit_proposal(group: Group, version: int = ProtocolVersion.mls10) -> Proposal:
    return Proposal(ReInit(os.urandom(32), version, group.context.cipher_suite, ()))


def leaf_of(group: Group, leaf: int) -> LeafNode:
    node = group.tree.leaf(leaf)  # type: ignore[arg-type]
    assert node is not None
    return node
