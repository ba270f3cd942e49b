"""Differential test: the public view of a group accepts a handshake exactly when a member does.

DESIGN.md, "One home per rule": the Delivery Service follows a group with a
:class:`PublicGroup` and judges commits with the very code a member uses, so it can never accept
what members reject where the rule is publicly checkable. This test checks that property with
seeded random walks. A walk keeps three to six members (:class:`Group` objects, PublicMessage
handshakes as ``GroupConfig`` has them by default, one fixed clock) and one public view built as
a Delivery Service builds it, from a member's GroupInfo with the members' clock. Each step is
one of

* a valid commit (add of a fresh KeyPackage, remove, commit of the cached proposals by
  reference, empty commit with a path): every member and the public view must accept it, and
  it is merged everywhere;
* a valid standalone proposal (add, remove, update) delivered to everyone, to be committed by
  reference later;
* a mutated handshake from :data:`MUTATIONS`: a proposal or commit broken in one field, built
  with the forging helpers of :mod:`group_helpers` so that it is signed with the real member's
  key, carries a valid membership tag and (for commits) the confirmation tag a receiver would
  compute. It goes to one member and to the public view; each side's outcome is accept or the
  class of the error it raised.

Each mutation is classified. For a ``public`` one (checkable without secrets) both sides must
accept or both reject, and when both reject, with the same error class. For a ``member`` one
(membership tag, confirmation tag, UpdatePath ciphertexts) only the member can tell, so only the
member's rejection is asserted. A side that rejects must be byte-for-byte unchanged
(``Group.to_bytes``, ``serialize_public_group``). ``expect`` names the error a member raises
when the mutation hits its rule; a member rejecting with another class means that the forgery
broke something else (a fault of this test) or that the member cites the wrong rule: that is
reported apart, with scope ``rule``. Steps that must succeed (valid commits and proposals at the
members, members agreeing with each other) fail as ``harness`` errors. A mutated commit both
sides accept is merged everywhere (its forger cannot follow the new epoch: its leaf stays in the
tree as a *ghost*, which later commits remove).

By default the test fails at the first divergence; with ``DIFF_REPORT=1`` in the environment
each walk runs to its end and fails with the list of all divergences it saw, after printing a
table of outcomes per mutation kind (run with ``-s`` to see it).
"""

from __future__ import annotations

import inspect
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from group_helpers import (
    forge_commit,
    forge_key_package,
    forge_proposal,
    make_group,
    ref_of,
    resign_leaf,
    update_leaf,
)
from mlspy.credentials import CredentialError
from mlspy.errors import (
    CommitError,
    ConfirmationTagError,
    CredentialTypeError,
    MembershipTagError,
    ParentHashError,
    PathRequiredError,
    ProposalError,
    ProposalListError,
    SignatureError,
    UpdatePathError,
)
from mlspy.group import (
    Group,
    GroupConfig,
    KeyPackageBundle,
    SigningIdentity,
    create_key_package,
)
from mlspy.group.public_group import (
    PublicGroup,
    deserialize_public_group,
    serialize_public_group,
)
from mlspy.messages import (
    Add,
    Credential,
    CredentialType,
    Extension,
    ExternalInit,
    GroupContextExtensions,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    MLSMessage,
    Proposal,
    ProposalOrRef,
    ProtocolVersion,
    ReInit,
    Remove,
    Update,
    UpdatePath,
)

SEEDS = range(12)
STEPS = 40
REPORT = os.environ.get("DIFF_REPORT") == "1"
SUITES = (1, 3)  # X25519/Ed25519 with AES-GCM and with ChaCha20: fast, and two of them
MAX_MEMBERS = 6
MIN_MEMBERS = 3
DAY = 24 * 3600
MAX_LEAF = 0xFFFFFFFF
# A credential type nobody lists but the leaf that uses it (a private-use value, §17.1).
ODD_CREDENTIAL = 0xF0A0
UNKNOWN_EXTENSION = 0xF0F0


class NoBannedNames:
    """The Authentication Service hook of the members: Basic credentials named ``banned-…``
    are refused."""

    def validate(self, credential: Credential, signature_key: bytes) -> None:
        if credential.credential_type == CredentialType.basic and (
            credential.identity or b""
        ).startswith(b"banned-"):
            raise CredentialError("this name is banned")


def public_options(function: Callable[..., Any], config: GroupConfig) -> dict[str, Any]:
    """The leaf checks of the members for the public view: their whole ``config`` where the
    public view takes one, else their clock as ``now``."""
    if "config" in inspect.signature(function).parameters:
        return {"config": config}
    return {"now": config.now()}


def flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1]) if data else b"\x01"


# --- Outcomes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Accepted (with the event returned) or rejected (with the error's class and text)."""

    error: type[BaseException] | None = None
    text: str = ""
    event: Any = None

    @property
    def accepted(self) -> bool:
        return self.error is None

    @property
    def short(self) -> str:
        return "accept" if self.error is None else self.error.__name__

    def __str__(self) -> str:
        return "accept" if self.error is None else f"{self.error.__name__}: {self.text}"


