"""Proposal validation (RFC 9420 §12.1, §12.2) and application (§12.3).

Theory of operation: :func:`apply_proposals` takes the proposals a Commit covers (already
resolved from references, each with its original sender), checks every rule of §12.2 for a
regular or an external Commit, and applies them to a *copy* of the tree in the order of §12.3:
GroupContextExtensions, Updates, Removes, Adds (in list order), then notes PSKs, ExternalInit
and ReInit. The same function serves the committer and every receiver, so both sides enforce
the same rules. Key uniqueness checks use the tree's O(1) key indexes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mlspy.credentials import validate_credential
from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import (
    KeyPackageError,
    LeafNodeError,
    MLSError,
    ProposalError,
    ProposalListError,
    PskError,
    RequiredCapabilitiesError,
)
from mlspy.group.key_package import validate_key_package
from mlspy.group.policy import check_proposals as check_policy
from mlspy.group.policy import policy_in
from mlspy.group.state import LeafChecks
from mlspy.messages import (
    Add,
    CustomProposal,
    Extension,
    ExternalInit,
    ExternalSenders,
    GroupContext,
    GroupContextExtensions,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalType,
    PSKType,
    ReInit,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Sender,
    SenderType,
    Update,
)
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.validation import (
    DEFAULT_EXTENSION_TYPES,
    check_credential_support,
    validate_leaf_node,
)

# §12.4: proposal types that do not force an UpdatePath.
PATH_OPTIONAL_TYPES = frozenset({ProposalType.add, ProposalType.psk, ProposalType.reinit})
# §12.1.8: what an `external` sender may propose.
EXTERNAL_SENDER_TYPES = frozenset(
    {
        ProposalType.add,
        ProposalType.remove,
        ProposalType.psk,
        ProposalType.reinit,
        ProposalType.group_context_extensions,
    }
)
DEFAULT_PROPOSAL_TYPES = frozenset(int(t) for t in ProposalType)


@dataclass(frozen=True)
class QueuedProposal:
    """A proposal covered by a Commit, with who proposed it and its reference (if by ref)."""

    proposal: Proposal
    sender: Sender
    ref: bytes | None = None


@dataclass
class AppliedProposals:
    """What applying a proposal list changed, for the rest of commit processing."""

    extensions: tuple[Extension, ...]
    added: list[tuple[LeafIndex, KeyPackage]] = field(default_factory=list)
    removed: list[LeafIndex] = field(default_factory=list)
    updated: list[LeafIndex] = field(default_factory=list)
    psks: list[PreSharedKeyID] = field(default_factory=list)
    external_init: ExternalInit | None = None
    reinit: ReInit | None = None
    path_required: bool = False
    custom: list[CustomProposal] = field(default_factory=list)


def check_sender_may_propose(proposal: Proposal, sender: Sender) -> None:
    """Who may send which proposal (§12.1.2, §12.1.8)."""
    t = proposal.proposal_type
    if sender.sender_type == SenderType.external and t not in EXTERNAL_SENDER_TYPES:
        raise ProposalError(f"an external sender may not propose {t}", rule="EP-04")
    if sender.sender_type == SenderType.new_member_proposal and t != ProposalType.add:
        raise ProposalError("a new_member_proposal sender may only propose add", rule="EP-07")
    if t == ProposalType.update and sender.sender_type != SenderType.member:
        raise ProposalError("only members may propose an update")
    if t == ProposalType.external_init and sender.sender_type != SenderType.new_member_commit:
        raise ProposalError("external_init belongs in an external commit only", rule="PR-09")


def required_capabilities(extensions: Sequence[Extension]) -> RequiredCapabilities | None:
    try:
        return RequiredCapabilities.find_in(extensions)
    except MLSError as exc:  # a malformed payload is the proposer's fault
        raise ProposalError(
            f"malformed required_capabilities extension: {exc}", rule="PR-14"
        ) from exc


def check_leaf_supports_group(
    leaf: LeafNode,
    extensions: Sequence[Extension],
    *,
    rule: str | None = None,
    extension_rule: str | None = None,
) -> None:
    """A member must support the group's required capabilities and its non-default
    GroupContext extension types (§11.1, §13.4). ``rule`` and ``extension_rule`` (default:
    ``rule``) are the catalogue ids of the two failures where the leaf was met."""
    caps = leaf.capabilities
    required = required_capabilities(extensions)
    if required is not None:
        missing = (
            [t for t in required.extension_types if t not in caps.extensions]
            + [t for t in required.proposal_types if t not in caps.proposals]
            + [t for t in required.credential_types if t not in caps.credentials]
        )
        if missing:
            raise RequiredCapabilitiesError(
                f"a member lacks required capabilities {missing}", rule=rule
            )
    for ext in extensions:
        if ext.extension_type not in DEFAULT_EXTENSION_TYPES and (
            ext.extension_type not in caps.extensions
        ):
            raise RequiredCapabilitiesError(
                f"a member does not support group extension {ext.extension_type}",
                rule=extension_rule or rule,
            )


def _validate_psk_id(
    cs: CipherSuiteProvider, psk: PreSharedKeyID, allowed: ResumptionPSKUsage | None
) -> None:
    if len(psk.psk_nonce) != cs.nh:
        raise ProposalError("psk_nonce must be KDF.Nh bytes (§12.1.4)", rule="PR-06")
    if (
        psk.psktype == PSKType.resumption
        and psk.usage in (ResumptionPSKUsage.reinit, ResumptionPSKUsage.branch)
        and psk.usage != allowed
    ):
        raise PskError(
            "a PreSharedKey proposal may not use a reinit or branch resumption PSK", rule="PR-07"
        )


def apply_proposals(
    cs: CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    proposals: Sequence[QueuedProposal],
    committer: Sender | None,
    *,
    checks: LeafChecks | None = None,
    psk_available: Callable[[PreSharedKeyID], bool] | None = None,
    resumption_usage: ResumptionPSKUsage | None = None,
) -> AppliedProposals:
    """Validate ``proposals`` for a Commit by ``committer`` and apply them to ``tree``
    (mutated: pass a copy). ``committer`` None validates proposals on receipt, before anyone
    commits them. Raises a :class:`ValidationError` subclass for any broken rule."""
    checks = checks or LeafChecks()
    by_type: dict[int, list[QueuedProposal]] = {}
    for q in proposals:
        by_type.setdefault(q.proposal.proposal_type, []).append(q)
    _check_list(by_type, proposals, committer)
    for q in proposals:
        check_sender_may_propose(q.proposal, q.sender)
    committer_leaf = (
        committer.leaf_index
        if committer is not None and committer.sender_type == SenderType.member
        else None
    )
    # The application's permissions (§12.2), as the group's membership policy states them.
    check_policy(
        context.extensions,
        tree,
        proposals,
        LeafIndex(committer_leaf) if committer_leaf is not None else None,
    )
    result = AppliedProposals(extensions=context.extensions)
    gces = by_type.get(ProposalType.group_context_extensions, [])
    if gces:
        result.extensions = _apply_group_context_extensions(gces, checks)
        policy_in(result.extensions)  # a new membership policy must be well-formed
    touched: set[int] = set()
    _apply_updates(cs, context, tree, by_type, committer_leaf, touched, result, checks)
    _apply_removes(tree, by_type, committer, touched, result)
    _apply_adds(context, tree, by_type, result, checks, committer)
    _apply_psks(cs, by_type, result, psk_available, resumption_usage, committer)
    _note_external_init_and_reinit(context, by_type, result)
    _check_custom_support(tree, by_type, result)
    _check_group_support(tree, result, bool(gces))
    result.path_required = not proposals or any(
        q.proposal.proposal_type not in PATH_OPTIONAL_TYPES for q in proposals
    )
    return result


def _check_list(
    by_type: dict[int, list[QueuedProposal]],
    proposals: Sequence[QueuedProposal],
    committer: Sender | None,
) -> None:
    """The list rules of §12.2 that depend on the kind of commit."""
    if committer is not None and committer.sender_type == SenderType.new_member_commit:
        _check_external_list(by_type, proposals)
        return
    if ProposalType.external_init in by_type:
        raise ProposalListError("a regular commit may not contain external_init", rule="PL-12")
    if ProposalType.reinit in by_type and len(proposals) > 1:
        raise ProposalListError("a reinit must be the only proposal of its commit", rule="PL-11")
    if len(by_type.get(ProposalType.group_context_extensions, [])) > 1:
        raise ProposalListError("more than one group_context_extensions proposal", rule="PL-10")


def _apply_group_context_extensions(
    gces: list[QueuedProposal], checks: LeafChecks
) -> tuple[Extension, ...]:
    """§12.1.7: unique types, well-formed external senders and required capabilities."""
    body = gces[0].proposal.body
    if not isinstance(body, GroupContextExtensions):  # pragma: no cover - by construction
        raise ProposalError("not a group_context_extensions proposal")
    _check_unique_extension_types(body.extensions)
    if ExternalSenders.extension_type in {e.extension_type for e in body.extensions}:
        try:
            senders = ExternalSenders.find_in(body.extensions)
        except MLSError as exc:
            raise ProposalError(
                f"malformed external_senders extension: {exc}", rule="PR-15"
            ) from exc
        if senders is not None and checks.credential_validator is not None:
            for sender in senders.external_senders:
                validate_credential(
                    checks.credential_validator,
                    sender.credential,
                    sender.signature_key,
                    rule="EP-10",
                )
    required_capabilities(body.extensions)
    return body.extensions


def _apply_updates(
    cs: CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    by_type: dict[int, list[QueuedProposal]],
    committer_leaf: int | None,
    touched: set[int],
    result: AppliedProposals,
    checks: LeafChecks,
) -> None:
    """Updates (§12.1.2), at most one per leaf and never the committer's own."""
    for q in by_type.get(ProposalType.update, []):
        body = q.proposal.body
        if not isinstance(body, Update):  # pragma: no cover - by construction
            raise ProposalError("not an update proposal")
        leaf = q.sender.leaf_index
        if leaf is None or tree.leaf(LeafIndex(leaf)) is None:
            raise ProposalError("update from a sender that is not a member")
        if leaf == committer_leaf:
            raise ProposalListError(
                "a commit may not contain the committer's own update", rule="PL-02"
            )
        if leaf in touched:
            raise ProposalListError(f"several updates/removes for leaf {leaf}", rule="PL-06")
        touched.add(leaf)
        _validate_update(cs, context, tree, LeafIndex(leaf), body.leaf_node, result, checks)
        if checks.credential_validator is not None:
            node = body.leaf_node
            validate_credential(
                checks.credential_validator, node.credential, node.signature_key, rule="LN-29"
            )
        tree.update_leaf(LeafIndex(leaf), body.leaf_node)
        result.updated.append(LeafIndex(leaf))


