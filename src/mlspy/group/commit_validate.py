"""The publicly checkable rules of proposals and commits (RFC 9420 §12.1, §12.2, §12.4.2,
§12.4.3.2): their one home.

Theory of operation. Everything here needs only public data — the GroupContext, the ratchet
tree, the interim transcript hash and the proposals cached this epoch — so the public view of a
group (:class:`~mlspy.group.public_group.PublicGroup`, what a Delivery Service runs) and every
member run exactly this code; a member then adds only what needs its secrets (membership tag,
path decryption, key schedule, confirmation tag). The committer runs the same steps on what it
is about to send. :func:`validate_commit` is the receiver's whole sequence:

1. who may commit (§12.4.2) and the proposals it covers, resolved from references (§12.4);
2. the proposal list and each proposal, applied to a copy of the tree (§12.2, §12.3;
   :func:`~mlspy.group.proposals.apply_proposals`);
3. whether a path is required, and for an external commit that a Remove only resyncs the
   joiner itself (§12.4.3.2);
4. the committer's path LeafNode (§7.3: source, signature, lifetime, capabilities, the
   Authentication Service, signature key unique, credential type supported by all);
5. the UpdatePath's structure merged into the tree (§7.5, §7.9.2), then the new tree hash,
   the confirmed and interim transcript hashes (§8.2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from mlspy.credentials import CredentialValidator, same_member, validate_credential
from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import (
    CommitError,
    ExternalCommitError,
    LeafNodeError,
    PathRequiredError,
    ProposalError,
    ProposalListError,
)
from mlspy.group.policy import check_external_join
from mlspy.group.proposals import (
    AppliedProposals,
    QueuedProposal,
    apply_proposals,
    check_leaf_supports_group,
    check_sender_may_propose,
)
from mlspy.group.state import EpochState, LeafChecks, Member, StagedCommit
from mlspy.messages import (
    Add,
    AuthenticatedContent,
    Commit,
    GroupContext,
    LeafNode,
    LeafNodeSource,
    PreSharedKeyID,
    Proposal,
    ProposalOrRefType,
    Remove,
    Sender,
    SenderType,
    Update,
    UpdatePath,
)
from mlspy.schedule.transcript import confirmed_transcript_hash, interim_transcript_hash
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import merge_update_path
from mlspy.tree.validation import check_credential_support, validate_leaf_node

PskAvailable = Callable[[PreSharedKeyID], bool]


@dataclass(frozen=True)
class ValidatedCommit:
    """A commit that passed every public rule, and the public state it leads to.

    ``provisional_context`` is the new epoch's GroupContext before its confirmed transcript
    hash (what UpdatePath secrets are encrypted against, §12.4.2); ``context`` is the new
    epoch's GroupContext; ``filtered_direct_path`` is the committer's, for path decryption."""

    sender: Sender
    proposals: tuple[QueuedProposal, ...]
    applied: AppliedProposals
    tree: RatchetTree
    committer: LeafIndex | None
    filtered_direct_path: tuple[NodeIndex, ...]
    provisional_context: GroupContext
    context: GroupContext
    interim_transcript_hash: bytes
    authenticated_data: bytes

    @property
    def external(self) -> bool:
        return self.sender.sender_type == SenderType.new_member_commit


def check_committer_type(sender: Sender) -> None:
    """Only members and external joiners commit (§12.4.2, §12.4.3.2)."""
    if sender.sender_type not in (SenderType.member, SenderType.new_member_commit):
        raise CommitError(f"a {sender.sender_type.name} sender may not commit", rule="CM-10")


def resolve_proposals(
    commit: Commit, sender: Sender, cache: Mapping[bytes, QueuedProposal]
) -> list[QueuedProposal]:
    """The proposals a commit covers, each with its original sender (§12.4)."""
    queued: list[QueuedProposal] = []
    for por in commit.proposals:
        if por.type == ProposalOrRefType.proposal and por.proposal is not None:
            queued.append(QueuedProposal(por.proposal, sender, None))
            continue
        cached = cache.get(por.reference or b"")
        if cached is None:
            raise ProposalListError("the commit references an unknown proposal", rule="CM-11")
        queued.append(cached)
    return queued


def validate_proposal(
    cs: CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    proposal: Proposal,
    sender: Sender,
    checks: LeafChecks,
) -> None:
    """A proposal on receipt (§12.1): who may send it, and for Add, Update and Remove
    everything checkable before a committer is known, by applying it alone to a scratch
    tree. The rules that depend on the committer (its own update or removal) and on the
    other proposals of the list are checked when a commit covers it."""
    check_sender_may_propose(proposal, sender)
    if isinstance(proposal.body, Add | Update | Remove):
        apply_proposals(
            cs, context, tree.copy(), [QueuedProposal(proposal, sender, b"")], None, checks=checks
        )


def validate_path_leaf(
    cs: CipherSuiteProvider,
    group_id: bytes,
    old_tree: RatchetTree,
    new_tree: RatchetTree,
    leaf: LeafNode,
    committer: LeafIndex,
    applied: AppliedProposals,
    checks: LeafChecks,
    *,
    joiner: bool = False,
) -> None:
    """The committer's new LeafNode (§7.3, §12.4.2): a valid ``commit`` leaf for its
    position, supporting the group, accepted by the Authentication Service, with a
    signature key no other member holds and a credential type every member supports.
    ``new_tree`` is the tree after the proposals (the leaf not yet in it); ``joiner`` says
    it is an external joiner's (§12.4.3.2: some failures are catalogued apart)."""
    try:
        validate_leaf_node(
            cs,
            leaf,
            group_id=group_id,
            leaf_index=committer,
            expected_source=LeafNodeSource.commit,
            now=checks.now,
            max_lifetime=checks.max_lifetime,
        )
    except LeafNodeError as exc:
        rule = "EC-05" if joiner and exc.rule == "LN-19" else exc.rule
        raise CommitError(f"invalid committer leaf: {exc}", rule=rule) from exc
    check_leaf_supports_group(leaf, applied.extensions, rule="LN-08")
    if joiner:
        check_external_join(
            applied.extensions, old_tree, applied.removed, leaf, checks.credential_validator
        )
    if checks.credential_validator is not None:
        validate_credential(
            checks.credential_validator,
            leaf.credential,
            leaf.signature_key,
            rule="EC-07" if joiner else "LN-30",
        )
    holder = new_tree.find_signature_key(leaf.signature_key)
    if holder is not None and holder != committer:
        raise CommitError(
            "the committer's new signature key belongs to another member",
            rule="EC-06" if joiner else "LN-26",
        )
    current = old_tree.leaf(committer)  # before this commit; None for a joiner
    if current is None or (
        leaf.credential.credential_type != current.credential.credential_type
        or set(leaf.capabilities.credentials) != set(current.capabilities.credentials)
    ):
        # A new credential type or capability set must work with every member (§7.3): O(n),
        # so only when it changed (external joiners always).
        check_credential_support(new_tree, rule="LN-12", with_leaf=(committer, leaf))


