"""Group configuration, the per-epoch state, and the events ``Group.process`` returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cryptography import x509

from mlspy.credentials import CredentialValidator, x509_identity
from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import MLSError
from mlspy.messages import (
    Credential,
    CredentialType,
    GroupContext,
    KeyPackage,
    LeafNode,
    PreSharedKeyID,
    Proposal,
    ReInit,
    Sender,
    WireFormat,
)
from mlspy.provider import DEFAULT_PROVIDER, Provider
from mlspy.schedule.key_schedule import EpochSecrets, advance_epoch, secrets_from_epoch_secret
from mlspy.schedule.secret_tree import DEFAULT_MAX_FORWARD, DEFAULT_MAX_RETAINED, SecretTree
from mlspy.schedule.transcript import confirmation_tag, interim_transcript_hash
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import TreePrivateKeys
from mlspy.tree.validation import MAX_LEAF_LIFETIME

EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"


@dataclass(frozen=True)
class LeafChecks:
    """What the application decides about the leaves it accepts (§7.2, §7.3, §5.3.1): the
    current time for lifetime checks (None: no clock check), the maximum total lifetime
    (None: no maximum) and the Authentication Service hook. Members and the public view of a
    group take the same checks from the same :class:`GroupConfig`."""

    now: int | None = None
    max_lifetime: int | None = MAX_LEAF_LIFETIME
    credential_validator: CredentialValidator | None = None


@dataclass(frozen=True)
class GroupConfig:
    """Per-group policy. Defaults follow the best stacks: PublicMessage handshakes (so a
    Delivery Service can validate them), the ratchet tree in Welcome messages, a 1024-generation
    out-of-order window and three retained past epochs.

    ``handshake_wire_format`` is the default for proposals and commits; a single call may ask
    for the other one where ``allow_wire_format_override`` allows it. ``max_leaf_lifetime`` is
    the application's maximum total LeafNode lifetime of §7.2 (None: no maximum, for peers
    that issue leaves valid from 0 to 2^64-1).

    ``provider`` (:mod:`mlspy.provider`) is the one source of randomness and time for
    everything the group does: group ids, epoch and path secrets, HPKE keys and
    encapsulations, PSK nonces, reuse guards, leaf lifetimes and lifetime checks. The default
    is the system's (``os.urandom``, the system clock); a
    :class:`~mlspy.provider.SeededProvider` makes a run reproducible. ``clock`` is kept for
    compatibility: when set it overrides ``provider.now``."""

    handshake_wire_format: WireFormat = WireFormat.mls_public_message
    padding_block: int = 0
    max_forward_distance: int = DEFAULT_MAX_FORWARD
    max_retained_keys: int = DEFAULT_MAX_RETAINED
    max_past_epochs: int = 3
    ratchet_tree_extension: bool = True
    external_pub_extension: bool = True
    check_lifetimes: bool = True
    max_resumption_psks: int = 16
    max_leaf_lifetime: int | None = MAX_LEAF_LIFETIME
    allow_wire_format_override: bool = True
    # Kept for compatibility: a clock overriding ``provider.now`` (None: the provider's).
    clock: Callable[[], int] | None = field(default=None, compare=False)
    # The Authentication Service hook (§5.3.1): asked about every leaf we join with and every
    # new or changed leaf. Not stored with the state; pass it again when loading.
    credential_validator: CredentialValidator | None = field(default=None, compare=False)
    # Randomness and time (mlspy.provider). Not stored with the state; pass it again when
    # loading (``Group.from_bytes(..., provider=...)``).
    provider: Provider = field(default=DEFAULT_PROVIDER, compare=False)

    def current_time(self) -> int:
        """The time (seconds since the Unix epoch): ``clock`` if set, else ``provider.now``."""
        return self.clock() if self.clock is not None else self.provider.now()

    def now(self) -> int | None:
        """The time for lifetime checks; None when ``check_lifetimes`` is off."""
        return self.current_time() if self.check_lifetimes else None

    def leaf_checks(self) -> LeafChecks:
        return LeafChecks(self.now(), self.max_leaf_lifetime, self.credential_validator)


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


_NO_SECRETS = EpochSecrets(
    joiner_secret=b"",
    welcome_secret=b"",
    epoch_secret=b"",
    sender_data_secret=b"",
    encryption_secret=b"",
    exporter_secret=b"",
    external_secret=b"",
    confirmation_key=b"",
    membership_key=b"",
    resumption_psk=b"",
    epoch_authenticator=b"",
    init_secret=b"",
)


def retire(epoch: EpochState) -> EpochState:
    """What a past epoch keeps to decrypt late application messages: context, tree, secret
    tree and sender-data secret. Path keys and every other secret are forgotten."""
    kept = replace(_NO_SECRETS, sender_data_secret=epoch.secrets.sender_data_secret)
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


def next_epoch(
    cs: CipherSuiteProvider,
    config: GroupConfig,
    context: GroupContext,
    tree: RatchetTree,
    private: TreePrivateKeys | None,
    init_secret: bytes,
    commit_secret: bytes,
    psk_secret: bytes | None,
) -> EpochState:
    """The epoch a commit starts (§8): key schedule from the previous ``init_secret``, the
    commit secret and the PSKs over the new GroupContext ``context``."""
    secrets = commit_epoch_secrets(cs, init_secret, commit_secret, psk_secret, context)
    return build_epoch(cs, config, context=context, tree=tree, private=private, secrets=secrets)


def public_epoch(
    cs: CipherSuiteProvider,
    context: GroupContext,
    tree: RatchetTree,
    interim_transcript_hash: bytes,
    confirmation_tag: bytes,
) -> EpochState:
    """An epoch known only from its public state (a GroupInfo): what an external joiner
    holds until its commit is merged. It holds no secret: nothing can be sent or read in it."""
    return EpochState(
        context=context,
        tree=tree,
        private=None,
        secrets=_NO_SECRETS,
        secret_tree=SecretTree(cs, bytes(cs.nh), tree.n_leaves),
        interim_transcript_hash=interim_transcript_hash,
        confirmation_tag=confirmation_tag,
    )


@dataclass(frozen=True)
class Member:
    """A read-only view of one member (§7.2 LeafNode fields that identify it)."""

    leaf_index: LeafIndex
    credential: Credential
    signature_key: bytes
    encryption_key: bytes

    @classmethod
    def of(cls, leaf_index: LeafIndex, leaf: LeafNode) -> Member:
        return cls(leaf_index, leaf.credential, leaf.signature_key, leaf.encryption_key)

    def __repr__(self) -> str:
        return (
            f"Member(leaf_index={self.leaf_index}, identity={self.identity!r}, "
            f"signature_key={self.signature_key[:6].hex()}…)"
        )

    @property
    def identity(self) -> bytes | None:
        """The name the credential presents: a Basic credential's identity, an X.509
        credential's first SAN (else CN) of its leaf certificate; None for other types."""
        return credential_identity(self.credential)


