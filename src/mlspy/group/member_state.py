"""A member's whole state: the one object that commit creation, commit processing and
serialization operate on (RFC 9420 §8, §12).

:class:`MemberState` is plain data with a small interface; :class:`~mlspy.group.group.Group`
is the API around it. A member is the public view of its current epoch
(:meth:`MemberState.public_view`, the same rules a Delivery Service runs) plus the secrets kept
here: path keys, epoch secrets, secret trees, PSKs and the pending commit.

Lifecycle (:class:`Lifecycle`): a member is ``active``; ``joining`` while its external commit
waits for the Delivery Service (it holds no secrets of the current epoch yet); ``removed`` once a
merged commit removed it; ``reinit`` once a merged commit closed the group with a ReInit
(§11.2: waiting for the successor group). A pending commit of its own is orthogonal
(``Group.status`` reports it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from mlspy.crypto import CipherSuiteProvider, suite
from mlspy.errors import GroupStateError
from mlspy.group.identity import SigningIdentity
from mlspy.group.proposals import QueuedProposal
from mlspy.group.public_group import PublicGroup
from mlspy.group.state import EpochState, GroupConfig, PendingCommit, retire
from mlspy.group.welcome import sign_group_info
from mlspy.messages import Extension, ExternalPub, GroupInfo, PreSharedKeyID, PSKType, ReInit
from mlspy.messages import RatchetTree as RatchetTreeExtension
from mlspy.schedule.key_schedule import external_key_pair
from mlspy.tree.math import LeafIndex


class Lifecycle(Enum):
    """Where a member stands in its group (see the module docstring)."""

    ACTIVE = "active"
    PENDING_COMMIT = "pending commit"
    JOINING = "joining"
    REMOVED = "removed"
    REINIT = "waiting for reinit"


@dataclass
class PastEpochs:
    """Retired epochs kept to decrypt late application messages (§15.2)."""

    epochs: OrderedDict[int, EpochState] = field(default_factory=OrderedDict)

    def add(self, epoch: EpochState, keep: int) -> None:
        if keep <= 0:
            return
        self.epochs[epoch.epoch] = retire(epoch)
        while len(self.epochs) > keep:
            self.epochs.popitem(last=False)


@dataclass
class MemberState:
    """Everything a member holds; see the module docstring."""

    identity: SigningIdentity
    config: GroupConfig
    own_leaf: LeafIndex
    epoch: EpochState
    past: PastEpochs = field(default_factory=PastEpochs)
    proposals: OrderedDict[bytes, QueuedProposal] = field(default_factory=OrderedDict)
    # Proposal ref -> the private leaf key of our own Update proposal.
    own_update_keys: dict[bytes, bytes] = field(default_factory=dict)
    # Proposals we sent this epoch: message bytes -> ref (our echo is already cached).
    own_messages: dict[bytes, bytes] = field(default_factory=dict)
    pending: PendingCommit | None = None
    external_psks: dict[bytes, bytes] = field(default_factory=dict)
    resumption: OrderedDict[tuple[bytes, int], bytes] = field(default_factory=OrderedDict)
    lifecycle: Lifecycle = Lifecycle.ACTIVE
    reinit: ReInit | None = None
    welcome_psks: tuple[PreSharedKeyID, ...] = ()

    def __repr__(self) -> str:  # never show secrets
        return f"MemberState(epoch={self.epoch.epoch}, leaf={self.own_leaf}, {self.lifecycle})"

    @property
    def cs(self) -> CipherSuiteProvider:
        return suite(self.epoch.context.cipher_suite)

    @property
    def group_id(self) -> bytes:
        return self.epoch.context.group_id

    def public_view(self) -> PublicGroup:
        """The public view of the current epoch, sharing this state's tree and proposal
        cache (O(1); the rules never change what they judge)."""
        return PublicGroup(
            self.epoch.context,
            self.epoch.tree,
            self.epoch.interim_transcript_hash,
            config=self.config,
            proposals=self.proposals,
        )

    def group_info(
        self, epoch: EpochState, with_tree: bool | None, external_pub: bool | None
    ) -> GroupInfo:
        """A GroupInfo for ``epoch`` signed by us (§12.4.3), with the ratchet tree and
        external_pub extensions as the config says unless asked otherwise."""
        exts: list[Extension] = []
        if self.config.ratchet_tree_extension if with_tree is None else with_tree:
            exts.append(RatchetTreeExtension(epoch.tree.to_nodes()).to_extension())
        if self.config.external_pub_extension if external_pub is None else external_pub:
            _, pub = external_key_pair(self.cs, epoch.secrets.external_secret)
            exts.append(ExternalPub(pub).to_extension())
        return sign_group_info(
            self.cs,
            self.identity.signing_key,
            epoch.context,
            tuple(exts),
            epoch.confirmation_tag,
            self.own_leaf,
        )

    def require_secrets(self) -> None:
        """A joiner by external commit holds no secret of the current epoch until merged."""
        if self.lifecycle is Lifecycle.JOINING:
            raise GroupStateError(
                "the external commit is not merged yet: merge_pending_commit() once the "
                "Delivery Service accepted it"
            )

    def require_active(self) -> None:
        self.require_secrets()
        if self.lifecycle is not Lifecycle.ACTIVE:
            raise GroupStateError(
                f"this member can no longer send in the group ({self.lifecycle.value})"
            )

    # --- PSKs ------------------------------------------------------------------------------

    def psk_value(self, psk_id: PreSharedKeyID) -> bytes | None:
        if psk_id.psktype == PSKType.external:
            return self.external_psks.get(psk_id.psk_id or b"")
        return self.resumption.get((psk_id.psk_group_id or b"", psk_id.psk_epoch or 0))

    def has_psk(self, psk_id: PreSharedKeyID) -> bool:
        return self.psk_value(psk_id) is not None

    def remember_resumption(self, epoch: EpochState) -> None:
        if not epoch.secrets.resumption_psk:
            return  # an epoch whose secrets we never held (joining by external commit)
        self.resumption[(epoch.context.group_id, epoch.epoch)] = epoch.secrets.resumption_psk
        while len(self.resumption) > self.config.max_resumption_psks:
            self.resumption.popitem(last=False)


__all__ = ["Lifecycle", "MemberState", "PastEpochs"]