def check_resync(
    old_tree: RatchetTree,
    applied: AppliedProposals,
    path: UpdatePath,
    validator: CredentialValidator | None = None,
) -> None:
    """An external commit may only remove the joiner's own earlier appearance: the new leaf
    must present the removed leaf's identity, as an Update of that leaf would (§12.4.3.2), or
    one the application accepts for it (``credentials.same_member``)."""
    if not applied.removed:
        return
    old = old_tree.leaf(applied.removed[0])
    if old is not None and not same_member(validator, old.credential, path.leaf_node.credential):
        raise ExternalCommitError(
            "an external commit may only remove the joiner's own earlier leaf", rule="PL-20"
        )


def _merge_path(
    cs: CipherSuiteProvider,
    group_id: bytes,
    old_tree: RatchetTree,
    tree: RatchetTree,
    sender: Sender,
    path: UpdatePath,
    applied: AppliedProposals,
    checks: LeafChecks,
) -> tuple[LeafIndex, list[NodeIndex]]:
    external = sender.sender_type == SenderType.new_member_commit
    committer = tree.add_leaf(path.leaf_node) if external else LeafIndex(sender.leaf_index or 0)
    validate_path_leaf(
        cs, group_id, old_tree, tree, path.leaf_node, committer, applied, checks, joiner=external
    )
    fdp = merge_update_path(
        tree,
        committer,
        path,
        excluded_leaves={i for i, _ in applied.added},
        joiner=external,
    )
    return committer, fdp