def _blank_remove_rule(committer: Sender | None, outside: bool) -> str:
    """The catalogue rule of a Remove naming no member: outside the tree, on receipt, in an
    external commit, in a member's commit."""
    if outside:
        return "PR-04"
    if committer is None:
        return "PR-05"
    return "PL-19" if committer.sender_type == SenderType.new_member_commit else "PR-03"


def _apply_removes(
    tree: RatchetTree,
    by_type: dict[int, list[QueuedProposal]],
    committer: Sender | None,
    touched: set[int],
    result: AppliedProposals,
) -> None:
    """Removes (§12.1.3) of members, at most one per leaf, never the committer."""
    committer_leaf = (
        committer.leaf_index
        if committer is not None and committer.sender_type == SenderType.member
        else None
    )
    for q in by_type.get(ProposalType.remove, []):
        body = q.proposal.body
        if not isinstance(body, Remove):  # pragma: no cover - by construction
            raise ProposalError("not a remove proposal")
        target = body.removed
        if target in touched:
            twice = "PL-05" if target in result.updated else "PL-04"
            raise ProposalListError(f"several updates/removes for leaf {target}", rule=twice)
        if target == committer_leaf:
            raise ProposalListError("a commit may not remove the committer", rule="PL-03")
        if tree.leaf(LeafIndex(target)) is None:
            raise ProposalError(
                f"remove of blank or absent leaf {target}",
                rule=_blank_remove_rule(committer, target >= tree.n_leaves),
            )
        touched.add(target)
        tree.remove_leaf(LeafIndex(target))
        result.removed.append(LeafIndex(target))