def attempt(process: Callable[[bytes], Any], message: bytes) -> Outcome:
    try:
        event = process(message)
    except Exception as exc:  # any class escaping is an outcome to compare, not a crash
        return Outcome(type(exc), str(exc))
    return Outcome(event=event)


@dataclass(frozen=True)
class Divergence:
    seed: int
    step: int
    kind: str
    scope: str
    member: Outcome
    public: Outcome
    note: str = ""

    def __str__(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return (
            f"seed={self.seed} step={self.step} kind={self.kind} [{self.scope}]{note}: "
            f"member -> {self.member}; public view -> {self.public}"
        )


# --- Mutations ------------------------------------------------------------------------------

Builder = Callable[["Walk", Group], bytes | None]


@dataclass(frozen=True)
class Mutation:
    """``scope``: ``public`` (parity asserted) or ``member`` (needs secrets: only the member's
    rejection is asserted). ``expect``: the member's error when the mutation hits its rule
    (None for a control that is valid)."""

    scope: str
    expect: type[Exception] | None
    build: Builder


class NewLeafAs:
    """``member`` as :func:`forge_commit` reads it, except that its new path leaf is built and
    signed for ``identity``: the UpdatePath, parent hashes and confirmation tag are then
    honest for that leaf. (Pass the member's own key as ``signature_private_key``.) Everything
    but the identity is read from the member, whichever attributes the helper reads."""

    def __init__(self, member: Group, identity: SigningIdentity) -> None:
        self._member = member
        self.identity = identity
        self._identity = identity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._member, name)


def broken_key_package(walk: Walk, sender: Group, how: str) -> KeyPackage | None:
    """A KeyPackage broken as ``how`` says; everything else about it valid and signed."""
    ident = walk.fresh_identity()
    now = walk.now
    caps = ident.capabilities
    if how == "wrong_suite":
        other = next(s for s in SUITES if s != walk.suite)
        return forge_key_package(ident, cipher_suite=other)
    if how == "wrong_version":
        return forge_key_package(ident, version=ProtocolVersion.mls10 + 1)
    if how == "bad_signature":
        return forge_key_package(ident, sign=False, signature=lambda kp: flip(kp.signature))
    if how == "bad_leaf_signature":
        return forge_key_package(ident, leaf_changes={"signature": bytes(64)}, sign_leaf=False)
    if how == "expired":
        return forge_key_package(
            ident, leaf_changes={"lifetime": Lifetime(now - 20 * DAY, now - 10 * DAY)}
        )
    if how == "not_yet_valid":
        return forge_key_package(
            ident, leaf_changes={"lifetime": Lifetime(now + 10 * DAY, now + 20 * DAY)}
        )
    if how == "overlong_lifetime":
        return forge_key_package(
            ident, leaf_changes={"lifetime": Lifetime(now - 3600, now + 20 * 365 * DAY)}
        )
    if how == "leaf_source_update":
        return forge_key_package(
            ident, leaf_changes={"leaf_node_source": LeafNodeSource.update, "lifetime": None}
        )
    if how == "init_key_is_encryption_key":
        return forge_key_package(ident, init_key=lambda kp: kp.leaf_node.encryption_key)
    if how == "duplicate_signature_key":
        return create_key_package(walk.rng.choice(walk.members).identity, now=now).key_package
    if how == "duplicate_encryption_key":
        other = walk.leaf(walk.rng.choice(walk.members))
        return forge_key_package(ident, leaf_changes={"encryption_key": other.encryption_key})
    if how == "credential_not_in_own_capabilities":
        caps = replace(caps, credentials=(CredentialType.x509,))
        return forge_key_package(ident, leaf_changes={"capabilities": caps})
    if how == "credential_unsupported_by_members":
        return create_key_package(walk.odd_identity(), now=now).key_package
    if how == "banned_credential":
        return create_key_package(walk.fresh_identity(b"banned-"), now=now).key_package
    raise AssertionError(how)


KEY_PACKAGE_BREAKS: dict[str, type[Exception]] = {
    "wrong_suite": ProposalError,
    "wrong_version": ProposalError,
    "bad_signature": ProposalError,
    "bad_leaf_signature": ProposalError,
    "expired": ProposalError,
    "not_yet_valid": ProposalError,
    "overlong_lifetime": ProposalError,
    "leaf_source_update": ProposalError,
    "init_key_is_encryption_key": ProposalError,
    "duplicate_signature_key": ProposalListError,
    "duplicate_encryption_key": ProposalListError,
    "credential_not_in_own_capabilities": ProposalError,
    "credential_unsupported_by_members": CredentialTypeError,
    "banned_credential": CredentialError,
}


