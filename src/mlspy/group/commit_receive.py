"""Processing another member's Commit (RFC 9420 §12.4.2) into a staged epoch."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from mlspy.errors import (
    CommitError,
    ConfirmationTagError,
    CryptoError,
    ExternalCommitError,
    LeafNodeError,
    PathRequiredError,
    ProposalListError,
)
from mlspy.group.framing import (
    Unprotected,
)
from mlspy.group.proposals import (
    AppliedProposals,
    QueuedProposal,
    apply_proposals,
    check_leaf_supports_group,
)
from mlspy.group.state import (
    EXTERNAL_INIT_LABEL,
    StagedCommit,
)
from mlspy.group.welcome import (
    resolve_psks,
)
from mlspy.messages import (
    LeafNode,
    LeafNodeSource,
    ProposalOrRefType,
    SenderType,
    UpdatePath,
)
from mlspy.schedule.key_schedule import external_key_pair
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import (
    decrypt_update_path,
    merge_update_path,
)
from mlspy.tree.validation import check_credential_support, validate_leaf_node

if TYPE_CHECKING:
    from mlspy.group.group import Group


def stage_commit(group: Group, u: Unprotected) -> StagedCommit:
    ac = u.content
    fc = ac.content
    commit = fc.commit
    if commit is None:  # pragma: no cover - decoding guarantees it
        raise CommitError("commit content without a commit")
    if group._pending is not None and ac.encode() == group._pending.content_bytes:
        return group._pending.staged
    sender = fc.sender
    if sender.sender_type == SenderType.member and sender.leaf_index == group._own_leaf:
        raise CommitError("a commit from our own leaf that is not our pending commit")
    if sender.sender_type not in (SenderType.member, SenderType.new_member_commit):
        raise CommitError(f"a {sender.sender_type.name} sender may not commit")
    external = sender.sender_type == SenderType.new_member_commit
    queued: list[QueuedProposal] = []
    for por in commit.proposals:
        if por.type == ProposalOrRefType.proposal and por.proposal is not None:
            queued.append(QueuedProposal(por.proposal, sender, None))
        else:
            cached = group._proposals.get(por.reference or b"")
            if cached is None:
                raise ProposalListError("the commit references an unknown proposal")
            queued.append(cached)
    epoch = group._epoch
    cs = group._cs
    tree = epoch.tree.copy()
    applied = apply_proposals(
        cs,
        epoch.context,
        tree,
        queued,
        sender,
        now=group._config.now(),
        psk_available=group._has_psk,
        credential_validator=group._config.credential_validator,
    )
    if (applied.path_required or external) and commit.path is None:
        raise PathRequiredError("the commit's proposals require an UpdatePath")
    private = epoch.private.copy() if epoch.private is not None else None
    if private is not None:
        group._apply_own_updates(queued, private)
    self_removed = group._own_leaf in applied.removed
    provisional = replace(epoch.context, epoch=epoch.epoch + 1, extensions=applied.extensions)
    init_secret = epoch.secrets.init_secret
    if external:
        init_secret = _external_init_secret(group, applied)
    commit_secret = bytes(cs.nh)
    if external and applied.removed:
        _check_resync(group._epoch.tree, applied.removed[0], commit.path)
    if commit.path is not None:
        if external:
            committer = tree.add_leaf(commit.path.leaf_node)
        else:
            committer = LeafIndex(sender.leaf_index or 0)
        _validate_path_leaf(group, commit.path.leaf_node, committer, applied, tree)
        added = {i for i, _ in applied.added}
        fdp = merge_update_path(
            tree, committer, commit.path, excluded_leaves=added, joiner=external
        )
        provisional = replace(provisional, tree_hash=tree.tree_hash())
        if not self_removed and private is not None:
            private.prune(tree)
            private, _, commit_secret = decrypt_update_path(
                tree,
                private,
                committer,
                commit.path,
                fdp,
                provisional.encode(),
                excluded_leaves=added,
            )
    elif private is not None:
        private.prune(tree)
    provisional = replace(provisional, tree_hash=tree.tree_hash())
    if self_removed:
        return StagedCommit(
            sender,
            None,
            applied.added,
            applied.removed,
            applied.updated,
            applied.psks,
            applied.reinit,
            True,
            authenticated_data=fc.authenticated_data,
        )
    psk_secret = resolve_psks(cs, applied.psks, group._psk_value)
    new_epoch = group._next_epoch(
        epoch, ac, provisional, tree, private, init_secret, commit_secret, psk_secret
    )
    tag = ac.auth.confirmation_tag or b""
    if not cs.verify_mac(
        new_epoch.secrets.confirmation_key, new_epoch.context.confirmed_transcript_hash, tag
    ):
        raise ConfirmationTagError("the commit's confirmation tag does not verify")
    return StagedCommit(
        sender,
        new_epoch,
        applied.added,
        applied.removed,
        applied.updated,
        applied.psks,
        applied.reinit,
        False,
        authenticated_data=fc.authenticated_data,
    )


def _validate_path_leaf(
    group: Group, leaf: LeafNode, committer: LeafIndex, applied: AppliedProposals, tree: RatchetTree
) -> None:
    try:
        validate_leaf_node(
            group._cs,
            leaf,
            group_id=group.group_id,
            leaf_index=committer,
            expected_source=LeafNodeSource.commit,
            now=group._config.now(),
        )
    except LeafNodeError as exc:
        raise CommitError(f"invalid committer leaf: {exc}") from None
    check_leaf_supports_group(leaf, applied.extensions)
    validator = group._config.credential_validator
    if validator is not None:
        validator.validate(leaf.credential, leaf.signature_key)
    holder = tree.find_signature_key(leaf.signature_key)
    if holder is not None and holder != committer:
        raise CommitError("the committer's new signature key belongs to another member")
    current = group._epoch.tree.leaf(committer)  # before this commit; None for a joiner
    if current is None or (
        leaf.credential.credential_type != current.credential.credential_type
        or set(leaf.capabilities.credentials) != set(current.capabilities.credentials)
    ):
        # A new credential type or capability set must work with every member (§7.3): O(n),
        # so only when it changed (external joiners always).
        scratch = tree.copy()
        scratch.set_leaf(committer, leaf)
        check_credential_support(scratch)


def _external_init_secret(group: Group, applied: AppliedProposals) -> bytes:
    if applied.external_init is None:
        raise ExternalCommitError("an external commit needs an ExternalInit proposal")
    cs = group._cs
    external_priv, _ = external_key_pair(cs, group._epoch.secrets.external_secret)
    try:
        return cs.hpke.receive_export(
            external_priv, applied.external_init.kem_output, b"", EXTERNAL_INIT_LABEL, cs.nh
        )
    except CryptoError:
        raise ExternalCommitError("cannot derive the external init secret") from None


def _check_resync(old_tree: RatchetTree, removed: LeafIndex, path: UpdatePath | None) -> None:
    """An external commit may only remove the joiner's own earlier appearance: the new leaf
    must present the removed leaf's identity, as an Update of that leaf would (§12.2)."""
    old = old_tree.leaf(removed)
    if path is None or old is None:
        return  # reported by the path and proposal checks
    if path.leaf_node.credential != old.credential:
        raise ExternalCommitError(
            "an external commit may only remove the joiner's own earlier leaf"
        )