def _invalid_add_rule(sender: Sender, committer: Sender | None, exc: KeyPackageError) -> str | None:
    """The catalogue rule of an Add with an invalid KeyPackage: a new member's own proposal,
    any Add on receipt (§12.1.1: invalid before any commit), else the KeyPackage rule broken
    (also chained as the cause)."""
    if sender.sender_type == SenderType.new_member_proposal:
        return "EP-09"
    if committer is None:
        return "KP-07"
    return exc.rule


def _apply_adds(
    context: GroupContext,
    tree: RatchetTree,
    by_type: dict[int, list[QueuedProposal]],
    result: AppliedProposals,
    checks: LeafChecks,
    committer: Sender | None,
) -> None:
    """Adds (§12.1.1), in order: a valid KeyPackage (§10.1) of a client not yet in the
    group, supporting the group."""
    added_sig_keys: set[bytes] = set()
    # §12.3: the extensions of a GroupContextExtensions in the same commit apply to its Adds.
    supports_rule = "PR-11" if result.extensions != context.extensions else "LN-06"
    for q in by_type.get(ProposalType.add, []):
        body = q.proposal.body
        if not isinstance(body, Add):  # pragma: no cover - by construction
            raise ProposalError("not an add proposal")
        kp = body.key_package
        try:
            validate_key_package(
                kp,
                cipher_suite=context.cipher_suite,
                now=checks.now,
                max_lifetime=checks.max_lifetime,
            )
        except KeyPackageError as exc:
            raise ProposalError(
                f"invalid KeyPackage in add: {exc}",
                rule=_invalid_add_rule(q.sender, committer, exc),
            ) from exc
        check_leaf_supports_group(kp.leaf_node, result.extensions, rule=supports_rule)
        if checks.credential_validator is not None:
            leaf = kp.leaf_node
            validate_credential(
                checks.credential_validator, leaf.credential, leaf.signature_key, rule="LN-28"
            )
        sig = kp.leaf_node.signature_key
        if sig in added_sig_keys:
            raise ProposalListError("two adds for the same client (signature key)", rule="PL-07")
        if tree.find_signature_key(sig) is not None:
            raise ProposalListError(
                "add of a client already in the group (signature key)", rule="PL-08"
            )
        if tree.find_encryption_key(kp.leaf_node.encryption_key) is not None:
            raise ProposalListError("add whose encryption key is already in the tree", rule="LN-22")
        added_sig_keys.add(sig)
        index = tree.add_leaf(kp.leaf_node)
        result.added.append((index, kp))