def broken_update(walk: Walk, sender: Group, how: str) -> LeafNode | None:
    """An Update LeafNode for ``sender`` broken as ``how`` says, else valid and signed."""
    other = walk.other(sender)
    caps = sender.identity.capabilities
    if how == "same_encryption_key":
        return update_leaf(sender, encryption_key=walk.leaf(sender).encryption_key)
    if how == "duplicate_encryption_key":
        if other is None:
            return None
        return update_leaf(sender, encryption_key=walk.leaf(other).encryption_key)
    if how == "other_signature_key":
        if other is None:
            return None
        ident = other.identity
        return update_leaf(
            sender,
            signature_key=ident.signature_key,
            signature_private_key=ident.signature_private_key,
        )
    if how == "wrong_source":
        lifetime = Lifetime(walk.now - 3600, walk.now + DAY)
        return update_leaf(sender, leaf_node_source=LeafNodeSource.key_package, lifetime=lifetime)
    if how == "bad_signature":
        leaf = update_leaf(sender)
        return replace(leaf, signature=flip(leaf.signature))
    if how == "credential_not_in_own_capabilities":
        return update_leaf(sender, capabilities=replace(caps, credentials=(CredentialType.x509,)))
    if how == "credential_unsupported_by_members":
        odd = walk.odd_identity()
        return update_leaf(sender, credential=odd.credential, capabilities=odd.capabilities)
    if how == "banned_credential":
        return update_leaf(sender, credential=Credential.basic(b"banned-" + walk.name()))
    raise AssertionError(how)


UPDATE_BREAKS: dict[str, type[Exception]] = {
    "same_encryption_key": ProposalError,
    "duplicate_encryption_key": ProposalError,
    "other_signature_key": ProposalError,
    "wrong_source": ProposalError,
    "bad_signature": ProposalError,
    "credential_not_in_own_capabilities": ProposalError,
    "credential_unsupported_by_members": CredentialTypeError,
    "banned_credential": CredentialError,
}


def remove_target(walk: Walk, sender: Group, where: str) -> int | None:
    tree = sender.tree
    if where == "blank":
        blanks = [i for i in range(tree.n_leaves) if tree.leaf(i) is None]  # type: ignore[arg-type]
        return walk.rng.choice(blanks) if blanks else None
    if where == "absent":
        return tree.n_leaves + walk.rng.randrange(3)
    return MAX_LEAF


# Proposals sent on their own.


def proposal_remove(where: str) -> Builder:
    def build(walk: Walk, sender: Group) -> bytes | None:
        target = remove_target(walk, sender, where)
        return None if target is None else forge_proposal(sender, Proposal(Remove(target)))

    return build


def proposal_add(how: str) -> Builder:
    def build(walk: Walk, sender: Group) -> bytes | None:
        kp = broken_key_package(walk, sender, how)
        return None if kp is None else forge_proposal(sender, Proposal(Add(kp)))

    return build


def proposal_update(how: str) -> Builder:
    def build(walk: Walk, sender: Group) -> bytes | None:
        leaf = broken_update(walk, sender, how)
        return None if leaf is None else forge_proposal(sender, Proposal(Update(leaf)))

    return build


def proposal_valid(walk: Walk, sender: Group) -> bytes | None:
    target = walk.other_leaf(sender)
    return None if target is None else forge_proposal(sender, Proposal(Remove(target)))


def proposal_bad_membership_tag(walk: Walk, sender: Group) -> bytes | None:
    message = proposal_valid(walk, sender)
    if message is None:
        return None
    pm = MLSMessage.decode(message).public_message
    assert pm is not None and pm.membership_tag is not None
    return MLSMessage.wrap(replace(pm, membership_tag=flip(pm.membership_tag))).encode()


# Commits.


def commit_of(*make: Callable[[Walk, Group], Proposal | ProposalOrRef | None]) -> Builder:
    """A commit (path as §12.4 requires) of the proposals ``make`` build, by value."""

    def build(walk: Walk, sender: Group) -> bytes | None:
        proposals = [m(walk, sender) for m in make]
        if any(p is None for p in proposals):
            return None
        return forge_commit(sender, proposals)  # type: ignore[arg-type]

    return build


def remove_of(where: str) -> Callable[[Walk, Group], Proposal | None]:
    def make(walk: Walk, sender: Group) -> Proposal | None:
        target = remove_target(walk, sender, where)
        return None if target is None else Proposal(Remove(target))

    return make


def remove_other(walk: Walk, sender: Group) -> Proposal | None:
    target = walk.other_leaf(sender)
    return None if target is None else Proposal(Remove(target))


def add_of(how: str) -> Callable[[Walk, Group], Proposal | None]:
    def make(walk: Walk, sender: Group) -> Proposal | None:
        kp = broken_key_package(walk, sender, how)
        return None if kp is None else Proposal(Add(kp))

    return make


def commit_remove_twice(walk: Walk, sender: Group) -> bytes | None:
    p = remove_other(walk, sender)
    return None if p is None else forge_commit(sender, [p, p])


def commit_add_twice(walk: Walk, sender: Group) -> bytes | None:
    p = Proposal(Add(create_key_package(walk.fresh_identity(), now=walk.now).key_package))
    return forge_commit(sender, [p, p])


def commit_own_update(walk: Walk, sender: Group) -> bytes | None:
    return forge_commit(sender, [Proposal(Update(update_leaf(sender)))])


def commit_two_gces(walk: Walk, sender: Group) -> bytes | None:
    gce = Proposal(GroupContextExtensions(sender.extensions))
    return forge_commit(sender, [gce, gce])


