"""What a client commits by itself: the application's hook on proposals (like mls-rs's
``MlsRules`` and OpenMLS's proposal validation callbacks).

The group's membership policy (``mlspy.group.policy``) says what the group allows at all, and
members and the Delivery Service refuse the rest. Within it, RFC 9420 has a committer include
the proposals that are valid "according to application policy" (§12.2) and receivers not
insist on the rest (§12.4). :class:`Rules` is that application policy: for each cached
proposal, whether this client commits it. The default, :class:`DefaultRules`, commits what
members propose and nothing from outsiders: a request to join (a ``new_member_proposal``) is
shown to the application as a ``join_request`` event and joins only once the application
approves it (``Client.approve``).
"""

from __future__ import annotations

from typing import Protocol

from mlspy.group import Group, QueuedProposal
from mlspy.messages import Add, Credential, SenderType


class Rules(Protocol):
    """The application's say over what this client commits."""

    def admit(self, group: Group, proposal: QueuedProposal) -> bool:
        """Whether to commit ``proposal`` (cached in ``group``'s current epoch)."""
        ...


def requester_key(proposal: QueuedProposal) -> bytes | None:
    """The signature key of an outsider asking to join, or None for other proposals."""
    body = proposal.proposal.body
    if proposal.sender.sender_type == SenderType.new_member_proposal and isinstance(body, Add):
        return body.key_package.leaf_node.signature_key
    return None


def requester_credential(proposal: QueuedProposal) -> Credential | None:
    """The credential of an outsider asking to join, or None for other proposals."""
    body = proposal.proposal.body
    if proposal.sender.sender_type == SenderType.new_member_proposal and isinstance(body, Add):
        return body.key_package.leaf_node.credential
    return None


class DefaultRules:
    """Commit members' proposals; outsiders' only once approved (see the module docstring)."""

    def __init__(self) -> None:
        self._approved: set[tuple[bytes, bytes]] = set()  # (group id, requester's key)

    def approve(self, group_id: bytes, signature_key: bytes) -> None:
        self._approved.add((group_id, signature_key))

    def admit(self, group: Group, proposal: QueuedProposal) -> bool:
        if proposal.sender.sender_type == SenderType.member:
            return True
        key = requester_key(proposal)
        return key is not None and (group.group_id, key) in self._approved


__all__ = ["DefaultRules", "Rules", "requester_credential", "requester_key"]