def _apply_psks(
    cs: CipherSuiteProvider,
    by_type: dict[int, list[QueuedProposal]],
    result: AppliedProposals,
    psk_available: Callable[[PreSharedKeyID], bool] | None,
    resumption_usage: ResumptionPSKUsage | None,
    committer: Sender | None,
) -> None:
    """PreSharedKey proposals (§12.1.4): well-formed, each PSK once, available to us."""
    seen_psks: set[bytes] = set()
    external = committer is not None and committer.sender_type == SenderType.new_member_commit
    for q in by_type.get(ProposalType.psk, []):
        body = q.proposal.body
        if not isinstance(body, PreSharedKey):  # pragma: no cover - by construction
            raise ProposalError("not a psk proposal")
        _validate_psk_id(cs, body.psk, resumption_usage)
        encoded = body.psk.encode()
        if encoded in seen_psks:
            raise ProposalListError("the same PSK is proposed twice", rule="PL-09")
        seen_psks.add(encoded)
        if psk_available is not None and not psk_available(body.psk):
            raise PskError("a proposed PSK is not available", rule="PS-05" if external else "CM-13")
        result.psks.append(body.psk)


def _note_external_init_and_reinit(
    context: GroupContext, by_type: dict[int, list[QueuedProposal]], result: AppliedProposals
) -> None:
    """ExternalInit (§12.1.6) and ReInit (§12.1.5), for the rest of commit processing."""
    for q in by_type.get(ProposalType.external_init, []):
        if isinstance(q.proposal.body, ExternalInit):
            result.external_init = q.proposal.body
    for q in by_type.get(ProposalType.reinit, []):
        body = q.proposal.body
        if not isinstance(body, ReInit):  # pragma: no cover - by construction
            raise ProposalError("not a reinit proposal")
        if body.version < context.version:
            raise ProposalError("reinit to an older protocol version", rule="PR-08")
        result.reinit = body


