"""Leaf node validation (RFC 9420 §7.3) and ratchet tree validation on join (§12.4.3.1).

Every check is linear in the tree: uniqueness of keys goes through dicts, credential-type
support through one pass that builds the set of types in use and the set every member supports,
so validating a tree of n leaves costs n signature verifications and O(n) set operations.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from mlspy.credentials import CredentialValidator, validate_credential
from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import (
    CapabilitiesError,
    CredentialTypeError,
    DuplicateEncryptionKeyError,
    DuplicateSignatureKeyError,
    LeafNodeSourceError,
    LeafSignatureError,
    LifetimeError,
    TreeHashError,
    UnmergedLeafError,
)
from mlspy.messages import LeafNode, LeafNodeSource, RequiredCapabilities
from mlspy.tree.math import LeafIndex, NodeIndex, direct_path, is_in_subtree
from mlspy.tree.parent_hash import verify_parent_hashes
from mlspy.tree.ratchet_tree import RatchetTree

LEAF_NODE_TBS = "LeafNodeTBS"

# Extension types that are "default" and never listed in capabilities (§7.2).
DEFAULT_EXTENSION_TYPES = frozenset({1, 2, 3, 4, 5})

# The default application-defined maximum total lifetime of a LeafNode (§7.2): five years.
# Generous enough for mlspy (90 days), OpenMLS (about 12 weeks) and mls-rs (up to a year) while
# still rejecting leaves that never expire. It needs no clock, so it is enforced even where the
# clock check is off; ``GroupConfig.max_leaf_lifetime`` changes it (None: no maximum, for peers
# that issue leaves valid from 0 to 2^64-1).
MAX_LEAF_LIFETIME = 5 * 365 * 24 * 3600

# The catalogue rule (docs/validation.md) a LeafNode check enforces depends on where the leaf
# appears: in a KeyPackage, an Update, a commit's path, or (None) a tree being joined.
_SIGNATURE_RULES = {
    None: "LN-01",
    LeafNodeSource.key_package: "KP-03",
    LeafNodeSource.update: "LN-02",
    LeafNodeSource.commit: "LN-03",
}
_SOURCE_RULES = {
    LeafNodeSource.key_package: "LN-17",
    LeafNodeSource.update: "LN-18",
    LeafNodeSource.commit: "LN-19",
}

# Which catalogue rule a credential-type support failure breaks, given the leaf that lacks
# a type in use and the types it lacks (see :func:`check_credential_support`).
CredentialSupportRule = Callable[[LeafIndex, set[int]], str | None]


def verify_leaf_signature(
    cs: CipherSuiteProvider,
    leaf: LeafNode,
    group_id: bytes | None,
    leaf_index: int | None,
    *,
    rule: str | None = None,
) -> None:
    """Check the LeafNodeTBS signature; update/commit leaves bind group_id and leaf_index.
    ``rule`` is the catalogue id a failure reports."""
    if leaf.leaf_node_source == LeafNodeSource.key_package:
        tbs = leaf.tbs()
    else:
        if group_id is None or leaf_index is None:
            raise LeafSignatureError(
                "an update/commit LeafNode needs group_id and leaf_index", rule=rule
            )
        tbs = leaf.tbs(group_id, leaf_index)
    if not cs.verify_with_label(leaf.signature_key, LEAF_NODE_TBS, tbs, leaf.signature):
        where = f"leaf {leaf_index}" if leaf_index is not None else "LeafNode"
        raise LeafSignatureError(f"signature on {where} does not verify", rule=rule)


def validate_leaf_node(
    cs: CipherSuiteProvider,
    leaf: LeafNode,
    *,
    group_id: bytes | None,
    leaf_index: int | None,
    expected_source: LeafNodeSource | None = None,
    required_capabilities: RequiredCapabilities | None = None,
    now: int | None = None,
    max_lifetime: int | None = MAX_LEAF_LIFETIME,
) -> None:
    """The per-leaf checks of §7.3 that need no view of the other members.

    ``now`` (seconds since the epoch) enables the clock check for key_package leaves;
    ``max_lifetime`` bounds their total lifetime (§7.2; None: no bound);
    ``expected_source`` checks where the leaf appears (KeyPackage, Update, Commit; None: a
    leaf of a tree being joined), which also decides the catalogue rule a failure reports.
    """
    joining = expected_source is None
    if expected_source is not None and leaf.leaf_node_source != expected_source:
        raise LeafNodeSourceError(
            f"leaf_node_source is {leaf.leaf_node_source.name}, expected {expected_source.name}",
            rule=_SOURCE_RULES.get(expected_source),
        )
    caps = leaf.capabilities
    types = [ext.extension_type for ext in leaf.extensions]
    if len(types) != len(set(types)):
        raise CapabilitiesError("a LeafNode lists an extension type twice (§13.4)", rule="LN-27")
    if leaf.credential.credential_type not in caps.credentials:
        raise CredentialTypeError(
            f"the leaf's credential type {leaf.credential.credential_type} is not in its "
            "capabilities",
            rule="LN-04",
        )
    for ext in leaf.extensions:
        if ext.extension_type not in DEFAULT_EXTENSION_TYPES and (
            ext.extension_type not in caps.extensions
        ):
            raise CapabilitiesError(
                f"extension type {ext.extension_type} is used but not in the capabilities",
                rule="LN-05",
            )
    if required_capabilities is not None:
        _check_required(leaf, required_capabilities)
    if leaf.lifetime is not None:
        _check_lifetime(leaf, now, max_lifetime, now_rule="LN-15" if joining else "LN-14")
    verify_leaf_signature(
        cs, leaf, group_id, leaf_index, rule=_SIGNATURE_RULES.get(expected_source)
    )


def _check_lifetime(
    leaf: LeafNode, now: int | None, max_lifetime: int | None, *, now_rule: str
) -> None:
    lt = leaf.lifetime
    if lt is None:  # pragma: no cover - the caller checks
        return
    if now is not None and not lt.not_before <= now <= lt.not_after:
        raise LifetimeError(
            f"now ({now}) is outside [{lt.not_before}, {lt.not_after}]", rule=now_rule
        )
    if max_lifetime is not None and lt.not_after - lt.not_before > max_lifetime:
        # §7.2: "Applications MUST define a maximum total lifetime that is acceptable for
        # a LeafNode, and reject any LeafNode where the total lifetime is longer than
        # this duration." A leaf valid for ever would defeat post-compromise security.
        raise LifetimeError(
            f"total lifetime {lt.not_after - lt.not_before} s exceeds the maximum "
            f"{max_lifetime} s (§7.2)",
            rule="LN-16",
        )


def _check_required(leaf: LeafNode, required: RequiredCapabilities) -> None:
    caps = leaf.capabilities
    missing_ext = [t for t in required.extension_types if t not in caps.extensions]
    missing_prop = [t for t in required.proposal_types if t not in caps.proposals]
    missing_cred = [t for t in required.credential_types if t not in caps.credentials]
    if missing_ext or missing_prop or missing_cred:
        raise CapabilitiesError(
            "leaf lacks required capabilities: "
            f"extensions {missing_ext}, proposals {missing_prop}, credentials {missing_cred}",
            rule="TR-12",
        )


def check_credential_support(
    tree: RatchetTree,
    *,
    rule: str | CredentialSupportRule | None = None,
    with_leaf: tuple[LeafIndex, LeafNode] | None = None,
) -> None:
    """Every credential type in use is supported by every member (§7.3), in O(n).

    ``rule`` is the catalogue id a failure reports, or a function of the leaf that lacks a
    type in use and the types it lacks (whether a new member lacks a type, or a member lacks a
    new member's type, are different rules). ``with_leaf`` judges the tree as if that leaf
    were at that index (a committer's new leaf), without copying the tree."""
    leaves = list(tree.leaves())
    if with_leaf is not None:
        index, node = with_leaf
        leaves = [(i, leaf) for i, leaf in leaves if i != index] + [(index, node)]
    in_use: set[int] = set()
    supported_by_all: set[int] | None = None
    for _, leaf in leaves:
        in_use.add(leaf.credential.credential_type)
        caps = set(leaf.capabilities.credentials)
        supported_by_all = caps if supported_by_all is None else supported_by_all & caps
    if supported_by_all is None:
        return
    unsupported = in_use - supported_by_all
    if unsupported:
        for i, leaf in sorted(leaves, key=lambda item: item[0]):
            lacking = in_use - set(leaf.capabilities.credentials)
            if lacking:
                raise CredentialTypeError(
                    f"leaf {i} does not support credential type(s) {sorted(lacking)} in use",
                    rule=rule(i, lacking) if callable(rule) else rule,
                )


def check_unique_keys(tree: RatchetTree) -> None:
    """Encryption keys are unique across all nodes, signature keys across leaves (§7.3)."""
    encryption: dict[bytes, int] = {}
    signature: dict[bytes, int] = {}
    for i, leaf in tree.leaves():
        x = 2 * i
        other = encryption.setdefault(leaf.encryption_key, x)
        if other != x:
            raise DuplicateEncryptionKeyError(
                f"nodes {other} and {x} share an encryption key", rule="TR-08"
            )
        other_leaf = signature.setdefault(leaf.signature_key, i)
        if other_leaf != i:
            raise DuplicateSignatureKeyError(
                f"leaves {other_leaf} and {i} share a signature key", rule="TR-09"
            )
    for x, parent in tree.parents():
        other = encryption.setdefault(parent.encryption_key, x)
        if other != x:
            raise DuplicateEncryptionKeyError(
                f"nodes {other} and {x} share an encryption key", rule="TR-07"
            )


def check_unmerged_leaves(tree: RatchetTree) -> None:
    """Each unmerged leaf of a parent is a non-blank descendant, listed by every non-blank
    intermediate node too; lists are strictly increasing (§7.1, §12.4.3.1)."""
    n = tree.n_leaves
    for p, parent in tree.parents():
        unmerged = parent.unmerged_leaves
        if any(a >= b for a, b in pairwise(unmerged)):
            raise UnmergedLeafError(
                f"unmerged_leaves of node {p} are not sorted and unique", rule="TR-05"
            )
        for u in unmerged:
            leaf_node = NodeIndex(2 * u)
            if u >= n or tree.leaf(LeafIndex(u)) is None:
                raise UnmergedLeafError(
                    f"unmerged leaf {u} of node {p} is blank or absent",
                    rule="TR-05" if u >= n else "TR-04",
                )
            if not is_in_subtree(leaf_node, p):
                raise UnmergedLeafError(
                    f"unmerged leaf {u} is not a descendant of node {p}", rule="TR-04"
                )
            for x in direct_path(leaf_node, n):
                if x == p:
                    break
                between = tree.parent(x)
                if between is not None and u not in between.unmerged_leaves:
                    raise UnmergedLeafError(
                        f"node {x} between leaf {u} and node {p} does not list it as unmerged",
                        rule="TR-06",
                    )


def validate_tree(
    tree: RatchetTree,
    *,
    group_id: bytes,
    tree_hash: bytes,
    required_capabilities: RequiredCapabilities | None = None,
    now: int | None = None,
    max_lifetime: int | None = MAX_LEAF_LIFETIME,
    credential_validator: CredentialValidator | None = None,
    tree_hash_rule: str = "TR-01",
) -> None:
    """Validate a ratchet tree received when joining (§12.4.3.1).

    Checks the tree hash, that every parent is parent-hash valid, every leaf (§7.3), the
    uniqueness of keys, credential-type support and the unmerged-leaf invariants.
    ``tree_hash_rule`` is the catalogue id of a tree-hash mismatch (a tree given out of band
    to a Welcome or to an external joiner is checked under its own row).
    """
    if tree.tree_hash() != tree_hash:
        raise TreeHashError("the tree hash does not match the GroupContext", rule=tree_hash_rule)
    check_unique_keys(tree)
    check_unmerged_leaves(tree)
    verify_parent_hashes(tree)
    check_credential_support(tree, rule="LN-13")
    cs = tree.cipher_suite
    for i, leaf in tree.leaves():
        validate_leaf_node(
            cs,
            leaf,
            group_id=group_id,
            leaf_index=i,
            required_capabilities=required_capabilities,
            now=now,
            max_lifetime=max_lifetime,
        )
        if credential_validator is not None:
            validate_credential(
                credential_validator, leaf.credential, leaf.signature_key, rule="LN-31"
            )
