"""Processing another member's Commit (RFC 9420 §12.4.2) into a staged epoch.

The public view of the current epoch validates the commit first — every publicly checkable
rule, the code a Delivery Service runs (:mod:`mlspy.group.commit_validate`). What follows needs
our secrets only: our own Update keys, the UpdatePath secrets, the external init secret, the
PSKs, the key schedule and the confirmation tag.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlspy.errors import CommitError, ConfirmationTagError, CryptoError, ExternalCommitError
from mlspy.group.commit_validate import ValidatedCommit, describe_commit
from mlspy.group.framing import Unprotected
from mlspy.group.member_state import MemberState
from mlspy.group.proposals import AppliedProposals, QueuedProposal
from mlspy.group.state import EXTERNAL_INIT_LABEL, StagedCommit, next_epoch
from mlspy.group.welcome import resolve_psks
from mlspy.messages import AuthenticatedContent, SenderType
from mlspy.schedule.key_schedule import external_key_pair
from mlspy.tree.math import NodeIndex
from mlspy.tree.treekem import TreePrivateKeys, decrypt_update_path


def stage_commit(state: MemberState, u: Unprotected) -> StagedCommit:
    """Validate a verified commit of the current epoch and derive the epoch it starts.
    Nothing in ``state`` changes."""
    ac = u.content
    if state.pending is not None and ac.encode() == state.pending.content_bytes:
        return state.pending.staged  # our own commit, echoed back
    sender = ac.content.sender
    if sender.sender_type == SenderType.member and sender.leaf_index == state.own_leaf:
        raise CommitError("a commit from our own leaf that is not our pending commit", rule="CM-09")
    validated = state.public_view().validate_commit(ac, psk_available=state.has_psk)
    return _stage_with_secrets(state, ac, validated)


def apply_own_updates(
    state: MemberState, queued: Sequence[QueuedProposal], private: TreePrivateKeys
) -> None:
    """Our leaf's private key from our own Update proposal that the commit covers."""
    for q in queued:
        if q.ref is not None and q.ref in state.own_update_keys:
            private.keys[NodeIndex(2 * state.own_leaf)] = state.own_update_keys[q.ref]


def _stage_with_secrets(
    state: MemberState, ac: AuthenticatedContent, validated: ValidatedCommit
) -> StagedCommit:
    epoch = state.epoch
    cs = state.cs
    applied = validated.applied
    private = epoch.private.copy() if epoch.private is not None else None
    if private is not None:
        apply_own_updates(state, validated.proposals, private)
        private.prune(validated.tree)
    self_removed = state.own_leaf in applied.removed
    if self_removed:
        return describe_commit(validated, epoch.tree, self_removed=True)
    init_secret = (
        _external_init_secret(state, applied) if validated.external else epoch.secrets.init_secret
    )
    commit_secret = bytes(cs.nh)
    path = ac.content.commit.path if ac.content.commit is not None else None
    if path is not None and validated.committer is not None and private is not None:
        private, _, commit_secret = decrypt_update_path(
            validated.tree,
            private,
            validated.committer,
            path,
            list(validated.filtered_direct_path),
            validated.provisional_context.encode(),
            excluded_leaves={i for i, _ in applied.added},
        )
    psk_secret = resolve_psks(cs, applied.psks, state.psk_value)
    new_epoch = next_epoch(
        cs,
        state.config,
        validated.context,
        validated.tree,
        private,
        init_secret,
        commit_secret,
        psk_secret,
    )
    tag = ac.auth.confirmation_tag or b""
    if not cs.verify_mac(
        new_epoch.secrets.confirmation_key, new_epoch.context.confirmed_transcript_hash, tag
    ):
        raise ConfirmationTagError(
            "the commit's confirmation tag does not verify",
            rule="EC-08" if validated.external else "CM-22",
        )
    return describe_commit(validated, epoch.tree, new_state=new_epoch)


def _external_init_secret(state: MemberState, applied: AppliedProposals) -> bytes:
    """The joiner's ``init_secret``, decapsulated with the epoch's external key (§8.3)."""
    if applied.external_init is None:  # pragma: no cover - the list rules require one
        raise ExternalCommitError("an external commit needs an ExternalInit proposal")
    cs = state.cs
    external_priv, _ = external_key_pair(cs, state.epoch.secrets.external_secret)
    try:
        return cs.hpke.receive_export(
            external_priv, applied.external_init.kem_output, b"", EXTERNAL_INIT_LABEL, cs.nh
        )
    except CryptoError as exc:
        raise ExternalCommitError("cannot derive the external init secret", rule="EC-04") from exc