def validate_commit(
    cs: CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    interim: bytes,
    content: AuthenticatedContent,
    cache: Mapping[bytes, QueuedProposal],
    checks: LeafChecks,
    *,
    psk_available: PskAvailable | None = None,
) -> ValidatedCommit:
    """Every public rule of a received commit, in the order of the module docstring.
    ``tree`` is not changed; ``psk_available`` is a member's (the public view cannot know)."""
    fc = content.content
    commit = fc.commit
    if commit is None:  # pragma: no cover - decoding guarantees it
        raise CommitError("commit content without a commit")
    sender = fc.sender
    check_committer_type(sender)
    external = sender.sender_type == SenderType.new_member_commit
    queued = resolve_proposals(commit, sender, cache)
    new_tree = tree.copy()
    applied = apply_proposals(
        cs, context, new_tree, queued, sender, checks=checks, psk_available=psk_available
    )
    if (applied.path_required or external) and commit.path is None:
        raise PathRequiredError(
            "the commit's proposals require an UpdatePath", rule="EC-01" if external else "CM-14"
        )
    committer: LeafIndex | None = None if external else LeafIndex(sender.leaf_index or 0)
    fdp: list[NodeIndex] = []
    if commit.path is not None:
        if external:
            check_resync(tree, applied, commit.path, checks.credential_validator)
        committer, fdp = _merge_path(
            cs, context.group_id, tree, new_tree, sender, commit.path, applied, checks
        )
    provisional = replace(
        context,
        epoch=context.epoch + 1,
        tree_hash=new_tree.tree_hash(),
        extensions=applied.extensions,
    )
    confirmed = confirmed_transcript_hash(cs, interim, content.confirmed_transcript_hash_input())
    new_context = replace(provisional, confirmed_transcript_hash=confirmed)
    return ValidatedCommit(
        sender=sender,
        proposals=tuple(queued),
        applied=applied,
        tree=new_tree,
        committer=committer,
        filtered_direct_path=tuple(fdp),
        provisional_context=provisional,
        context=new_context,
        interim_transcript_hash=interim_transcript_hash(
            cs, confirmed, content.auth.confirmation_tag or b""
        ),
        authenticated_data=fc.authenticated_data,
    )


def staged_commit(
    sender: Sender,
    committer: LeafIndex | None,
    applied: AppliedProposals,
    old_tree: RatchetTree,
    new_tree: RatchetTree,
    epoch: int,
    authenticated_data: bytes,
    *,
    self_removed: bool = False,
    own: bool = False,
    new_state: EpochState | None = None,
) -> StagedCommit:
    """What a commit changes, in members, for the application (no secrets but the private
    ``new_state``)."""

    def member(tree: RatchetTree, leaf: LeafIndex) -> Member | None:
        node = tree.leaf(leaf)
        return None if node is None else Member.of(leaf, node)

    removed = tuple(m for i in applied.removed if (m := member(old_tree, i)) is not None)
    updated = tuple(m for i in applied.updated if (m := member(new_tree, i)) is not None)
    return StagedCommit(
        sender=sender,
        committer=member(new_tree, committer) if committer is not None else None,
        epoch=epoch,
        added=tuple(Member.of(i, kp.leaf_node) for i, kp in applied.added),
        removed=removed,
        updated=updated,
        psks=tuple(applied.psks),
        reinit=applied.reinit,
        self_removed=self_removed,
        own=own,
        authenticated_data=authenticated_data,
        new_state=new_state,
        key_packages=tuple(kp for _, kp in applied.added),
    )


def describe_commit(
    validated: ValidatedCommit,
    old_tree: RatchetTree,
    *,
    self_removed: bool = False,
    new_state: EpochState | None = None,
) -> StagedCommit:
    """The :class:`StagedCommit` of a received commit."""
    committer = validated.committer
    if committer is None and validated.sender.sender_type == SenderType.member:
        committer = LeafIndex(validated.sender.leaf_index or 0)
    return staged_commit(
        validated.sender,
        committer,
        validated.applied,
        old_tree,
        validated.tree,
        validated.context.epoch,
        validated.authenticated_data,
        self_removed=self_removed,
        new_state=new_state,
    )


def check_not_own_proposal(sender: Sender, own_leaf: LeafIndex) -> None:
    """A member never receives a proposal under its own leaf that it did not cache."""
    if sender.sender_type == SenderType.member and sender.leaf_index == own_leaf:
        raise ProposalError("a proposal claiming to be ours that we did not cache")


__all__ = [
    "ValidatedCommit",
    "check_committer_type",
    "check_not_own_proposal",
    "check_resync",
    "describe_commit",
    "resolve_proposals",
    "staged_commit",
    "validate_commit",
    "validate_path_leaf",
    "validate_proposal",
]