def commit_reinit_with_others(walk: Walk, sender: Group) -> bytes | None:
    remove = remove_other(walk, sender)
    if remove is None:
        return None
    reinit = ReInit(walk.rng.randbytes(32), ProtocolVersion.mls10, walk.suite, ())
    return forge_commit(sender, [Proposal(reinit), remove])


def commit_external_init(walk: Walk, sender: Group) -> bytes | None:
    return forge_commit(sender, [Proposal(ExternalInit(walk.rng.randbytes(32)))])


def commit_unknown_reference(walk: Walk, sender: Group) -> bytes | None:
    return forge_commit(sender, [ProposalOrRef.by_reference(walk.rng.randbytes(32))])


def commit_update_and_remove(walk: Walk, sender: Group) -> bytes | None:
    """A cached Update of another member by reference and a Remove of that member (the
    Update is first proposed, validly, if none is cached)."""
    updates = [m for m, p, b in walk.pending if isinstance(b, Update) and p is not sender]
    if not updates:
        touched = walk.touched()
        free = [g for g in walk.members if g is not sender and int(g.own_leaf_index) not in touched]
        if not free:
            return None
        updates.append(walk.valid_proposal(walk.rng.choice(free), "update"))
    ref = ref_of(sender, updates[0])
    return forge_commit(sender, [ref, Proposal(Remove(ref.sender))])


def commit_path_missing(walk: Walk, sender: Group) -> bytes | None:
    p = remove_other(walk, sender)
    return None if p is None else forge_commit(sender, [p], path=False)


def commit_bad_content_signature(walk: Walk, sender: Group) -> bytes | None:
    other = walk.other(sender)
    if other is None:
        return None
    return forge_commit(sender, signature_private_key=other.identity.signature_private_key)


def commit_new_leaf_as(make: Callable[[Walk, Group], SigningIdentity | None]) -> Builder:
    """An empty commit whose path leaf is built honestly for another identity."""

    def build(walk: Walk, sender: Group) -> bytes | None:
        ident = make(walk, sender)
        if ident is None:
            return None
        return forge_commit(
            NewLeafAs(sender, ident),  # type: ignore[arg-type]
            signature_private_key=sender.identity.signature_private_key,
        )

    return build


def as_other_signature_key(walk: Walk, sender: Group) -> SigningIdentity | None:
    other = walk.other(sender)
    if other is None:
        return None
    o = other.identity
    return replace(
        sender.identity,
        signature_key=o.signature_key,
        signature_private_key=o.signature_private_key,
    )


def as_credential_not_in_own_capabilities(walk: Walk, sender: Group) -> SigningIdentity:
    caps = sender.identity.capabilities
    return replace(sender.identity, capabilities=replace(caps, credentials=(CredentialType.x509,)))


def as_credential_unsupported_by_members(walk: Walk, sender: Group) -> SigningIdentity:
    odd = walk.odd_identity()
    return replace(sender.identity, credential=odd.credential, capabilities=odd.capabilities)


def as_banned_credential(walk: Walk, sender: Group) -> SigningIdentity:
    return replace(sender.identity, credential=Credential.basic(b"banned-" + walk.name()))


def as_unknown_extension(walk: Walk, sender: Group) -> SigningIdentity:
    return replace(sender.identity, leaf_extensions=(Extension(UNKNOWN_EXTENSION, b""),))


def commit_path(tweak: Callable[[Walk, Group, UpdatePath], UpdatePath]) -> Builder:
    """An empty commit (path required) whose UpdatePath is edited before signing; the
    confirmation tag is computed honestly from the edited commit."""

    def build(walk: Walk, sender: Group) -> bytes | None:
        return forge_commit(sender, tweak_path=lambda path: tweak(walk, sender, path))

    return build


def resigned_path_leaf(sender: Group, path: UpdatePath, **changes: Any) -> UpdatePath:
    leaf = replace(path.leaf_node, **changes)
    leaf = resign_leaf(
        sender, leaf, sender.identity.signature_private_key, int(sender.own_leaf_index)
    )
    return replace(path, leaf_node=leaf)


def path_leaf_update_source(walk: Walk, sender: Group, path: UpdatePath) -> UpdatePath:
    return resigned_path_leaf(
        sender, path, leaf_node_source=LeafNodeSource.update, parent_hash=None
    )


def path_leaf_expired_key_package_source(walk: Walk, sender: Group, path: UpdatePath) -> UpdatePath:
    lifetime = Lifetime(walk.now - 20 * DAY, walk.now - 10 * DAY)
    return resigned_path_leaf(
        sender,
        path,
        leaf_node_source=LeafNodeSource.key_package,
        parent_hash=None,
        lifetime=lifetime,
    )


def path_leaf_bad_signature(walk: Walk, sender: Group, path: UpdatePath) -> UpdatePath:
    return replace(
        path, leaf_node=replace(path.leaf_node, signature=flip(path.leaf_node.signature))
    )


def path_too_few_nodes(walk: Walk, sender: Group, path: UpdatePath) -> UpdatePath:
    return replace(path, nodes=path.nodes[:-1])


