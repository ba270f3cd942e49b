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

from mlspy.credentials import CredentialValidator
from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import (
    KeyPackageError,
    LeafNodeError,
    ProposalError,
    ProposalListError,
    PskError,
    RequiredCapabilitiesError,
)
from mlspy.group.key_package import validate_key_package
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
        raise ProposalError(f"an external sender may not propose {t}")
    if sender.sender_type == SenderType.new_member_proposal and t != ProposalType.add:
        raise ProposalError("a new_member_proposal sender may only propose add")
    if t == ProposalType.update and sender.sender_type != SenderType.member:
        raise ProposalError("only members may propose an update")
    if t == ProposalType.external_init and sender.sender_type != SenderType.new_member_commit:
        raise ProposalError("external_init belongs in an external commit only")


def required_capabilities(extensions: Sequence[Extension]) -> RequiredCapabilities | None:
    try:
        return RequiredCapabilities.find_in(extensions)
    except Exception as exc:  # a malformed payload is the proposer's fault
        raise ProposalError(f"malformed required_capabilities extension: {exc}") from None


def check_leaf_supports_group(leaf: LeafNode, extensions: Sequence[Extension]) -> None:
    """A member must support the group's required capabilities and its non-default
    GroupContext extension types (§11.1, §13.4)."""
    caps = leaf.capabilities
    required = required_capabilities(extensions)
    if required is not None:
        missing = (
            [t for t in required.extension_types if t not in caps.extensions]
            + [t for t in required.proposal_types if t not in caps.proposals]
            + [t for t in required.credential_types if t not in caps.credentials]
        )
        if missing:
            raise RequiredCapabilitiesError(f"a member lacks required capabilities {missing}")
    for ext in extensions:
        if ext.extension_type not in DEFAULT_EXTENSION_TYPES and (
            ext.extension_type not in caps.extensions
        ):
            raise RequiredCapabilitiesError(
                f"a member does not support group extension {ext.extension_type}"
            )


def _validate_psk_id(
    cs: CipherSuiteProvider, psk: PreSharedKeyID, allowed: ResumptionPSKUsage | None
) -> None:
    if len(psk.psk_nonce) != cs.nh:
        raise ProposalError("psk_nonce must be KDF.Nh bytes (§12.1.4)")
    if (
        psk.psktype == PSKType.resumption
        and psk.usage in (ResumptionPSKUsage.reinit, ResumptionPSKUsage.branch)
        and psk.usage != allowed
    ):
        raise PskError("a PreSharedKey proposal may not use a reinit or branch resumption PSK")


