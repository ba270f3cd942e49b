"""Creating a Commit (RFC 9420 §12.4.1): proposals, UpdatePath, key schedule, Welcome."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from mlspy.errors import (
    GroupStateError,
    ValidationError,
)
from mlspy.group.framing import (
    authenticated_for,
    protect_signed,
)
from mlspy.group.key_package import (
    validate_key_package,
)
from mlspy.group.proposals import (
    QueuedProposal,
    apply_proposals,
    check_sender_may_propose,
)
from mlspy.group.state import (
    CommitOutput,
    PendingCommit,
    StagedCommit,
    forget_consumed,
)
from mlspy.group.welcome import (
    NewMember,
    create_welcome,
    resolve_psks,
)
from mlspy.messages import (
    Add,
    Commit,
    ContentType,
    GroupContextExtensions,
    MLSMessage,
    PreSharedKey,
    Proposal,
    ProposalOrRef,
    Remove,
    ResumptionPSKUsage,
    Sender,
    Update,
    encode_ratchet_tree,
)
from mlspy.tree.treekem import (
    CreatedUpdatePath,
    LeafNodeParams,
    create_update_path,
)

if TYPE_CHECKING:
    from mlspy.group.group import Group


def create_commit(
    group: Group,
    proposals: Iterable[Proposal] = (),
    *,
    force_path: bool = False,
    include_pending: bool = True,
    authenticated_data: bytes = b"",
    ratchet_tree_in_welcome: bool | None = None,
    resumption_usage: ResumptionPSKUsage | None = None,
) -> CommitOutput:
    """:meth:`Group.commit`: apply the proposals to a copy of the tree, refresh our path if
    needed, run the key schedule, sign and protect, and build the Welcome; the result waits in
    ``group._pending``."""
    group._require_active()
    if group._pending is not None:
        raise GroupStateError("a commit is already pending: merge or clear it first")
    me = Sender.member(group._own_leaf)
    queued: list[QueuedProposal] = []
    refs: list[ProposalOrRef] = []
    if include_pending:
        for q in select_pending(group, list(group._proposals.values())):
            queued.append(q)
            refs.append(ProposalOrRef.by_reference(q.ref or b""))
    for p in proposals:
        check_sender_may_propose(p, me)
        if isinstance(p.body, Add):
            validate_key_package(
                p.body.key_package,
                cipher_suite=group.context.cipher_suite,
                now=group._config.now(),
            )
        queued.append(QueuedProposal(p, me, None))
        refs.append(ProposalOrRef.by_value(p))
    epoch = group._epoch
    cs = group._cs
    tree = epoch.tree.copy()
    applied = apply_proposals(
        cs,
        epoch.context,
        tree,
        queued,
        me,
        now=group._config.now(),
        psk_available=group._has_psk,
        resumption_usage=resumption_usage,
        credential_validator=group._config.credential_validator,
    )
    private = epoch.private.copy() if epoch.private is not None else None
    if private is None:
        raise GroupStateError("no private tree state")
    group._apply_own_updates(queued, private)
    private.prune(tree)
    provisional = replace(epoch.context, epoch=epoch.epoch + 1, extensions=applied.extensions)
    created: CreatedUpdatePath | None = None
    commit_secret = bytes(cs.nh)
    if applied.path_required or force_path:
        ident = group._identity
        created = create_update_path(
            tree,
            group._own_leaf,
            LeafNodeParams(
                ident.signature_key, ident.credential, ident.capabilities, ident.leaf_extensions
            ),
            ident.signature_private_key,
            group.group_id,
            lambda th: replace(provisional, tree_hash=th).encode(),
            excluded_leaves={i for i, _ in applied.added},
        )
        commit_secret = created.commit_secret
        private = created.private
    provisional = replace(provisional, tree_hash=tree.tree_hash())
    commit = Commit(tuple(refs), created.update_path if created else None)
    fc = group._frame(ContentType.commit, authenticated_data, commit=commit)
    ac = authenticated_for(
        cs, epoch, group._identity.signature_private_key, fc, group._config.handshake_wire_format
    )
    psk_secret = resolve_psks(cs, applied.psks, group._psk_value)
    new_epoch = group._next_epoch(
        epoch,
        ac,
        provisional,
        tree,
        private,
        epoch.secrets.init_secret,
        commit_secret,
        psk_secret,
    )
    signed = replace(ac, auth=replace(ac.auth, confirmation_tag=new_epoch.confirmation_tag))
    message = protect_signed(cs, epoch, signed, padding_block=group._config.padding_block)

    group_info = group._group_info(new_epoch, ratchet_tree_in_welcome, None)
    welcome = None
    if applied.added:
        welcome = create_welcome(
            cs,
            group_info,
            new_epoch.secrets.joiner_secret,
            applied.psks,
            psk_secret,
            [NewMember(i, kp) for i, kp in applied.added],
            group._own_leaf,
            created.path_secrets if created else None,
        )
    # The Welcome is made: joiner, welcome, epoch and encryption secrets are consumed (§9.2)
    # and must not wait in the pending commit (nor in its stored form) for the merge.
    new_epoch.secrets = forget_consumed(new_epoch.secrets)
    staged = StagedCommit(
        sender=me,
        epoch=new_epoch,
        added=applied.added,
        removed=applied.removed,
        updated=applied.updated,
        psks=applied.psks,
        reinit=applied.reinit,
        self_removed=False,
        own=True,
        authenticated_data=authenticated_data,
    )
    wire = message.encode()
    group._pending = PendingCommit(signed.encode(), wire, staged)
    return CommitOutput(
        wire,
        MLSMessage.wrap(welcome).encode() if welcome else None,
        MLSMessage.wrap(group_info).encode(),
        encode_ratchet_tree(new_epoch.tree.to_nodes()),
    )


def _preselect(group: Group, pending: list[QueuedProposal]) -> list[QueuedProposal]:
    """The committer's choices of §12.2: no own Update or own removal; per leaf a Remove
    rather than an Update, else the most recent Update; one GroupContextExtensions (the last);
    one Add per client; one proposal per PSK id."""
    me = group._own_leaf
    removes: dict[int, QueuedProposal] = {}
    updates: dict[int, QueuedProposal] = {}
    gce: QueuedProposal | None = None
    adds: dict[bytes, QueuedProposal] = {}
    psks: dict[bytes, QueuedProposal] = {}
    others: list[QueuedProposal] = []
    for q in pending:
        body = q.proposal.body
        if isinstance(body, Remove):
            if body.removed != me:
                removes.setdefault(body.removed, q)
        elif isinstance(body, Update):
            if q.sender.leaf_index != me and q.sender.leaf_index is not None:
                updates[q.sender.leaf_index] = q  # the most recent wins
        elif isinstance(body, GroupContextExtensions):
            gce = q
        elif isinstance(body, Add):
            adds.setdefault(body.key_package.leaf_node.signature_key, q)
        elif isinstance(body, PreSharedKey):
            psks.setdefault(body.psk.encode(), q)
        else:
            others.append(q)
    keep = {id(q) for q in removes.values()}
    keep |= {id(q) for leaf, q in updates.items() if leaf not in removes}
    keep |= {id(q) for q in adds.values()} | {id(q) for q in psks.values()}
    keep |= {id(q) for q in others}
    if gce is not None:
        keep.add(id(gce))
    return [q for q in pending if id(q) in keep]


def select_pending(group: Group, pending: list[QueuedProposal]) -> list[QueuedProposal]:
    """The cached proposals a commit should cover: all valid ones (§12.4 SHOULD), chosen as
    §12.2 recommends; any that still fail validation are left out one by one."""
    chosen = _preselect(group, pending)
    me = Sender.member(group._own_leaf)
    epoch = group._epoch

    def valid(candidate: list[QueuedProposal]) -> bool:
        try:
            apply_proposals(
                group._cs,
                epoch.context,
                epoch.tree.copy(),
                candidate,
                me,
                now=group._config.now(),
                psk_available=group._has_psk,
            )
        except ValidationError:
            return False
        return True

    if valid(chosen):
        return chosen
    kept: list[QueuedProposal] = []
    for q in chosen:
        if valid([*kept, q]):
            kept.append(q)
    return kept