def path_too_many_nodes(walk: Walk, sender: Group, path: UpdatePath) -> UpdatePath:
    return replace(path, nodes=(*path.nodes, path.nodes[-1]))


def path_node_key_replaced(walk: Walk, sender: Group, path: UpdatePath) -> UpdatePath:
    i = walk.rng.randrange(len(path.nodes))
    _, fresh = sender.cipher_suite.hpke_key_pair()
    nodes = list(path.nodes)
    nodes[i] = replace(nodes[i], encryption_key=fresh)
    return replace(path, nodes=tuple(nodes))


def path_ciphertexts_flipped(walk: Walk, sender: Group, path: UpdatePath) -> UpdatePath:
    nodes = tuple(
        replace(
            n,
            encrypted_path_secret=tuple(
                replace(c, ciphertext=flip(c.ciphertext)) for c in n.encrypted_path_secret
            ),
        )
        for n in path.nodes
    )
    return replace(path, nodes=nodes)


def path_kem_outputs_flipped(walk: Walk, sender: Group, path: UpdatePath) -> UpdatePath:
    nodes = tuple(
        replace(
            n,
            encrypted_path_secret=tuple(
                replace(c, kem_output=flip(c.kem_output)) for c in n.encrypted_path_secret
            ),
        )
        for n in path.nodes
    )
    return replace(path, nodes=nodes)


def commit_bad_membership_tag(walk: Walk, sender: Group) -> bytes | None:
    return forge_commit(sender, membership_key=walk.rng.randbytes(sender.cipher_suite.nh))


def commit_bad_confirmation_tag(walk: Walk, sender: Group) -> bytes | None:
    return forge_commit(sender, confirmation_tag=walk.rng.randbytes(sender.cipher_suite.nh))


def commit_valid(walk: Walk, sender: Group) -> bytes | None:
    p = remove_other(walk, sender)
    return None if p is None else forge_commit(sender, [p])


MUTATIONS: dict[str, Mutation] = {
    # Controls: forged like the others but valid; both sides must accept.
    "proposal.valid_remove": Mutation("public", None, proposal_valid),
    "commit.valid_remove": Mutation("public", None, commit_valid),
    # Standalone proposals (§12.1).
    **{
        f"proposal.remove_{where}_leaf": Mutation("public", ProposalError, proposal_remove(where))
        for where in ("blank", "absent", "4294967295")
    },
    **{
        f"proposal.add.{how}": Mutation("public", error, proposal_add(how))
        for how, error in KEY_PACKAGE_BREAKS.items()
    },
    **{
        f"proposal.update.{how}": Mutation("public", error, proposal_update(how))
        for how, error in UPDATE_BREAKS.items()
    },
    # Proposal lists of commits (§12.1, §12.2).
    **{
        f"commit.remove_{where}_leaf": Mutation(
            "public", ProposalError, commit_of(remove_of(where))
        )
        for where in ("blank", "absent", "4294967295")
    },
    **{
        f"commit.add.{how}": Mutation("public", error, commit_of(add_of(how)))
        for how, error in KEY_PACKAGE_BREAKS.items()
    },
    "commit.remove_same_leaf_twice": Mutation("public", ProposalListError, commit_remove_twice),
    "commit.add_same_key_package_twice": Mutation("public", ProposalListError, commit_add_twice),
    "commit.remove_committer": Mutation(
        "public",
        ProposalListError,
        commit_of(lambda w, s: Proposal(Remove(int(s.own_leaf_index)))),
    ),
    "commit.update_of_committer": Mutation("public", ProposalListError, commit_own_update),
    "commit.two_group_context_extensions": Mutation("public", ProposalListError, commit_two_gces),
    "commit.reinit_with_others": Mutation("public", ProposalListError, commit_reinit_with_others),
    "commit.external_init_in_regular_commit": Mutation(
        "public", ProposalListError, commit_external_init
    ),
    "commit.unknown_proposal_reference": Mutation(
        "public", ProposalListError, commit_unknown_reference
    ),
    "commit.update_and_remove_of_same_leaf": Mutation(
        "public", ProposalListError, commit_update_and_remove
    ),
    # Commit framing and path (§12.4.2, §7.3, §7.9).
    "commit.path_missing": Mutation("public", PathRequiredError, commit_path_missing),
    "commit.bad_content_signature": Mutation(
        "public", SignatureError, commit_bad_content_signature
    ),
    "commit.path_leaf.other_signature_key": Mutation(
        "public", CommitError, commit_new_leaf_as(as_other_signature_key)
    ),
    "commit.path_leaf.credential_not_in_own_capabilities": Mutation(
        "public", CommitError, commit_new_leaf_as(as_credential_not_in_own_capabilities)
    ),
    "commit.path_leaf.credential_unsupported_by_members": Mutation(
        "public", CredentialTypeError, commit_new_leaf_as(as_credential_unsupported_by_members)
    ),
    "commit.path_leaf.banned_credential": Mutation(
        "public", CredentialError, commit_new_leaf_as(as_banned_credential)
    ),
    "commit.path_leaf.extension_not_in_capabilities": Mutation(
        "public", CommitError, commit_new_leaf_as(as_unknown_extension)
    ),
    "commit.path_leaf.update_source": Mutation(
        "public", CommitError, commit_path(path_leaf_update_source)
    ),
    "commit.path_leaf.expired_key_package_source": Mutation(
        "public", CommitError, commit_path(path_leaf_expired_key_package_source)
    ),
    "commit.path_leaf.bad_signature": Mutation(
        "public", CommitError, commit_path(path_leaf_bad_signature)
    ),
    "commit.path.too_few_nodes": Mutation(
        "public", UpdatePathError, commit_path(path_too_few_nodes)
    ),
    "commit.path.too_many_nodes": Mutation(
        "public", UpdatePathError, commit_path(path_too_many_nodes)
    ),
    "commit.path.node_key_replaced": Mutation(
        "public", ParentHashError, commit_path(path_node_key_replaced)
    ),
    # Only a member can check these: they need the epoch's secrets or the path secrets.
    "proposal.bad_membership_tag": Mutation(
        "member", MembershipTagError, proposal_bad_membership_tag
    ),
    "commit.bad_membership_tag": Mutation("member", MembershipTagError, commit_bad_membership_tag),
    "commit.bad_confirmation_tag": Mutation(
        "member", ConfirmationTagError, commit_bad_confirmation_tag
    ),
    "commit.path.ciphertexts_flipped": Mutation(
        "member", UpdatePathError, commit_path(path_ciphertexts_flipped)
    ),
    "commit.path.kem_outputs_flipped": Mutation(
        "member", UpdatePathError, commit_path(path_kem_outputs_flipped)
    ),
}