def apply_proposals(
    cs: CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    proposals: Sequence[QueuedProposal],
    committer: Sender,
    *,
    now: int | None = None,
    psk_available: Callable[[PreSharedKeyID], bool] | None = None,
    resumption_usage: ResumptionPSKUsage | None = None,
    credential_validator: CredentialValidator | None = None,
) -> AppliedProposals:
    """Validate ``proposals`` for a Commit by ``committer`` and apply them to ``tree``
    (mutated: pass a copy). Raises a :class:`ValidationError` subclass for any broken rule."""
    external = committer.sender_type == SenderType.new_member_commit
    committer_leaf = committer.leaf_index if committer.sender_type == SenderType.member else None

    by_type: dict[int, list[QueuedProposal]] = {}
    for q in proposals:
        by_type.setdefault(q.proposal.proposal_type, []).append(q)
    # List rules first (§12.2), then who may propose what (§12.1).
    if external:
        _check_external_list(by_type, proposals)
    else:
        if ProposalType.external_init in by_type:
            raise ProposalListError("a regular commit may not contain external_init")
        if ProposalType.reinit in by_type and len(proposals) > 1:
            raise ProposalListError("a reinit must be the only proposal of its commit")
    for q in proposals:
        check_sender_may_propose(q.proposal, q.sender)

    result = AppliedProposals(extensions=context.extensions)

    # 1. GroupContextExtensions (at most one).
    gces = by_type.get(ProposalType.group_context_extensions, [])
    if len(gces) > 1:
        raise ProposalListError("more than one group_context_extensions proposal")
    if gces:
        body = gces[0].proposal.body
        assert isinstance(body, GroupContextExtensions)
        _check_unique_extension_types(body.extensions)
        if ExternalSenders.extension_type in {e.extension_type for e in body.extensions}:
            try:
                senders = ExternalSenders.find_in(body.extensions)
            except Exception as exc:
                raise ProposalError(f"malformed external_senders extension: {exc}") from None
            if senders is not None and credential_validator is not None:
                for sender in senders.external_senders:
                    credential_validator.validate(sender.credential, sender.signature_key)
        required_capabilities(body.extensions)
        result.extensions = body.extensions

    # 2. Updates; 3. Removes — at most one of either per leaf.
    touched: set[int] = set()
    for q in by_type.get(ProposalType.update, []):
        body = q.proposal.body
        assert isinstance(body, Update)
        leaf = q.sender.leaf_index
        if leaf is None or tree.leaf(LeafIndex(leaf)) is None:
            raise ProposalError("update from a sender that is not a member")
        if leaf == committer_leaf:
            raise ProposalListError("a commit may not contain the committer's own update")
        if leaf in touched:
            raise ProposalListError(f"several updates/removes for leaf {leaf}")
        touched.add(leaf)
        _validate_update(cs, context, tree, LeafIndex(leaf), body.leaf_node, result.extensions, now)
        if credential_validator is not None:
            credential_validator.validate(body.leaf_node.credential, body.leaf_node.signature_key)
        tree.update_leaf(LeafIndex(leaf), body.leaf_node)
        result.updated.append(LeafIndex(leaf))
    removed_sig_keys: set[bytes] = set()
    for q in by_type.get(ProposalType.remove, []):
        body = q.proposal.body
        assert isinstance(body, Remove)
        target = body.removed
        if target in touched:
            raise ProposalListError(f"several updates/removes for leaf {target}")
        if target == committer_leaf:
            raise ProposalListError("a commit may not remove the committer")
        leaf_node = tree.leaf(LeafIndex(target))
        if leaf_node is None:
            raise ProposalError(f"remove of blank or absent leaf {target}")
        touched.add(target)
        removed_sig_keys.add(leaf_node.signature_key)
        tree.remove_leaf(LeafIndex(target))
        result.removed.append(LeafIndex(target))

    # 4. Adds, in order.
    added_sig_keys: set[bytes] = set()
    for q in by_type.get(ProposalType.add, []):
        body = q.proposal.body
        assert isinstance(body, Add)
        kp = body.key_package
        try:
            validate_key_package(kp, cipher_suite=context.cipher_suite, now=now)
        except KeyPackageError as exc:
            raise ProposalError(f"invalid KeyPackage in add: {exc}") from None
        check_leaf_supports_group(kp.leaf_node, result.extensions)
        if credential_validator is not None:
            credential_validator.validate(kp.leaf_node.credential, kp.leaf_node.signature_key)
        sig = kp.leaf_node.signature_key
        if sig in added_sig_keys:
            raise ProposalListError("two adds for the same client (signature key)")
        if tree.find_signature_key(sig) is not None:
            raise ProposalListError("add of a client already in the group (signature key)")
        if tree.find_encryption_key(kp.leaf_node.encryption_key) is not None:
            raise ProposalListError("add whose encryption key is already in the tree")
        added_sig_keys.add(sig)
        index = tree.add_leaf(kp.leaf_node)
        result.added.append((index, kp))

    # 5. PSKs.
    seen_psks: set[bytes] = set()
    for q in by_type.get(ProposalType.psk, []):
        body = q.proposal.body
        assert isinstance(body, PreSharedKey)
        _validate_psk_id(cs, body.psk, resumption_usage)
        encoded = body.psk.encode()
        if encoded in seen_psks:
            raise ProposalListError("the same PSK is proposed twice")
        seen_psks.add(encoded)
        if psk_available is not None and not psk_available(body.psk):
            raise PskError("a proposed PSK is not available")
        result.psks.append(body.psk)

    # 6. ExternalInit; 7. ReInit.
    for q in by_type.get(ProposalType.external_init, []):
        assert isinstance(q.proposal.body, ExternalInit)
        result.external_init = q.proposal.body
    for q in by_type.get(ProposalType.reinit, []):
        body = q.proposal.body
        assert isinstance(body, ReInit)
        if body.version < context.version:
            raise ProposalError("reinit to an older protocol version")
        result.reinit = body

    for t, qs in by_type.items():
        if t not in DEFAULT_PROPOSAL_TYPES:
            for q in qs:
                assert isinstance(q.proposal.body, CustomProposal)
                result.custom.append(q.proposal.body)
            # Members that stay must support a non-default proposal type (§12.2).
            added = {a for a, _ in result.added}
            for i, member in tree.leaves():
                if i in added:
                    continue
                if t not in member.capabilities.proposals:
                    raise ProposalListError(f"member {i} does not support proposal type {t}")

    if gces:
        for _, member in tree.leaves():
            check_leaf_supports_group(member, result.extensions)
    if result.added or result.updated:
        # New credentials must be supported by every member and vice versa (§7.3).
        check_credential_support(tree)

    result.path_required = not proposals or any(
        q.proposal.proposal_type not in PATH_OPTIONAL_TYPES for q in proposals
    )
    return result


def _check_unique_extension_types(extensions: Sequence[Extension]) -> None:
    types = [e.extension_type for e in extensions]
    if len(types) != len(set(types)):
        raise ProposalError("duplicate extension types")


def _check_external_list(
    by_type: dict[int, list[QueuedProposal]], proposals: Sequence[QueuedProposal]
) -> None:
    """§12.2 for external commits: one ExternalInit, at most one Remove, PSKs, nothing else,
    all by value (§12.4.3.2)."""
    if any(q.ref is not None for q in proposals):
        raise ProposalListError("an external commit may not include proposals by reference")
    if len(by_type.get(ProposalType.external_init, [])) != 1:
        raise ProposalListError("an external commit needs exactly one external_init")
    if len(by_type.get(ProposalType.remove, [])) > 1:
        raise ProposalListError("an external commit may remove at most one leaf")
    allowed = {ProposalType.external_init, ProposalType.remove, ProposalType.psk}
    extra = set(by_type) - allowed
    if extra:
        raise ProposalListError(f"an external commit may not contain proposal types {extra}")


def _validate_update(
    cs: CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    leaf: LeafIndex,
    node: LeafNode,
    extensions: Sequence[Extension],
    now: int | None,
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
            now=now,
        )
    except LeafNodeError as exc:
        raise ProposalError(f"invalid leaf node in update: {exc}") from None
    check_leaf_supports_group(node, extensions)
    if node.encryption_key == current.encryption_key:
        raise ProposalError("an update must change the encryption key")
    holder = tree.find_encryption_key(node.encryption_key)
    if holder is not None:
        raise ProposalError("the update's encryption key is already in the tree")
    sig_holder = tree.find_signature_key(node.signature_key)
    if sig_holder is not None and sig_holder != leaf:
        raise ProposalError("the update's signature key belongs to another member")
