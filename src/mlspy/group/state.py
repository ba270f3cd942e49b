"""Group configuration, the per-epoch state, and the events ``Group.process`` returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from mlspy.credentials import CredentialValidator
from mlspy.crypto import CipherSuiteProvider
from mlspy.messages import (
    Credential,
    GroupContext,
    KeyPackage,
    PreSharedKeyID,
    Proposal,
    ReInit,
    Sender,
    WireFormat,
)
from mlspy.schedule.key_schedule import EpochSecrets, advance_epoch, secrets_from_epoch_secret
from mlspy.schedule.secret_tree import DEFAULT_MAX_FORWARD, DEFAULT_MAX_RETAINED, SecretTree
from mlspy.schedule.transcript import confirmation_tag, interim_transcript_hash
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import TreePrivateKeys

EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"


@dataclass(frozen=True)
class GroupConfig:
    """Per-group policy. Defaults follow the best stacks: PublicMessage handshakes (so a
    Delivery Service can validate them), the ratchet tree in Welcome messages, a 1024-generation
    out-of-order window and three retained past epochs."""

    handshake_wire_format: WireFormat = WireFormat.mls_public_message
    padding_block: int = 0
    max_forward_distance: int = DEFAULT_MAX_FORWARD
    max_retained_keys: int = DEFAULT_MAX_RETAINED
    max_past_epochs: int = 3
    ratchet_tree_extension: bool = True
    external_pub_extension: bool = True
    check_lifetimes: bool = True
    max_resumption_psks: int = 16
    clock: Callable[[], int] = field(default=lambda: int(time.time()), compare=False)
    # The Authentication Service hook (§5.3.1): asked about every leaf we join with and every
    # new or changed leaf. Not stored with the state; pass it again when loading.
    credential_validator: CredentialValidator | None = field(default=None, compare=False)

    def now(self) -> int | None:
        return self.clock() if self.check_lifetimes else None


@dataclass
class EpochState:
    """Everything that belongs to one epoch of a group."""

    context: GroupContext
    tree: RatchetTree
    private: TreePrivateKeys | None
    secrets: EpochSecrets
    secret_tree: SecretTree
    interim_transcript_hash: bytes
    confirmation_tag: bytes

    @property
    def epoch(self) -> int:
        return self.context.epoch

    def __repr__(self) -> str:  # never show secrets
        return f"EpochState(epoch={self.epoch}, members={self.tree.member_count()}, <secret>)"


def build_epoch(
    cs: CipherSuiteProvider,
    config: GroupConfig,
    *,
    context: GroupContext,
    tree: RatchetTree,
    private: TreePrivateKeys | None,
    secrets: EpochSecrets,
) -> EpochState:
    """Finish an epoch from its secrets: secret tree, confirmation tag, interim hash."""
    tag = confirmation_tag(cs, secrets.confirmation_key, context.confirmed_transcript_hash)
    return EpochState(
        context=context,
        tree=tree,
        private=private,
        secrets=secrets,
        secret_tree=SecretTree(
            cs,
            secrets.encryption_secret,
            tree.n_leaves,
            max_forward=config.max_forward_distance,
            max_retained=config.max_retained_keys,
        ),
        interim_transcript_hash=interim_transcript_hash(cs, context.confirmed_transcript_hash, tag),
        confirmation_tag=tag,
    )


def first_epoch(
    cs: CipherSuiteProvider,
    config: GroupConfig,
    context: GroupContext,
    tree: RatchetTree,
    private: TreePrivateKeys,
    epoch_secret: bytes,
) -> EpochState:
    """Epoch 0 of a new group (§11): a random epoch secret, empty confirmed transcript.

    There is no joiner or welcome secret for epoch 0: nobody joins it by Welcome."""
    secrets = secrets_from_epoch_secret(cs, epoch_secret, b"", b"")
    return build_epoch(cs, config, context=context, tree=tree, private=private, secrets=secrets)


def forget_consumed(secrets: EpochSecrets) -> EpochSecrets:
    """Drop the secrets the deletion schedule marks consumed once an epoch is current
    (§9.2): joiner, welcome, epoch and encryption secrets (the secret tree holds what remains
    of the latter)."""
    return replace(
        secrets, joiner_secret=b"", welcome_secret=b"", epoch_secret=b"", encryption_secret=b""
    )


def retire(epoch: EpochState) -> EpochState:
    """What a past epoch keeps to decrypt late application messages: context, tree, secret
    tree and sender-data secret. Path keys and every other secret are forgotten."""
    secrets = epoch.secrets
    kept = EpochSecrets(
        joiner_secret=b"",
        welcome_secret=b"",
        epoch_secret=b"",
        sender_data_secret=secrets.sender_data_secret,
        encryption_secret=b"",
        exporter_secret=b"",
        external_secret=b"",
        confirmation_key=b"",
        membership_key=b"",
        resumption_psk=b"",
        epoch_authenticator=b"",
        init_secret=b"",
    )
    return replace(epoch, private=None, secrets=kept)


def commit_epoch_secrets(
    cs: CipherSuiteProvider,
    init_secret: bytes,
    commit_secret: bytes,
    psk_secret: bytes | None,
    context: GroupContext,
) -> EpochSecrets:
    return advance_epoch(cs, init_secret, commit_secret, psk_secret, context.encode())


def with_confirmed_hash(context: GroupContext, confirmed: bytes) -> GroupContext:
    return replace(context, confirmed_transcript_hash=confirmed)


@dataclass(frozen=True)
class Member:
    """A read-only view of one member (§7.2 LeafNode fields that identify it)."""

    leaf_index: LeafIndex
    credential: Credential
    signature_key: bytes
    encryption_key: bytes


# --- Events returned by Group.process -----------------------------------------------------------


@dataclass(frozen=True)
class ApplicationMessage:
    sender: LeafIndex
    data: bytes
    authenticated_data: bytes
    epoch: int


@dataclass(frozen=True)
class ProposalReceived:
    """A proposal that passed validation and is cached for a later commit (by reference)."""

    proposal: Proposal
    sender: Sender
    ref: bytes


@dataclass
class StagedCommit:
    """A processed Commit whose new epoch is not current until ``Group.merge_staged_commit``.

    ``own`` marks our own pending commit echoed back (already merged by ``process``)."""

    sender: Sender
    epoch: EpochState | None
    added: list[tuple[LeafIndex, KeyPackage]]
    removed: list[LeafIndex]
    updated: list[LeafIndex]
    psks: list[PreSharedKeyID]
    reinit: ReInit | None
    self_removed: bool
    own: bool = False
    merged: bool = False
    authenticated_data: bytes = b""

    @property
    def new_epoch(self) -> int | None:
        return self.epoch.epoch if self.epoch is not None else None


@dataclass(frozen=True)
class CommitOutput:
    """What :meth:`Group.commit` produces: send ``commit``; send ``welcome`` to new members."""

    commit: bytes
    welcome: bytes | None
    group_info: bytes | None
    ratchet_tree: bytes


@dataclass
class PendingCommit:
    content_bytes: bytes
    message_bytes: bytes
    staged: StagedCommit

    def __repr__(self) -> str:  # its staged epoch holds secrets
        return f"PendingCommit({self.staged!r})"