def _check_custom_support(
    tree: RatchetTree, by_type: dict[int, list[QueuedProposal]], result: AppliedProposals
) -> None:
    """Members that stay must support a non-default proposal type (§12.2)."""
    added = {a for a, _ in result.added}
    for t, qs in by_type.items():
        if t in DEFAULT_PROPOSAL_TYPES:
            continue
        result.custom.extend(
            q.proposal.body for q in qs if isinstance(q.proposal.body, CustomProposal)
        )
        for i, member in tree.leaves():
            if i not in added and t not in member.capabilities.proposals:
                raise ProposalListError(
                    f"member {i} does not support proposal type {t}", rule="PL-13"
                )


def _check_group_support(tree: RatchetTree, result: AppliedProposals, new_extensions: bool) -> None:
    """After new GroupContext extensions every member supports them (§12.1.7); after new
    credentials every credential type in use is supported by every member (§7.3)."""
    if new_extensions:
        for _, member in tree.leaves():
            check_leaf_supports_group(
                member, result.extensions, rule="PR-10", extension_rule="PR-12"
            )
    if result.added or result.updated:
        added = {int(i) for i, _ in result.added}

        def rule(lacking_leaf: LeafIndex, lacking: set[int]) -> str:
            # A new member lacking a type in use, or a member lacking a type a new member
            # (else an Update) brought in (§7.3).
            if lacking_leaf in added:
                return "LN-10"
            new_types = {kp.leaf_node.credential.credential_type for _, kp in result.added}
            return "LN-09" if lacking & new_types else "LN-11"

        check_credential_support(tree, rule=rule)


def _check_unique_extension_types(extensions: Sequence[Extension]) -> None:
    types = [e.extension_type for e in extensions]
    if len(types) != len(set(types)):
        raise ProposalError("duplicate extension types", rule="PR-13")


def _check_external_list(
    by_type: dict[int, list[QueuedProposal]], proposals: Sequence[QueuedProposal]
) -> None:
    """§12.2 for external commits: one ExternalInit, at most one Remove, PSKs, nothing else,
    all by value (§12.4.3.2)."""
    if any(q.ref is not None for q in proposals):
        raise ProposalListError(
            "an external commit may not include proposals by reference", rule="EC-02"
        )
    inits = len(by_type.get(ProposalType.external_init, []))
    if inits != 1:
        raise ProposalListError(
            "an external commit needs exactly one external_init",
            rule="PL-14" if inits == 0 else "PL-15",
        )
    if len(by_type.get(ProposalType.remove, [])) > 1:
        raise ProposalListError("an external commit may remove at most one leaf", rule="PL-16")
    allowed = {ProposalType.external_init, ProposalType.remove, ProposalType.psk}
    extra = set(by_type) - allowed
    if extra:
        raise ProposalListError(
            f"an external commit may not contain proposal types {extra}",
            rule="PL-18" if ProposalType.update in extra else "PL-17",
        )


def _validate_update(
    cs: CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    leaf: LeafIndex,
    node: LeafNode,
    result: AppliedProposals,
    checks: LeafChecks,
) -> None:
    """An Update's LeafNode (§12.1.2, §7.3)."""
    current = tree.leaf(leaf)
    if current is None:
        raise ProposalError(f"update of blank leaf {leaf}")
    try:
        validate_leaf_node(
            cs,
            node,
            group_id=context.group_id,
            leaf_index=leaf,
            expected_source=LeafNodeSource.update,
            now=checks.now,
            max_lifetime=checks.max_lifetime,
        )
    except LeafNodeError as exc:
        raise ProposalError(f"invalid leaf node in update: {exc}", rule=exc.rule) from exc
    check_leaf_supports_group(node, result.extensions, rule="LN-07")
    if node.encryption_key == current.encryption_key:
        raise ProposalError("an update must change the encryption key", rule="LN-20")
    holder = tree.find_encryption_key(node.encryption_key)
    if holder is not None:
        # Unique in the group (LN-23), or only once an earlier Update of the same commit is
        # applied (LN-24).
        earlier = holder in {2 * u for u in result.updated}
        raise ProposalError(
            "the update's encryption key is already in the tree",
            rule="LN-24" if earlier else "LN-23",
        )
    sig_holder = tree.find_signature_key(node.signature_key)
    if sig_holder is not None and sig_holder != leaf:
        raise ProposalError("the update's signature key belongs to another member", rule="LN-25")
