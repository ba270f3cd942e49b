"""The MLS group state machine (RFC 9420 §11, §12).

Theory of operation. A :class:`Group` holds the current :class:`EpochState`, a few past
epochs (to decrypt late application messages), the proposals received this epoch, and at most
one pending commit of its own. ``process`` verifies an incoming message against the current
epoch without changing anything until the message is fully accepted: an application message
consumes its ratchet key, a proposal is cached, and a commit yields a :class:`StagedCommit`
that becomes current only through :meth:`Group.merge_staged_commit`. Our own commit likewise
waits in ``pending_commit`` until :meth:`Group.merge_pending_commit`, or until the Delivery
Service echoes it back to ``process``, which merges it. Every failure raises an
:class:`MLSError` and leaves the group exactly as it was.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from mlspy.credentials import CredentialValidator
from mlspy.crypto import CipherSuiteProvider, suite
from mlspy.errors import (
    CommitError,
    GroupStateError,
    ProposalError,
    UsageError,
)
from mlspy.group.commit_create import create_commit
from mlspy.group.commit_receive import stage_commit
from mlspy.group.framing import (
    Unprotected,
    authenticated_for,
    decode_message,
    protect,
    protect_signed,
    unprotect,
)
from mlspy.group.identity import SigningIdentity
from mlspy.group.key_package import (
    CLOCK_SKEW,
    DEFAULT_LIFETIME,
    KeyPackageBundle,
    validate_key_package,
)
from mlspy.group.proposals import (
    QueuedProposal,
    apply_proposals,
    check_leaf_supports_group,
    check_sender_may_propose,
)
from mlspy.group.state import (
    ApplicationMessage,
    CommitOutput,
    EpochState,
    GroupConfig,
    Member,
    PendingCommit,
    ProposalReceived,
    StagedCommit,
    build_epoch,
    commit_epoch_secrets,
    first_epoch,
    forget_consumed,
    retire,
    with_confirmed_hash,
)
from mlspy.group.welcome import (
    join_from_welcome,
    sign_group_info,
)
from mlspy.messages import (
    Add,
    AuthenticatedContent,
    ContentType,
    CustomProposal,
    Extension,
    ExternalPub,
    FramedContent,
    GroupContext,
    GroupContextExtensions,
    GroupInfo,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProtocolVersion,
    PSKType,
    ReInit,
    Remove,
    ResumptionPSKUsage,
    Sender,
    SenderType,
    Update,
    Welcome,
    WireFormat,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from mlspy.messages import RatchetTree as RatchetTreeExtension
from mlspy.schedule.key_schedule import external_key_pair, mls_exporter
from mlspy.schedule.transcript import confirmed_transcript_hash
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import (
    TreePrivateKeys,
    sign_leaf_node,
)


@dataclass
class _PastEpochs:
    epochs: OrderedDict[int, EpochState] = field(default_factory=OrderedDict)

    def add(self, epoch: EpochState, keep: int) -> None:
        if keep <= 0:
            return
        self.epochs[epoch.epoch] = retire(epoch)
        while len(self.epochs) > keep:
            self.epochs.popitem(last=False)


# A leaf index no tree reaches, standing for "some other member" in single-proposal checks.
NOBODY = 0xFFFFFFFF


class Group:
    """One member's view of an MLS group."""

    def __init__(
        self,
        identity: SigningIdentity,
        epoch: EpochState,
        own_leaf: LeafIndex,
        config: GroupConfig,
        *,
        external_psks: dict[bytes, bytes] | None = None,
    ) -> None:
        self._cs = suite(epoch.context.cipher_suite)
        self._identity = identity
        epoch.secrets = forget_consumed(epoch.secrets)
        self._epoch = epoch
        self._own_leaf = own_leaf
        self._config = config
        self._past = _PastEpochs()
        self._proposals: OrderedDict[bytes, QueuedProposal] = OrderedDict()
        self._own_update_keys: dict[bytes, bytes] = {}
        self._own_messages: dict[bytes, bytes] = {}  # proposals we sent this epoch -> ref
        self._pending: PendingCommit | None = None
        self._external_psks: dict[bytes, bytes] = dict(external_psks or {})
        self._resumption: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()
        self._remember_resumption(epoch)
        self._active = True
        self._reinit: ReInit | None = None
        self._welcome_psks: tuple[PreSharedKeyID, ...] = ()

    # --- Creation and joining -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        identity: SigningIdentity,
        *,
        group_id: bytes | None = None,
        extensions: tuple[Extension, ...] = (),
        config: GroupConfig | None = None,
    ) -> Group:
        """A one-member group (§11): epoch 0, a fresh leaf, a random epoch secret."""
        config = config or GroupConfig()
        cs = suite(identity.cipher_suite)
        enc_priv, enc_pub = cs.hpke_key_pair()
        gid = group_id if group_id is not None else os.urandom(cs.nh)
        unsigned = LeafNode(
            enc_pub,
            identity.signature_key,
            identity.credential,
            identity.capabilities,
            LeafNodeSource.key_package,
            _lifetime(config),
            None,
            identity.leaf_extensions,
            b"",
        )
        leaf = sign_leaf_node(cs, identity.signature_private_key, unsigned, None, None)
        check_leaf_supports_group(leaf, extensions)
        tree = RatchetTree.with_one_leaf(cs, leaf)
        context = GroupContext(
            ProtocolVersion.mls10, identity.cipher_suite, gid, 0, tree.tree_hash(), b"", extensions
        )
        private = TreePrivateKeys(LeafIndex(0), {NodeIndex(0): enc_priv})
        epoch = first_epoch(cs, config, context, tree, private, os.urandom(cs.nh))
        return cls(identity, epoch, LeafIndex(0), config)

    @classmethod
    def join(
        cls,
        welcome: bytes | MLSMessage | Welcome,
        key_packages: KeyPackageBundle | Sequence[KeyPackageBundle],
        *,
        identity: SigningIdentity | None = None,
        ratchet_tree: bytes | RatchetTree | None = None,
        external_psks: dict[bytes, bytes] | None = None,
        resumption_psks: dict[tuple[bytes, int], bytes] | None = None,
        config: GroupConfig | None = None,
    ) -> Group:
        """Join from a Welcome (§12.4.3.1) with one of our KeyPackages.

        ``ratchet_tree`` is needed when the Welcome carries no ``ratchet_tree`` extension:
        its encoding, or an already decoded tree (which is copied and still fully validated).
        """
        config = config or GroupConfig()
        if isinstance(welcome, Welcome):
            w = welcome
        else:
            msg = decode_message(welcome)
            if msg.welcome is None:
                raise UsageError("the message is not a Welcome")
            w = msg.welcome
        bundles = [key_packages] if isinstance(key_packages, KeyPackageBundle) else key_packages
        psks = dict(external_psks or {})
        resumption = dict(resumption_psks or {})

        def lookup(psk_id: PreSharedKeyID) -> bytes | None:
            if psk_id.psktype == PSKType.external:
                return psks.get(psk_id.psk_id or b"")
            return resumption.get((psk_id.psk_group_id or b"", psk_id.psk_epoch or 0))

        def tree_for(cs: CipherSuiteProvider) -> RatchetTree | None:
            if ratchet_tree is None:
                return None
            if isinstance(ratchet_tree, RatchetTree):
                if ratchet_tree.cipher_suite.id != cs.id:
                    raise UsageError("the ratchet tree is for another cipher suite")
                return ratchet_tree.copy()
            return RatchetTree.from_nodes(cs, decode_ratchet_tree(ratchet_tree))

        joined, bundle = join_from_welcome(
            w, bundles, config, ratchet_tree=tree_for, psk_lookup=lookup
        )
        leaf = bundle.key_package.leaf_node
        ident = identity or SigningIdentity(
            bundle.key_package.cipher_suite,
            leaf.credential,
            bundle.signature_private_key,
            leaf.signature_key,
            leaf.capabilities,
            leaf.extensions,
        )
        group = cls(ident, joined.epoch, joined.own_leaf, config, external_psks=psks)
        group._welcome_psks = joined.group_secrets.psks
        for key, value in resumption.items():
            group.add_resumption_psk(*key, value)
        return group

    # --- State at rest ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state, private keys included, as versioned bytes (see ``serialize``)."""
        from mlspy.group.serialize import serialize_group

        return serialize_group(self)

    @classmethod
    def from_bytes(
        cls, data: bytes, *, credential_validator: CredentialValidator | None = None
    ) -> Group:
        """Restore a state saved with :meth:`to_bytes` (the validator is not stored)."""
        from mlspy.group.serialize import deserialize_group

        group = deserialize_group(data)
        if credential_validator is not None:
            group._config = replace(group._config, credential_validator=credential_validator)
        return group

    # --- Read-only views ------------------------------------------------------------------

    @property
    def cipher_suite(self) -> CipherSuiteProvider:
        return self._cs

    @property
    def config(self) -> GroupConfig:
        return self._config

    @property
    def group_id(self) -> bytes:
        return self._epoch.context.group_id

    @property
    def epoch(self) -> int:
        return self._epoch.epoch

    @property
    def context(self) -> GroupContext:
        return self._epoch.context

    @property
    def extensions(self) -> tuple[Extension, ...]:
        return self._epoch.context.extensions

    @property
    def own_leaf_index(self) -> LeafIndex:
        return self._own_leaf

    @property
    def identity(self) -> SigningIdentity:
        return self._identity

    @property
    def epoch_authenticator(self) -> bytes:
        return self._epoch.secrets.epoch_authenticator

    @property
    def tree(self) -> RatchetTree:
        """A copy of the public ratchet tree."""
        return self._epoch.tree.copy()

    @property
    def active(self) -> bool:
        """False once we were removed or the group was reinitialized."""
        return self._active

    @property
    def pending_commit(self) -> StagedCommit | None:
        return self._pending.staged if self._pending else None

    @property
    def pending_commit_message(self) -> bytes | None:
        """The MLSMessage bytes of our pending commit, as sent to the Delivery Service."""
        return self._pending.message_bytes if self._pending else None

    @property
    def pending_proposals(self) -> list[QueuedProposal]:
        return list(self._proposals.values())

    def members(self) -> list[Member]:
        return [
            Member(i, leaf.credential, leaf.signature_key, leaf.encryption_key)
            for i, leaf in self._epoch.tree.leaves()
        ]

    def export_secret(self, label: str | bytes, context: bytes, length: int) -> bytes:
        """``MLS-Exporter(Label, Context, Length)`` of the current epoch (§8.5)."""
        return mls_exporter(self._cs, self._epoch.secrets.exporter_secret, label, context, length)

    def export_ratchet_tree(self) -> bytes:
        """The ``ratchet_tree`` encoding, for members who join with the tree out of band."""
        return encode_ratchet_tree(self._epoch.tree.to_nodes())

    def add_external_psk(self, psk_id: bytes, psk: bytes) -> None:
        self._external_psks[psk_id] = psk

    def resumption_psk(self, epoch: int | None = None) -> bytes | None:
        key = (self.group_id, self.epoch if epoch is None else epoch)
        return self._resumption.get(key)

    def resumption_psks(self) -> dict[tuple[bytes, int], bytes]:
        """The retained resumption PSKs by (group_id, epoch), e.g. for joining a successor."""
        return dict(self._resumption)

    def add_resumption_psk(self, group_id: bytes, epoch: int, psk: bytes) -> None:
        """Make another group's resumption PSK available (reinit and branch, §11)."""
        self._resumption[(group_id, epoch)] = psk

    def group_info(
        self, *, with_ratchet_tree: bool | None = None, external_pub: bool | None = None
    ) -> bytes:
        """A signed GroupInfo for the current epoch (§12.4.3), as an MLSMessage."""
        return MLSMessage.wrap(
            self._group_info(self._epoch, with_ratchet_tree, external_pub)
        ).encode()

    def _group_info(
        self, epoch: EpochState, with_tree: bool | None, external_pub: bool | None
    ) -> GroupInfo:
        exts: list[Extension] = []
        if self._config.ratchet_tree_extension if with_tree is None else with_tree:
            exts.append(RatchetTreeExtension(epoch.tree.to_nodes()).to_extension())
        if self._config.external_pub_extension if external_pub is None else external_pub:
            _, pub = external_key_pair(self._cs, epoch.secrets.external_secret)
            exts.append(ExternalPub(pub).to_extension())
        return sign_group_info(
            self._cs,
            self._identity.signature_private_key,
            epoch.context,
            tuple(exts),
            epoch.confirmation_tag,
            self._own_leaf,
        )

    # --- Sending ---------------------------------------------------------------------------

    def _require_active(self) -> None:
        if not self._active:
            raise GroupStateError("this member can no longer send in the group")

    def _frame(
        self, content_type: ContentType, authenticated_data: bytes, **body: object
    ) -> FramedContent:
        return FramedContent(
            self.group_id,
            self.epoch,
            Sender.member(self._own_leaf),
            authenticated_data,
            content_type,
            **body,  # type: ignore[arg-type]
        )

    def encrypt_application(self, data: bytes, authenticated_data: bytes = b"") -> bytes:
        """An application message as a PrivateMessage (§6.3)."""
        self._require_active()
        if self._proposals:
            raise GroupStateError(
                "proposals are pending: commit them before sending application data (§12.4)"
            )
        fc = self._frame(ContentType.application, authenticated_data, application_data=data)
        return protect(
            self._cs,
            self._epoch,
            self._identity.signature_private_key,
            fc,
            WireFormat.mls_private_message,
            padding_block=self._config.padding_block,
        ).encode()

    def _send_proposal(self, proposal: Proposal, authenticated_data: bytes = b"") -> bytes:
        self._require_active()
        fc = self._frame(ContentType.proposal, authenticated_data, proposal=proposal)
        ac = authenticated_for(
            self._cs,
            self._epoch,
            self._identity.signature_private_key,
            fc,
            self._config.handshake_wire_format,
        )
        message = protect_signed(
            self._cs, self._epoch, ac, padding_block=self._config.padding_block
        )
        # Our own proposals are cached like received ones, so a commit can cover them by ref.
        ref = self._cs.make_proposal_ref(ac.encode())
        self._proposals[ref] = QueuedProposal(proposal, fc.sender, ref)
        wire = message.encode()
        self._own_messages[wire] = ref
        return wire

    def propose_add(
        self, key_package: KeyPackage | bytes, authenticated_data: bytes = b""
    ) -> bytes:
        kp = _key_package(key_package)
        validate_key_package(kp, cipher_suite=self.context.cipher_suite, now=self._config.now())
        return self._send_proposal(Proposal(Add(kp)), authenticated_data)

    def propose_remove(self, leaf: int, authenticated_data: bytes = b"") -> bytes:
        if self._epoch.tree.leaf(LeafIndex(leaf)) is None:
            raise UsageError(f"leaf {leaf} is not a member")
        return self._send_proposal(Proposal(Remove(leaf)), authenticated_data)

    def propose_update(self, authenticated_data: bytes = b"") -> bytes:
        enc_priv, leaf = self._fresh_leaf(LeafNodeSource.update)
        message = self._send_proposal(Proposal(Update(leaf)), authenticated_data)
        ref = next(reversed(self._proposals))
        self._own_update_keys[ref] = enc_priv
        return message

    def propose_external_psk(self, psk_id: bytes, authenticated_data: bytes = b"") -> bytes:
        if psk_id not in self._external_psks:
            raise UsageError("unknown external PSK id: add it with add_external_psk first")
        pid = PreSharedKeyID.external(psk_id, os.urandom(self._cs.nh))
        return self._send_proposal(Proposal(PreSharedKey(pid)), authenticated_data)

    def propose_resumption_psk(self, epoch: int, authenticated_data: bytes = b"") -> bytes:
        if (self.group_id, epoch) not in self._resumption:
            raise UsageError(f"no resumption PSK retained for epoch {epoch}")
        pid = PreSharedKeyID.resumption(
            ResumptionPSKUsage.application, self.group_id, epoch, os.urandom(self._cs.nh)
        )
        return self._send_proposal(Proposal(PreSharedKey(pid)), authenticated_data)

    def propose_group_context_extensions(
        self, extensions: tuple[Extension, ...], authenticated_data: bytes = b""
    ) -> bytes:
        return self._send_proposal(Proposal(GroupContextExtensions(extensions)), authenticated_data)

    def propose_reinit(
        self,
        *,
        group_id: bytes | None = None,
        cipher_suite: int | None = None,
        extensions: tuple[Extension, ...] | None = None,
        authenticated_data: bytes = b"",
    ) -> bytes:
        reinit = ReInit(
            group_id if group_id is not None else os.urandom(self._cs.nh),
            ProtocolVersion.mls10,
            cipher_suite if cipher_suite is not None else self.context.cipher_suite,
            extensions if extensions is not None else self.extensions,
        )
        return self._send_proposal(Proposal(reinit), authenticated_data)

    def propose_custom(
        self, proposal_type: int, data: bytes, authenticated_data: bytes = b""
    ) -> bytes:
        return self._send_proposal(
            Proposal(CustomProposal(proposal_type, data)), authenticated_data
        )

    def _fresh_leaf(self, source: LeafNodeSource) -> tuple[bytes, LeafNode]:
        enc_priv, enc_pub = self._cs.hpke_key_pair()
        ident = self._identity
        unsigned = LeafNode(
            enc_pub,
            ident.signature_key,
            ident.credential,
            ident.capabilities,
            source,
            None,
            None,
            ident.leaf_extensions,
            b"",
        )
        leaf = sign_leaf_node(
            self._cs, ident.signature_private_key, unsigned, self.group_id, self._own_leaf
        )
        return enc_priv, leaf

    # --- Committing ------------------------------------------------------------------------

    def commit(
        self,
        proposals: Iterable[Proposal] = (),
        *,
        force_path: bool = False,
        include_pending: bool = True,
        authenticated_data: bytes = b"",
        ratchet_tree_in_welcome: bool | None = None,
        resumption_usage: ResumptionPSKUsage | None = None,
    ) -> CommitOutput:
        """Create a Commit covering the cached proposals (by reference) and ``proposals`` (by
        value). The group does not change until :meth:`merge_pending_commit`.

        ``resumption_usage`` admits a reinit or branch resumption PSK, which is only valid in
        the first commit of a successor group (§11.2, §11.3)."""
        return create_commit(
            self,
            proposals,
            force_path=force_path,
            include_pending=include_pending,
            authenticated_data=authenticated_data,
            ratchet_tree_in_welcome=ratchet_tree_in_welcome,
            resumption_usage=resumption_usage,
        )

    def merge_pending_commit(self) -> StagedCommit:
        """Make our pending commit's epoch current (after the Delivery Service accepted it)."""
        if self._pending is None:
            raise GroupStateError("no pending commit")
        staged = self._pending.staged
        self._merge(staged)
        staged.merged = True
        return staged

    def clear_pending_commit(self) -> None:
        """Forget our pending commit (e.g. the Delivery Service rejected it)."""
        self._pending = None

    def _apply_own_updates(
        self, queued: Sequence[QueuedProposal], private: TreePrivateKeys
    ) -> None:
        for q in queued:
            if q.ref is not None and q.ref in self._own_update_keys:
                private.keys[NodeIndex(2 * self._own_leaf)] = self._own_update_keys[q.ref]

    def _next_epoch(
        self,
        epoch: EpochState,
        ac: AuthenticatedContent,
        provisional: GroupContext,
        tree: RatchetTree,
        private: TreePrivateKeys | None,
        init_secret: bytes,
        commit_secret: bytes,
        psk_secret: bytes | None,
    ) -> EpochState:
        cs = self._cs
        confirmed = confirmed_transcript_hash(
            cs, epoch.interim_transcript_hash, ac.confirmed_transcript_hash_input()
        )
        context = with_confirmed_hash(provisional, confirmed)
        secrets = commit_epoch_secrets(cs, init_secret, commit_secret, psk_secret, context)
        return build_epoch(
            cs, self._config, context=context, tree=tree, private=private, secrets=secrets
        )

    # --- PSKs ------------------------------------------------------------------------------

    def _psk_value(self, psk_id: PreSharedKeyID) -> bytes | None:
        if psk_id.psktype == PSKType.external:
            return self._external_psks.get(psk_id.psk_id or b"")
        return self._resumption.get((psk_id.psk_group_id or b"", psk_id.psk_epoch or 0))

    def _has_psk(self, psk_id: PreSharedKeyID) -> bool:
        return self._psk_value(psk_id) is not None

    def _remember_resumption(self, epoch: EpochState) -> None:
        self._resumption[(epoch.context.group_id, epoch.epoch)] = epoch.secrets.resumption_psk
        while len(self._resumption) > self._config.max_resumption_psks:
            self._resumption.popitem(last=False)

    # --- Receiving -------------------------------------------------------------------------

    def process(
        self, message: bytes | MLSMessage
    ) -> ApplicationMessage | ProposalReceived | StagedCommit:
        """Verify and interpret one message of this group; see the module docstring."""
        if self._pending is not None and (
            message == self._pending.message_bytes
            or (isinstance(message, MLSMessage) and message.encode() == self._pending.message_bytes)
        ):
            # Our own commit echoed by the Delivery Service: we cannot decrypt it (its key is
            # spent) and need not; it is exactly what we staged.
            staged = self._pending.staged
            self._merge(staged)
            staged.merged = True
            return staged
        raw = message.encode() if isinstance(message, MLSMessage) else message
        own_ref = self._own_messages.get(raw)
        if own_ref is not None and own_ref in self._proposals:
            # Our own proposal echoed back: already cached when we sent it.
            q = self._proposals[own_ref]
            return ProposalReceived(q.proposal, q.sender, own_ref)
        msg = decode_message(message)
        u = unprotect(self._cs, msg, self._epoch, self._past.epochs)
        fc = u.content.content
        if fc.content_type == ContentType.application:
            if u.opened is None:  # pragma: no cover - unprotect rejects public application data
                raise CommitError("application data must be a PrivateMessage")
            u.epoch.secret_tree.consume(u.opened.lookup)
            return ApplicationMessage(
                LeafIndex(u.opened.sender_data.leaf_index),
                fc.application_data or b"",
                fc.authenticated_data,
                fc.epoch,
            )
        if fc.content_type == ContentType.proposal:
            event = self._receive_proposal(u)
            if u.opened is not None:
                u.epoch.secret_tree.consume(u.opened.lookup)
            self._proposals[event.ref] = QueuedProposal(event.proposal, event.sender, event.ref)
            return event
        staged = self._receive_commit(u)
        if u.opened is not None:
            u.epoch.secret_tree.consume(u.opened.lookup)
        if staged.own:
            self._merge(staged)
            staged.merged = True
        return staged

    def _receive_proposal(self, u: Unprotected) -> ProposalReceived:
        fc = u.content.content
        proposal = fc.proposal
        if proposal is None:  # pragma: no cover - decoding guarantees it
            raise ProposalError("proposal content without a proposal")
        check_sender_may_propose(proposal, fc.sender)
        if fc.sender.sender_type == SenderType.member and fc.sender.leaf_index == self._own_leaf:
            raise ProposalError("a proposal claiming to be ours that we did not cache")
        self._check_proposal(proposal, fc.sender)
        ref = self._cs.make_proposal_ref(u.content.encode())
        return ProposalReceived(proposal, fc.sender, ref)

    def _check_proposal(self, proposal: Proposal, sender: Sender) -> None:
        """Validate a proposal on receipt by applying it alone to a scratch tree."""
        body = proposal.body
        if isinstance(body, Add | Update | Remove):
            # A committer outside the tree: the committer-specific list rules (its own update,
            # its own removal) are checked when a real commit covers the proposal.
            committer = Sender.member(NOBODY)
            scratch = self._epoch.tree.copy()
            apply_proposals(
                self._cs,
                self.context,
                scratch,
                [QueuedProposal(proposal, sender, b"")],
                committer,
                now=self._config.now(),
                credential_validator=self._config.credential_validator,
            )

    def _receive_commit(self, u: Unprotected) -> StagedCommit:
        return stage_commit(self, u)

    def merge_staged_commit(self, staged: StagedCommit) -> None:
        """Make a processed commit's epoch current."""
        if staged.merged:
            raise GroupStateError("this commit was already merged")
        if staged.epoch is not None and staged.epoch.epoch != self.epoch + 1:
            raise GroupStateError("the staged commit is not for the next epoch")
        self._merge(staged)
        staged.merged = True

    def _merge(self, staged: StagedCommit) -> None:
        self._proposals.clear()
        self._own_update_keys.clear()
        self._own_messages.clear()
        self._pending = None
        if staged.self_removed or staged.epoch is None:
            # Removed (§12.4.2): the last epoch stays current but keeps no more than a past
            # epoch does (late messages), so our path keys and its other secrets are gone,
            # from memory and from storage.
            self._epoch = retire(self._epoch)
            self._active = False
            return
        self._past.add(self._epoch, self._config.max_past_epochs)
        staged.epoch.secrets = forget_consumed(staged.epoch.secrets)
        self._epoch = staged.epoch
        self._remember_resumption(staged.epoch)
        if staged.reinit is not None:
            self._reinit = staged.reinit
            self._active = False

    @property
    def welcome_psks(self) -> tuple[PreSharedKeyID, ...]:
        """The PSKs named by the Welcome we joined with (empty for other joins)."""
        return self._welcome_psks

    @property
    def reinit(self) -> ReInit | None:
        """The ReInit this group was closed with, if any (§11.2)."""
        return self._reinit


def _lifetime(config: GroupConfig) -> Lifetime:
    now = config.clock()
    return Lifetime(max(0, now - CLOCK_SKEW), now + DEFAULT_LIFETIME)


def _key_package(kp: KeyPackage | bytes) -> KeyPackage:
    if isinstance(kp, KeyPackage):
        return kp
    msg = decode_message(kp)
    if msg.key_package is None:
        raise UsageError("the message is not a KeyPackage")
    return msg.key_package
