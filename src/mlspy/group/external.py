"""Joining by external commit (RFC 9420 §12.4.3.2) and external proposals (§12.1.8).

An external joiner needs a GroupInfo with the ``external_pub`` extension and the tree. It
derives the new epoch's ``init_secret`` with the HPKE exporter against ``external_pub``
(§8.3), sends it as an ExternalInit proposal inside its own Commit (sender
``new_member_commit``, always with a path, proposals only by value), and merges it like any
commit of its own once the Delivery Service accepted it. Optionally it removes a prior
appearance of itself (resync) and injects external PSKs. The commit passes the receivers'
rules (:mod:`mlspy.group.commit_validate`) before it leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from mlspy.crypto import CipherSuiteProvider, MessageSigner, suite
from mlspy.errors import DecodeError, ExternalCommitError, MLSError, UsageError
from mlspy.group.commit_validate import check_resync, staged_commit, validate_path_leaf
from mlspy.group.framing import decode_as
from mlspy.group.group import Group
from mlspy.group.identity import SigningIdentity
from mlspy.group.member_state import Lifecycle, MemberState
from mlspy.group.proposals import (
    AppliedProposals,
    QueuedProposal,
    apply_proposals,
)
from mlspy.group.state import (
    EXTERNAL_INIT_LABEL,
    EpochState,
    GroupConfig,
    PendingCommit,
    next_epoch,
    public_epoch,
)
from mlspy.group.welcome import resolve_psks, validate_group_tree, verify_group_info
from mlspy.messages import (
    Add,
    AuthenticatedContent,
    Commit,
    ContentType,
    ExternalInit,
    ExternalPub,
    FramedContent,
    GroupContext,
    GroupInfo,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    PSKType,
    Remove,
    Sender,
    WireFormat,
    decode_ratchet_tree,
)
from mlspy.messages import RatchetTree as RatchetTreeExtension
from mlspy.protection import authenticate, protect_public_message
from mlspy.provider import Provider
from mlspy.schedule.transcript import confirmed_transcript_hash, interim_transcript_hash
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import CreatedUpdatePath, LeafNodeParams, create_update_path


def _group_info(data: bytes | MLSMessage | GroupInfo) -> GroupInfo:
    return data if isinstance(data, GroupInfo) else decode_as(data, "group_info")


def join_external(
    group_info: bytes | MLSMessage | GroupInfo,
    identity: SigningIdentity,
    *,
    ratchet_tree: bytes | None = None,
    remove_prior: int | None = None,
    external_psks: dict[bytes, bytes] | None = None,
    psk_ids: Sequence[bytes] = (),
    authenticated_data: bytes = b"",
    config: GroupConfig | None = None,
) -> tuple[Group, bytes]:
    """Join a group by external commit (§12.4.3.2), the one commit flow: returns our group,
    in the GroupInfo's epoch with the commit pending, and the commit to send. Once the DS
    accepted it, ``group.merge_pending_commit()`` starts the new epoch; if refused, discard."""
    config = config or GroupConfig()
    checks = config.leaf_checks()
    gi, cs, old_tree, external_pub = _joinable(group_info, identity, ratchet_tree, config)
    ctx = gi.group_context
    provider = config.provider
    kem_output, init_secret = cs.hpke.send_export(
        external_pub, b"", EXTERNAL_INIT_LABEL, cs.nh, rng=provider.rng
    )
    psks = dict(external_psks or {})
    proposals = _external_proposals(cs, kem_output, remove_prior, psk_ids, psks, provider)
    me = Sender.new_member_commit()
    tree = old_tree.copy()
    queued = [QueuedProposal(p, me, None) for p in proposals]

    def available(psk: PreSharedKeyID) -> bool:
        return psk.psktype == PSKType.external and (psk.psk_id or b"") in psks

    applied = apply_proposals(cs, ctx, tree, queued, me, checks=checks, psk_available=available)
    own_leaf, created = _occupy_and_refresh(cs, tree, identity, ctx, applied, provider)
    commit = Commit(tuple(ProposalOrRef.by_value(p) for p in proposals), created.update_path)
    check_resync(old_tree, applied, created.update_path, checks.credential_validator)
    leaf = created.update_path.leaf_node
    validate_path_leaf(
        cs, ctx.group_id, old_tree, tree, leaf, own_leaf, applied, checks, joiner=True
    )
    psk_secret = resolve_psks(
        cs, applied.psks, lambda p: psks.get(p.psk_id or b"") if p.psk_id else None
    )
    signed, epoch, interim = _sign_and_schedule(
        cs,
        identity,
        gi,
        commit,
        authenticated_data,
        replace(
            ctx, epoch=ctx.epoch + 1, tree_hash=tree.tree_hash(), extensions=applied.extensions
        ),
        lambda context: next_epoch(
            cs,
            config,
            context,
            tree,
            created.private,
            init_secret,
            created.commit_secret,
            psk_secret,
        ),
    )
    message = MLSMessage.wrap(protect_public_message(cs, signed, ctx, None)).encode()
    staged = staged_commit(
        me,
        own_leaf,
        applied,
        old_tree,
        tree,
        epoch.epoch,
        authenticated_data,
        own=True,
        new_state=epoch,
    )
    # Until the commit is merged we hold the GroupInfo's epoch, without its secrets.
    current = public_epoch(cs, ctx, old_tree, interim, gi.confirmation_tag)
    pending = PendingCommit(signed.encode(), message, staged)
    state = MemberState(identity, config, own_leaf, current, pending=pending, external_psks=psks)
    state.lifecycle = Lifecycle.JOINING
    return Group(state), message


def _sign_and_schedule(
    cs: CipherSuiteProvider,
    identity: SigningIdentity,
    gi: GroupInfo,
    commit: Commit,
    authenticated_data: bytes,
    provisional: GroupContext,
    schedule: Callable[[GroupContext], EpochState],
) -> tuple[AuthenticatedContent, EpochState, bytes]:
    """Sign the external commit, then derive its epoch: the confirmation tag follows from the
    signature (the confirmed transcript hash covers it), so sign with a placeholder tag and
    fill it in (§8.2). Returns the signed content, the new epoch and the GroupInfo epoch's
    interim transcript hash."""
    ctx = gi.group_context
    fc = FramedContent(
        ctx.group_id,
        ctx.epoch,
        Sender.new_member_commit(),
        authenticated_data,
        ContentType.commit,
        commit=commit,
    )
    ac = authenticate(cs, identity.signing_key, WireFormat.mls_public_message, fc, ctx, b"")
    interim = interim_transcript_hash(cs, ctx.confirmed_transcript_hash, gi.confirmation_tag)
    confirmed = confirmed_transcript_hash(cs, interim, ac.confirmed_transcript_hash_input())
    epoch = schedule(replace(provisional, confirmed_transcript_hash=confirmed))
    signed = replace(ac, auth=replace(ac.auth, confirmation_tag=epoch.confirmation_tag))
    return signed, epoch, interim


def _joinable(
    group_info: bytes | MLSMessage | GroupInfo,
    identity: SigningIdentity,
    ratchet_tree: bytes | None,
    config: GroupConfig,
) -> tuple[GroupInfo, CipherSuiteProvider, RatchetTree, bytes]:
    """The GroupInfo, its suite, its validated tree and its ``external_pub`` (§12.4.3.1)."""
    gi = _group_info(group_info)
    ctx = gi.group_context
    try:
        cs = suite(ctx.cipher_suite)
    except MLSError as exc:
        raise ExternalCommitError(str(exc), rule=getattr(exc, "rule", None)) from exc
    if identity.cipher_suite != ctx.cipher_suite:
        raise UsageError("the identity's cipher suite is not the group's")
    try:
        tree_ext = RatchetTreeExtension.find_in(gi.extensions)
        ext_pub = ExternalPub.find_in(gi.extensions)
    except DecodeError as exc:
        raise ExternalCommitError(f"malformed GroupInfo extension: {exc}") from exc
    if tree_ext is not None:
        tree = RatchetTree.from_nodes(cs, tree_ext.ratchet_tree)
    elif ratchet_tree is not None:
        tree = RatchetTree.from_nodes(cs, decode_ratchet_tree(ratchet_tree))
    else:
        raise ExternalCommitError("no ratchet tree: pass it out of band", rule="EC-10")
    if ext_pub is None:
        raise ExternalCommitError("the GroupInfo has no external_pub extension", rule="EC-09")
    verify_group_info(cs, gi, tree, signature_rule="WG-18")
    validate_group_tree(tree, ctx, config, tree_hash_rule="WG-19")
    return gi, cs, tree, ext_pub.external_pub


def _external_proposals(
    cs: CipherSuiteProvider,
    kem_output: bytes,
    remove_prior: int | None,
    psk_ids: Sequence[bytes],
    psks: dict[bytes, bytes],
    provider: Provider,
) -> list[Proposal]:
    proposals = [Proposal(ExternalInit(kem_output))]
    if remove_prior is not None:
        proposals.append(Proposal(Remove(remove_prior)))
    for psk_id in psk_ids:
        if psk_id not in psks:
            raise UsageError("unknown external PSK id: pass its value in external_psks")
        nonce = provider.random(cs.nh)
        proposals.append(Proposal(PreSharedKey(PreSharedKeyID.external(psk_id, nonce))))
    return proposals


def _occupy_and_refresh(
    cs: CipherSuiteProvider,
    tree: RatchetTree,
    identity: SigningIdentity,
    ctx: GroupContext,
    applied: AppliedProposals,
    provider: Provider,
) -> tuple[LeafIndex, CreatedUpdatePath]:
    """Occupy the leftmost blank leaf, then refresh its whole path (§12.4.3.2)."""
    _, enc_pub = cs.hpke_key_pair(rng=provider.rng)
    placeholder = LeafNode(
        enc_pub,
        identity.signature_key,
        identity.credential,
        identity.capabilities,
        LeafNodeSource.update,
        None,
        None,
        identity.leaf_extensions,
        b"",
    )
    own_leaf = tree.add_leaf(placeholder)
    provisional = replace(ctx, epoch=ctx.epoch + 1, extensions=applied.extensions)
    created = create_update_path(
        tree,
        own_leaf,
        LeafNodeParams(
            identity.signature_key,
            identity.credential,
            identity.capabilities,
            identity.leaf_extensions,
        ),
        identity.signing_key,
        ctx.group_id,
        lambda th: replace(provisional, tree_hash=th).encode(),
        rng=provider.rng,
    )
    return own_leaf, created


def external_proposal(
    group_info: bytes | MLSMessage | GroupInfo,
    proposal: Proposal,
    signature_private_key: bytes | MessageSigner,
    sender_index: int,
    authenticated_data: bytes = b"",
) -> bytes:
    """A proposal from an ``external`` sender listed in the group's ``external_senders``
    extension at ``sender_index`` (§12.1.8), as a PublicMessage for the GroupInfo's epoch."""
    gi = _group_info(group_info)
    ctx = gi.group_context
    cs = suite(ctx.cipher_suite)
    fc = FramedContent(
        ctx.group_id,
        ctx.epoch,
        Sender.external(sender_index),
        authenticated_data,
        ContentType.proposal,
        proposal=proposal,
    )
    ac = authenticate(cs, signature_private_key, WireFormat.mls_public_message, fc, None)
    return MLSMessage.wrap(protect_public_message(cs, ac, None, None)).encode()


def new_member_add_proposal(
    group_id: bytes,
    epoch: int,
    key_package: KeyPackage,
    signature_private_key: bytes | MessageSigner,
    authenticated_data: bytes = b"",
) -> bytes:
    """A would-be member asking to be added: an Add of its own KeyPackage with sender
    ``new_member_proposal`` (§12.1.8), signed with the KeyPackage's signature key."""
    cs = suite(key_package.cipher_suite)
    fc = FramedContent(
        group_id,
        epoch,
        Sender.new_member_proposal(),
        authenticated_data,
        ContentType.proposal,
        proposal=Proposal(Add(key_package)),
    )
    ac = authenticate(cs, signature_private_key, WireFormat.mls_public_message, fc, None)
    return MLSMessage.wrap(protect_public_message(cs, ac, None, None)).encode()