def credential_identity(credential: Credential) -> bytes | None:
    if credential.credential_type == CredentialType.basic:
        return credential.identity
    if credential.credential_type == CredentialType.x509 and credential.certificates:
        try:
            cert = x509.load_der_x509_certificate(credential.certificates[0].cert_data)
            return x509_identity(cert)
        except (ValueError, MLSError):
            return None
    return None


# --- Events returned by Group.process -----------------------------------------------------------


@dataclass(frozen=True)
class ApplicationMessage:
    """Application data from ``sender`` (the member as of the message's epoch)."""

    sender: Member
    data: bytes
    authenticated_data: bytes
    epoch: int


@dataclass(frozen=True)
class ProposalReceived:
    """A proposal that passed validation and is cached for a later commit (by reference).

    ``member`` is the proposing member, None for an external or new-member sender."""

    proposal: Proposal
    sender: Sender
    ref: bytes
    member: Member | None = None


@dataclass(frozen=True)
class StagedCommit:
    """A validated Commit: what it changes, and (privately) the epoch it starts.

    Nothing is current until ``Group.merge_staged_commit`` (or ``merge_pending_commit`` for
    our own). ``committer`` is the committing member as of the new epoch (an external joiner
    included); ``added`` and ``updated`` are members as of the new epoch, ``removed`` as they
    were. ``own`` marks our own commit; ``self_removed`` a commit that removes us."""

    sender: Sender
    committer: Member | None
    epoch: int
    added: tuple[Member, ...]
    removed: tuple[Member, ...]
    updated: tuple[Member, ...]
    psks: tuple[PreSharedKeyID, ...]
    reinit: ReInit | None
    self_removed: bool
    own: bool = False
    authenticated_data: bytes = b""
    # The new epoch (secrets included): only the group that staged the commit reads it.
    new_state: EpochState | None = field(default=None, repr=False, compare=False)
    # The added members' KeyPackages, in the order of ``added`` (the Welcome is for them).
    key_packages: tuple[KeyPackage, ...] = field(default=(), repr=False)

    @property
    def new_epoch(self) -> int:
        return self.epoch

    @property
    def removed_leaves(self) -> list[LeafIndex]:
        return [m.leaf_index for m in self.removed]


@dataclass(frozen=True)
class CommitOutput:
    """What :meth:`Group.commit` produces: send ``commit``; send ``welcome`` to new members."""

    commit: bytes
    welcome: bytes | None
    group_info: bytes | None
    ratchet_tree: bytes


@dataclass(frozen=True)
class PendingCommit:
    content_bytes: bytes
    message_bytes: bytes
    staged: StagedCommit

    def __repr__(self) -> str:  # its staged epoch holds secrets
        return f"PendingCommit({self.staged!r})"
