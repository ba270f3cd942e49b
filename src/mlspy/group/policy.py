"""The group's membership policy: who may join, who may add and remove (RFC 9750 §8.3.1).

RFC 9420 leaves "the application-level permission to add new users" to the application and
makes a proposal list that lacks it invalid (§12.2); an external proposal "that is not
authorized" is invalid too (§12.1.8). mlspy carries the policy in the group itself, as a
GroupContext extension, so that every member and the Delivery Service judge by the same
policy, a newcomer learns it from the Welcome, and only a commit — which the members
validate — can change it::

    enum { invite(0), request(1), open(2), (255) } Joins;

    struct {
        Joins joins;
        opaque admins<V><V>;
    } MembershipPolicy;   /* extension type 0xFF00 (private use, §17.3) */

``joins``: *invite* — only members add (external commits only to resync one's own leaf);
*request* — outsiders may also ask to join with a ``new_member_proposal`` Add, which joins
only when a member commits it (approves); *open* — outsiders may also join by external
commit. ``admins``: the Basic identities that may add, remove others and change the group
(GroupContextExtensions, ReInit); empty means every member may.

The rules run where every other proposal-list rule runs (``apply_proposals`` and
``validate_path_leaf``), so creating, receiving and judging publicly all apply them. A group
without the extension (created by another stack) has no mlspy policy: only RFC 9420's rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol

from mlspy.codec import Reader, Writer
from mlspy.credentials import CredentialValidator, same_member
from mlspy.errors import DecodeError, PolicyError
from mlspy.messages import (
    Add,
    Extension,
    ExtensionType,
    GroupContextExtensions,
    LeafNode,
    Proposal,
    ReInit,
    Remove,
    Sender,
    SenderType,
)
from mlspy.messages.extensions import ExtensionPayload
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree


class Proposed(Protocol):
    """A proposal with its sender (``QueuedProposal``)."""

    @property
    def proposal(self) -> Proposal: ...

    @property
    def sender(self) -> Sender: ...


class Joins(IntEnum):
    """How outsiders may join: only when invited, by request, or freely."""

    invite = 0
    request = 1
    open = 2


@dataclass(frozen=True, slots=True)
class MembershipPolicy(ExtensionPayload):
    """``MembershipPolicy`` (GroupContext extension 0xFF00, see the module docstring)."""

    extension_type: ClassVar[ExtensionType] = ExtensionType.mlspy_membership_policy
    joins: Joins = Joins.invite
    admins: tuple[bytes, ...] = ()

    def encode_to(self, w: Writer) -> None:
        w.uint8(self.joins)
        w.vector(list(self.admins), Writer.opaque)

    @classmethod
    def decode_from(cls, r: Reader) -> MembershipPolicy:
        value = r.uint8()
        try:
            joins = Joins(value)
        except ValueError:
            raise DecodeError(f"unknown Joins value {value}") from None
        return cls(joins, tuple(r.vector(Reader.opaque)))

    def may_administer(self, identity: bytes | None) -> bool:
        return not self.admins or (identity is not None and identity in self.admins)


def policy_in(extensions: Iterable[Extension]) -> MembershipPolicy | None:
    """The group's policy, or None for a group without one (RFC 9420 rules only)."""
    try:
        return MembershipPolicy.find_in(extensions)
    except DecodeError as exc:
        raise PolicyError(f"malformed membership policy: {exc}", rule="MP-05") from exc


def check_proposals(
    extensions: Sequence[Extension],
    tree: RatchetTree,
    proposals: Sequence[Proposed],
    committer_leaf: LeafIndex | None,
) -> None:
    """The policy's rules for proposals: join requests (on receipt and when committed), and
    what a member who is not an admin may commit (``committer_leaf``: a member's commit)."""
    policy = policy_in(extensions)
    if policy is None:
        return
    for q in proposals:
        if q.sender.sender_type == SenderType.new_member_proposal and policy.joins < Joins.request:
            raise PolicyError("this group does not take join requests from outsiders", rule="MP-01")
    if committer_leaf is None or not policy.admins:
        return
    leaf = tree.leaf(committer_leaf)
    if policy.may_administer(leaf.credential.identity if leaf is not None else None):
        return
    for q in proposals:
        body = q.proposal.body
        if isinstance(body, Add | GroupContextExtensions | ReInit):
            kind = type(body).__name__
            raise PolicyError(f"only an admin may commit {kind} proposals", rule="MP-03")
        if isinstance(body, Remove) and q.sender.leaf_index != body.removed:
            raise PolicyError(
                "only an admin may remove another member (anyone may commit a member's own "
                "request to leave)",
                rule="MP-04",
            )


def check_external_join(
    extensions: Sequence[Extension],
    old_tree: RatchetTree,
    removed: Sequence[LeafIndex],
    joiner: LeafNode,
    validator: CredentialValidator | None = None,
) -> None:
    """An external commit: allowed in an open group, and in any group to a client that
    replaces its own earlier leaf (resync after losing its state, RFC 9750 §6.6; or a leaf
    the application accepts as the same participant's, ``credentials.same_member``) — so a
    removed member comes back only if a member adds it again."""
    policy = policy_in(extensions)
    if policy is None or policy.joins == Joins.open:
        return
    for leaf_index in removed:
        old = old_tree.leaf(leaf_index)
        if old is not None and same_member(validator, old.credential, joiner.credential):
            return
    raise PolicyError(
        "this group does not take external joins from outsiders (only members resync)",
        rule="MP-02",
    )


__all__ = ["Joins", "MembershipPolicy", "check_external_join", "check_proposals", "policy_in"]
