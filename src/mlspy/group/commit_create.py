"""Creating a Commit (RFC 9420 §12.4.1): proposals, UpdatePath, key schedule, Welcome.

The committer runs the receivers' rules on what it sends: the proposal list through
:func:`~mlspy.group.proposals.apply_proposals` and its new path LeafNode through
:func:`~mlspy.group.commit_validate.validate_path_leaf`, so a commit that members or the
Delivery Service would refuse never leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from mlspy.errors import GroupStateError, ValidationError
from mlspy.group.commit_receive import apply_own_updates
from mlspy.group.commit_validate import staged_commit, validate_path_leaf
from mlspy.group.framing import authenticated_for, protect_signed
from mlspy.group.identity import SigningIdentity
from mlspy.group.member_state import MemberState
from mlspy.group.proposals import AppliedProposals, QueuedProposal, apply_proposals
from mlspy.group.state import (
    CommitOutput,
    EpochState,
    PendingCommit,
    forget_consumed,
    next_epoch,
)
from mlspy.group.welcome import NewMember, create_welcome, resolve_psks
from mlspy.messages import (
    Add,
    AuthenticatedContent,
    Commit,
    ContentType,
    FramedContent,
    GroupContext,
    GroupContextExtensions,
    MLSMessage,
    PreSharedKey,
    Proposal,
    ProposalOrRef,
    Remove,
    ResumptionPSKUsage,
    Sender,
    Update,
    WireFormat,
    encode_ratchet_tree,
)
from mlspy.schedule.transcript import confirmed_transcript_hash
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import CreatedUpdatePath, LeafNodeParams, create_update_path


@dataclass(frozen=True)
class CommitOptions:
    """How :func:`create_commit` builds a commit (see ``Group.commit``)."""

    force_path: bool = False
    include_pending: bool = True
    # Which cached proposals we are willing to commit (None: all valid ones). The
    # application's rules: RFC 9420 §12.2 has the committer include what is valid "according
    # to application policy", and a receiver must not require the rest (§12.4).
    admit: Callable[[QueuedProposal], bool] | None = None
    authenticated_data: bytes = b""
    ratchet_tree_in_welcome: bool | None = None
    resumption_usage: ResumptionPSKUsage | None = None
    wire_format: WireFormat | None = None
    # Our leaf's next signing identity (a rotated signature key of the same credential): the
    # UpdatePath's LeafNode carries and is signed with it; the commit itself is signed with
    # the current one, which receivers know (§12.4.2).
    new_identity: SigningIdentity | None = None


def create_commit(
    state: MemberState, proposals: Iterable[Proposal], options: CommitOptions
) -> CommitOutput:
    """``Group.commit``: apply the proposals to a copy of the tree, refresh our path if
    needed, run the key schedule, sign and protect, and build the Welcome; the result waits in
    ``state.pending`` until merged."""
    state.require_active()
    if state.pending is not None:
        raise GroupStateError("a commit is already pending: merge or clear it first")
    me = Sender.member(state.own_leaf)
    queued, refs = _proposals_to_cover(state, proposals, options.include_pending, options.admit)
    epoch = state.epoch
    tree = epoch.tree.copy()
    applied = apply_proposals(
        state.cs,
        epoch.context,
        tree,
        queued,
        me,
        checks=state.config.leaf_checks(),
        psk_available=state.has_psk,
        resumption_usage=options.resumption_usage,
    )
    private = epoch.private.copy() if epoch.private is not None else None
    if private is None:
        raise GroupStateError("no private tree state")
    apply_own_updates(state, queued, private)
    private.prune(tree)
    provisional = replace(epoch.context, epoch=epoch.epoch + 1, extensions=applied.extensions)
    created = None
    if applied.path_required or options.force_path or options.new_identity is not None:
        created = _update_path(state, tree, provisional, applied, options.new_identity)
        private = created.private
    provisional = replace(provisional, tree_hash=tree.tree_hash())
    commit = Commit(tuple(refs), created.update_path if created else None)
    ac = _sign(state, commit, options)
    psk_secret = resolve_psks(state.cs, applied.psks, state.psk_value)
    new_epoch = next_epoch(
        state.cs,
        state.config,
        replace(
            provisional,
            confirmed_transcript_hash=confirmed_transcript_hash(
                state.cs, epoch.interim_transcript_hash, ac.confirmed_transcript_hash_input()
            ),
        ),
        tree,
        private,
        epoch.secrets.init_secret,
        created.commit_secret if created else bytes(state.cs.nh),
        psk_secret,
    )
    return _finish(state, ac, applied, new_epoch, psk_secret, created, options)


def _proposals_to_cover(
    state: MemberState,
    proposals: Iterable[Proposal],
    include_pending: bool,
    admit: Callable[[QueuedProposal], bool] | None,
) -> tuple[list[QueuedProposal], list[ProposalOrRef]]:
    me = Sender.member(state.own_leaf)
    queued: list[QueuedProposal] = []
    refs: list[ProposalOrRef] = []
    if include_pending:
        cached = [q for q in state.proposals.values() if admit is None or admit(q)]
        for q in select_pending(state, cached):
            queued.append(q)
            refs.append(ProposalOrRef.by_reference(q.ref or b""))
    for p in proposals:
        queued.append(QueuedProposal(p, me, None))
        refs.append(ProposalOrRef.by_value(p))
    return queued, refs


def _update_path(
    state: MemberState,
    tree: RatchetTree,
    provisional: GroupContext,
    applied: AppliedProposals,
    identity: SigningIdentity | None = None,
) -> CreatedUpdatePath:
    """A fresh UpdatePath for our leaf (with ``identity``'s key, if given); its LeafNode
    passes the receivers' checks."""
    ident = identity or state.identity
    old_tree = state.epoch.tree
    created = create_update_path(
        tree,
        state.own_leaf,
        LeafNodeParams(
            ident.signature_key, ident.credential, ident.capabilities, ident.leaf_extensions
        ),
        ident.signing_key,
        state.group_id,
        lambda th: replace(provisional, tree_hash=th).encode(),
        excluded_leaves={i for i, _ in applied.added},
        rng=state.config.provider.rng,
    )
    leaf = tree.leaf(state.own_leaf)
    if leaf is None:  # pragma: no cover - create_update_path just set it
        raise GroupStateError("our leaf is blank after creating a path")
    validate_path_leaf(
        state.cs,
        state.group_id,
        old_tree,
        tree,
        leaf,
        state.own_leaf,
        applied,
        state.config.leaf_checks(),
    )
    return created


def _sign(state: MemberState, commit: Commit, options: CommitOptions) -> AuthenticatedContent:
    fc = FramedContent(
        state.group_id,
        state.epoch.epoch,
        Sender.member(state.own_leaf),
        options.authenticated_data,
        ContentType.commit,
        commit=commit,
    )
    return authenticated_for(
        state.cs,
        state.epoch,
        state.identity.signing_key,
        fc,
        handshake_wire_format(state, options.wire_format),
    )


def handshake_wire_format(state: MemberState, requested: WireFormat | None) -> WireFormat:
    """The wire format of one handshake message: the group's default, or ``requested`` where
    the group's policy allows choosing per message."""
    default = state.config.handshake_wire_format
    if requested is None or requested == default:
        return default
    if not state.config.allow_wire_format_override:
        raise GroupStateError(
            f"this group sends handshakes as {default.name} only (GroupConfig policy)"
        )
    if requested not in (WireFormat.mls_public_message, WireFormat.mls_private_message):
        raise GroupStateError(f"a handshake cannot be sent as {requested.name}")
    return requested


def _finish(
    state: MemberState,
    ac: AuthenticatedContent,
    applied: AppliedProposals,
    new_epoch: EpochState,
    psk_secret: bytes | None,
    created: CreatedUpdatePath | None,
    options: CommitOptions,
) -> CommitOutput:
    """Confirmation tag, protection, GroupInfo and Welcome; the commit becomes pending."""
    cs = state.cs
    epoch = state.epoch
    signed = replace(ac, auth=replace(ac.auth, confirmation_tag=new_epoch.confirmation_tag))
    rng = state.config.provider.rng
    message = protect_signed(cs, epoch, signed, padding_block=state.config.padding_block, rng=rng)
    group_info = state.group_info(new_epoch, options.ratchet_tree_in_welcome, None)
    welcome = None
    if applied.added:
        welcome = create_welcome(
            cs,
            group_info,
            new_epoch.secrets.joiner_secret,
            applied.psks,
            psk_secret,
            [NewMember(i, kp) for i, kp in applied.added],
            state.own_leaf,
            created.path_secrets if created else None,
            rng=rng,
        )
    # The Welcome is made: joiner, welcome, epoch and encryption secrets are consumed (§9.2)
    # and must not wait in the pending commit (nor in its stored form) for the merge.
    new_epoch.secrets = forget_consumed(new_epoch.secrets)
    staged = staged_commit(
        Sender.member(state.own_leaf),
        state.own_leaf,
        applied,
        epoch.tree,
        new_epoch.tree,
        new_epoch.epoch,
        options.authenticated_data,
        own=True,
        new_state=new_epoch,
    )
    wire = message.encode()
    state.pending = PendingCommit(signed.encode(), wire, staged)
    return CommitOutput(
        wire,
        MLSMessage.wrap(welcome).encode() if welcome else None,
        MLSMessage.wrap(group_info).encode(),
        encode_ratchet_tree(new_epoch.tree.to_nodes()),
    )


def _preselect(state: MemberState, pending: list[QueuedProposal]) -> list[QueuedProposal]:
    """The committer's choices of §12.2: no own Update or own removal; per leaf a Remove
    rather than an Update, else the most recent Update; one GroupContextExtensions (the last);
    one Add per client; one proposal per PSK id."""
    chosen: dict[tuple[str, object], QueuedProposal] = {}
    for q in pending:
        slot = _slot(q, state.own_leaf)
        if slot is None:
            continue
        kind, key, latest_wins = slot
        if latest_wins or (kind, key) not in chosen:
            chosen[(kind, key)] = q
    removed = {key for kind, key in chosen if kind == "remove"}
    keep = {id(q) for (kind, key), q in chosen.items() if not (kind == "update" and key in removed)}
    return [q for q in pending if id(q) in keep]


def _slot(q: QueuedProposal, me: int) -> tuple[str, object, bool] | None:
    """Which choice of §12.2 a proposal competes for — (kind, key, whether the latest wins)
    — or None when the committer never covers it (its own Update or removal)."""
    body = q.proposal.body
    if isinstance(body, Remove):
        return None if body.removed == me else ("remove", body.removed, False)
    if isinstance(body, Update):
        leaf = q.sender.leaf_index
        return None if leaf is None or leaf == me else ("update", leaf, True)
    if isinstance(body, GroupContextExtensions):
        return ("gce", None, True)
    if isinstance(body, Add):
        return ("add", body.key_package.leaf_node.signature_key, False)
    if isinstance(body, PreSharedKey):
        return ("psk", body.psk.encode(), False)
    return ("other", id(q), False)


def select_pending(state: MemberState, pending: list[QueuedProposal]) -> list[QueuedProposal]:
    """The cached proposals a commit should cover: all valid ones (§12.4 SHOULD), chosen as
    §12.2 recommends; any that still fail validation are left out one by one."""
    chosen = _preselect(state, pending)
    me = Sender.member(state.own_leaf)
    epoch = state.epoch
    checks = state.config.leaf_checks()

    def valid(candidate: list[QueuedProposal]) -> bool:
        try:
            apply_proposals(
                state.cs,
                epoch.context,
                epoch.tree.copy(),
                candidate,
                me,
                checks=checks,
                psk_available=state.has_psk,
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