# --- The walk -------------------------------------------------------------------------------


@dataclass
class Walk:
    seed: int
    rng: random.Random
    suite: int
    now: int
    config: GroupConfig
    members: list[Group]
    public: PublicGroup
    # Proposals every member (and the public view) cached this epoch: (message, proposer, body).
    pending: list[tuple[bytes, Group, object]] = field(default_factory=list)
    # Members that cached a mutated proposal nobody else has: they must not commit the cache.
    tainted: set[int] = field(default_factory=set)
    # KeyPackages proposed or committed whose owners join when a Welcome adds them.
    bundles: dict[bytes, KeyPackageBundle] = field(default_factory=dict)
    step: int = 0
    names: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    stats: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, seed: int) -> Walk:
        rng = random.Random(seed)
        suite = SUITES[seed % len(SUITES)]
        now = int(time.time())
        config = GroupConfig(clock=lambda: now, credential_validator=NoBannedNames())
        n = rng.randint(MIN_MEMBERS, MAX_MEMBERS - 1)
        ids = [SigningIdentity.generate(f"s{seed}-m{i}".encode(), suite) for i in range(n)]
        members = make_group(n, identities=ids, config=config)
        public = cls.follow(members[0], config)
        # Each walk starts with its own share of the kinds, so that the seeds together try
        # every kind; then it goes on with all of them in a random order.
        kinds = list(MUTATIONS)
        share = -(-len(kinds) // len(SEEDS))
        start = (seed % len(SEEDS)) * share
        own, rest = kinds[start : start + share], kinds[:start] + kinds[start + share :]
        rng.shuffle(own)
        rng.shuffle(rest)
        kinds = own + rest
        return cls(seed, rng, suite, now, config, members, public, kinds=kinds)

    @staticmethod
    def follow(member: Group, config: GroupConfig) -> PublicGroup:
        """The Delivery Service's view, from a GroupInfo, with the members' leaf checks."""
        options = public_options(PublicGroup.from_group_info, config)
        return PublicGroup.from_group_info(member.group_info(), **options)

    # --- Helpers --------------------------------------------------------------------------

    def name(self) -> bytes:
        self.names += 1
        return f"s{self.seed}-n{self.names}".encode()

    def fresh_identity(self, prefix: bytes = b"") -> SigningIdentity:
        return SigningIdentity.generate(prefix + self.name(), self.suite)

    def odd_identity(self) -> SigningIdentity:
        """An identity with a credential type that only it supports."""
        ident = self.fresh_identity()
        caps = ident.capabilities
        return replace(
            ident,
            credential=Credential.custom(ODD_CREDENTIAL, b"odd"),
            capabilities=replace(caps, credentials=(*caps.credentials, ODD_CREDENTIAL)),
        )

    def leaf(self, member: Group) -> LeafNode:
        node = member.tree.leaf(member.own_leaf_index)
        assert node is not None
        return node

    def other(self, member: Group) -> Group | None:
        others = [g for g in self.members if g is not member]
        return self.rng.choice(others) if others else None

    def occupied(self) -> list[int]:
        return [int(m.leaf_index) for m in self.members[0].members()]

    def ghosts(self) -> list[int]:
        """Leaves in the tree that no walking member holds (forgers of accepted commits)."""
        held = {int(g.own_leaf_index) for g in self.members}
        return [i for i in self.occupied() if i not in held]

    def other_leaf(self, member: Group) -> int | None:
        leaves = [i for i in self.occupied() if i != int(member.own_leaf_index)]
        return self.rng.choice(leaves) if leaves else None

    def touched(self) -> set[int]:
        """Leaves a cached proposal already updates or removes."""
        out: set[int] = set()
        for _, proposer, body in self.pending:
            if isinstance(body, Remove):
                out.add(body.removed)
            elif isinstance(body, Update):
                out.add(int(proposer.own_leaf_index))
        return out

    # --- Recording ------------------------------------------------------------------------

    def diverge(
        self, kind: str, scope: str, member: Outcome, public: Outcome, note: str = ""
    ) -> None:
        d = Divergence(self.seed, self.step, kind, scope, member, public, note)
        self.divergences.append(d)
        if not REPORT:
            pytest.fail(f"divergence: {d}", pytrace=False)

    def harness(self, text: str) -> None:
        pytest.fail(f"harness (not a divergence): seed={self.seed} step={self.step}: {text}")

    # --- Steps ----------------------------------------------------------------------------

    def run(self, steps: int) -> None:
        for self.step in range(steps):
            if len(self.members) < MIN_MEMBERS:
                self.valid_commit("add")
            elif (r := self.rng.random()) < 0.25:
                self.valid_commit()
            elif r < 0.4:
                self.valid_proposal()
            else:
                self.mutation()
            self.check_agreement()

    def valid_commit(self, kind: str | None = None) -> None:
        choices = ["empty"]
        if len(self.members) < MAX_MEMBERS:
            choices.append("add")
        if self.ghosts() or len(self.members) > MIN_MEMBERS:
            choices.append("remove")
        if self.pending and len(self.tainted) < len(self.members):
            choices += ["pending"] * len(choices)  # commit what was proposed, mostly
        kind = kind or self.rng.choice(choices)
        candidates = self.members
        if kind == "pending":
            candidates = [g for g in self.members if id(g) not in self.tainted]
        committer = self.rng.choice(candidates)
        proposals: list[Proposal] = []
        if kind == "add":
            bundle = create_key_package(self.fresh_identity(), now=self.now)
            self.bundles[bundle.key_package.leaf_node.signature_key] = bundle
            proposals.append(Proposal(Add(bundle.key_package)))
        elif kind == "remove":
            ghosts = self.ghosts()
            others = [int(g.own_leaf_index) for g in self.members if g is not committer]
            proposals.append(Proposal(Remove(self.rng.choice(ghosts or others))))
        out = committer.commit(
            proposals, force_path=kind == "empty", include_pending=kind == "pending"
        )
        self.apply_commit(out.commit, committer, f"valid.commit.{kind}", out.welcome)
        committer.merge_pending_commit()
        self.after_epoch_change(out.welcome)

    def apply_commit(
        self, message: bytes, committer: Group | None, label: str, welcome: bytes | None
    ) -> None:
        """Every member but ``committer`` and the public view accept and merge ``message``."""
        for g in self.members:
            if g is committer:
                continue
            got = attempt(g.process, message)
            if not got.accepted:
                self.harness(f"{label}: member {int(g.own_leaf_index)} rejected it: {got}")
            g.merge_staged_commit(got.event)
        public = attempt(self.public.process, message)
        self.stats.setdefault(label, Counter())[("accept", public.short)] += 1
        if public.accepted:
            self.public.merge(public.event)
        else:
            self.diverge(label, "public", Outcome(), public)

    def after_epoch_change(self, welcome: bytes | None) -> None:
        self.members = [g for g in self.members if g.active]
        in_tree = {m.signature_key for m in self.members[0].members()}
        for key, bundle in self.bundles.items():
            if welcome is not None and key in in_tree:
                self.members.append(Group.join(welcome, bundle, config=self.config))
                self.stats.setdefault("valid.join_from_welcome", Counter())[("accept", "-")] += 1
        self.bundles.clear()
        self.pending.clear()
        self.tainted.clear()
        if self.public.epoch != self.members[0].epoch:
            # The public view rejected a valid commit (recorded): follow the group again.
            self.public = self.follow(self.members[0], self.config)

    def valid_proposal(self, proposer: Group | None = None, kind: str | None = None) -> bytes:
        """A valid proposal, delivered to every member and the public view, and cached."""
        proposer = proposer or self.rng.choice(self.members)
        touched = self.touched()
        removable = [
            i for i in self.occupied() if i not in touched and i != int(proposer.own_leaf_index)
        ]
        member_removes = sum(
            1
            for _, _, b in self.pending
            if isinstance(b, Remove) and b.removed not in self.ghosts()
        )
        if len(self.members) - member_removes <= MIN_MEMBERS:
            removable = [i for i in removable if i in self.ghosts()]
        choices = ["add"]
        if removable:
            choices.append("remove")
        if int(proposer.own_leaf_index) not in touched:
            choices.append("update")
        kind = kind or self.rng.choice(choices)
        if kind == "add":
            bundle = create_key_package(self.fresh_identity(), now=self.now)
            self.bundles[bundle.key_package.leaf_node.signature_key] = bundle
            body: object = Add(bundle.key_package)
            message = proposer.propose_add(bundle.key_package)
        elif kind == "remove":
            body = Remove(self.rng.choice(removable))
            message = proposer.propose_remove(body.removed)  # type: ignore[attr-defined]
        else:
            message = proposer.propose_update()
            body = Update(self.leaf(proposer))  # a marker: only its type is read
        for g in self.members:
            if g is proposer:
                continue
            got = attempt(g.process, message)
            if not got.accepted:
                self.harness(f"valid {kind} proposal rejected by a member: {got}")
        public = attempt(self.public.process, message)
        label = f"valid.proposal.{kind}"
        self.stats.setdefault(label, Counter())[("accept", public.short)] += 1
        if not public.accepted:
            self.diverge(label, "public", Outcome(), public)
        self.pending.append((message, proposer, body))
        return message

    def next_kind(self) -> str:
        kind = self.kinds.pop(0)
        self.kinds.append(kind)
        return kind

    def mutation(self) -> None:
        for _ in range(len(self.kinds)):
            kind = self.next_kind()
            sender = self.rng.choice(self.members)
            message = MUTATIONS[kind].build(self, sender)
            if message is not None:
                break
        else:  # pragma: no cover - the controls always build
            self.harness("no mutation could be built")
        receiver = self.other(sender)
        assert receiver is not None
        self.judge(kind, message, sender, receiver)

    def judge(self, kind: str, message: bytes, sender: Group, receiver: Group) -> None:
        spec = MUTATIONS[kind]
        member_before = receiver.to_bytes()
        public_before = serialize_public_group(self.public)
        member = attempt(receiver.process, message)
        public = attempt(self.public.process, message)
        self.stats.setdefault(kind, Counter())[(member.short, public.short)] += 1

        if not member.accepted and receiver.to_bytes() != member_before:
            self.diverge(kind, spec.scope, member, public, "the member changed on rejecting it")
        if not public.accepted and serialize_public_group(self.public) != public_before:
            self.diverge(kind, spec.scope, member, public, "the public view changed on rejecting")
        if spec.scope == "public":
            if member.accepted != public.accepted or member.error is not public.error:
                self.diverge(kind, spec.scope, member, public)
        elif member.accepted:
            self.diverge(kind, spec.scope, member, public, "a member accepted it")
        if not member.accepted and member.error is not spec.expect:
            # The member rejected it under another rule than the one the mutation breaks:
            # either the forgery is wrong (this test's fault) or the member cites the wrong
            # rule. Reported apart from the parity divergences.
            expected = spec.expect.__name__ if spec.expect else "accept"
            self.diverge(kind, "rule", member, public, f"expected the member to raise {expected}")

        pm = MLSMessage.decode(message).public_message
        assert pm is not None
        if pm.content.commit is not None:
            if member.accepted and public.accepted:
                self.merge_forged_commit(message, sender, receiver, member, public)
            # Otherwise nothing was merged: neither side changed.
            return
        if member.accepted:
            self.tainted.add(id(receiver))
        if public.accepted:
            # Nobody else holds the proposal: the public view must not either.
            options = public_options(deserialize_public_group, self.config)
            self.public = deserialize_public_group(public_before, **options)

    def merge_forged_commit(
        self, message: bytes, sender: Group, receiver: Group, member: Outcome, public: Outcome
    ) -> None:
        """Both sides accepted a forged commit: it is valid. Everyone follows it but its
        forger, which has no path secrets for it and stays in the tree as a ghost."""
        receiver.merge_staged_commit(member.event)
        self.public.merge(public.event)
        for g in self.members:
            if g is sender or g is receiver:
                continue
            got = attempt(g.process, message)
            if not got.accepted:
                self.harness(f"a member rejected a commit another member accepted: {got}")
            g.merge_staged_commit(got.event)
        self.members = [g for g in self.members if g is not sender]
        self.after_epoch_change(None)

    def check_agreement(self) -> None:
        first = self.members[0]
        for g in self.members[1:]:
            if (g.epoch, g.epoch_authenticator, g.context) != (
                first.epoch,
                first.epoch_authenticator,
                first.context,
            ):
                self.harness(
                    f"members disagree: {int(g.own_leaf_index)} vs {int(first.own_leaf_index)}"
                )
        if self.public.context.encode() != first.context.encode():
            self.diverge(
                "state.group_context", "public", Outcome(), Outcome(AssertionError, "differs")
            )
            self.public = self.follow(first, self.config)

    def report(self) -> str:
        lines = [f"seed {self.seed}: outcomes per mutation kind (member, public view) -> count"]
        for kind in sorted(self.stats):
            counts = ", ".join(f"{m}/{p} x{n}" for (m, p), n in sorted(self.stats[kind].items()))
            scope = MUTATIONS[kind].scope if kind in MUTATIONS else "valid"
            lines.append(f"  {kind} [{scope}]: {counts}")
        lines += [f"  DIVERGENCE {d}" for d in self.divergences]
        return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_public_view_accepts_exactly_what_members_accept(seed: int) -> None:
    walk = Walk.start(seed)
    walk.run(STEPS)
    if REPORT:
        print(walk.report())
    if walk.divergences:
        listing = "\n".join(str(d) for d in walk.divergences)
        pytest.fail(f"{len(walk.divergences)} divergences:\n{listing}", pytrace=False)
