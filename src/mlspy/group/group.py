"""The MLS group state machine (RFC 9420 §11, §12).

Theory of operation. A :class:`Group` is the API around one :class:`MemberState`: the current
epoch, a few past epochs (to decrypt late application messages), the proposals received this
epoch and at most one pending commit of its own. A member is the public view of its epoch
(:meth:`Group.public_view`, the rules a Delivery Service runs) plus its secrets.

``process`` verifies an incoming message against the current epoch without changing anything
until the message is fully accepted: an application message consumes its ratchet key, a
proposal is cached, and a commit yields a :class:`StagedCommit`. Every commit follows one flow:

* someone else's: ``staged = group.process(commit)``, then ``group.merge_staged_commit(staged)``;
* our own: ``out = group.commit(...)``, send ``out.commit``; once the Delivery Service accepted
  it, ``group.merge_pending_commit()`` — or, if it echoes the commit back, ``process`` returns
  the pending :class:`StagedCommit` (``own``) and ``merge_staged_commit`` merges it;
* an external join: ``group, commit = join_external(...)``, send it, ``merge_pending_commit()``.

Nothing merges by itself. Every failure raises an :class:`MLSError` and leaves the group
exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from mlspy.credentials import CredentialValidator
from mlspy.crypto import CipherSuiteProvider, MessageSigner, suite
from mlspy.errors import GroupStateError, MLSError, UsageError
from mlspy.group.commit_create import CommitOptions, create_commit, handshake_wire_format
from mlspy.group.commit_receive import stage_commit
from mlspy.group.commit_validate import check_not_own_proposal
from mlspy.group.framing import (
    Unprotected,
    authenticated_for,
    decode_as,
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
    as_key_package,
)
from mlspy.group.member_state import Lifecycle, MemberState
from mlspy.group.proposals import QueuedProposal, check_leaf_supports_group
from mlspy.group.public_group import PublicGroup
from mlspy.group.state import (
    ApplicationMessage,
    CommitOutput,
    EpochState,
    GroupConfig,
    Member,
    ProposalReceived,
    StagedCommit,
    first_epoch,
    forget_consumed,
    retire,
)
from mlspy.group.welcome import join_from_welcome
from mlspy.messages import (
    Add,
    ContentType,
    CustomProposal,
    Extension,
    FramedContent,
    GroupContext,
    GroupContextExtensions,
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
from mlspy.protection import decrypt_sender_data
from mlspy.provider import Provider
from mlspy.schedule.key_schedule import mls_exporter
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import TreePrivateKeys, sign_leaf_node

# Who a caller may name when removing a member: a leaf index, a Member, or an identity.
MemberRef = int | Member | bytes


class Group:
    """One member's view of an MLS group."""

    def __init__(self, state: MemberState) -> None:
        self._state = state

    @classmethod
    def from_epoch(
        cls,
        identity: SigningIdentity,
        epoch: EpochState,
        own_leaf: LeafIndex,
        config: GroupConfig,
        *,
        external_psks: dict[bytes, bytes] | None = None,
    ) -> Group:
        """A member of ``epoch`` at ``own_leaf`` (the consumed secrets are dropped, §9.2)."""
        epoch.secrets = forget_consumed(epoch.secrets)
        state = MemberState(
            identity, config, own_leaf, epoch, external_psks=dict(external_psks or {})
        )
        state.remember_resumption(epoch)
        return cls(state)

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
        provider = config.provider
        enc_priv, enc_pub = cs.hpke_key_pair(rng=provider.rng)
        gid = group_id if group_id is not None else provider.random(cs.nh)
        now = config.current_time()
        unsigned = LeafNode(
            enc_pub,
            identity.signature_key,
            identity.credential,
            identity.capabilities,
            LeafNodeSource.key_package,
            Lifetime(max(0, now - CLOCK_SKEW), now + DEFAULT_LIFETIME),
            None,
            identity.leaf_extensions,
            b"",
        )
        leaf = sign_leaf_node(cs, identity.signing_key, unsigned, None, None)
        check_leaf_supports_group(leaf, extensions)
        tree = RatchetTree.with_one_leaf(cs, leaf)
        context = GroupContext(
            ProtocolVersion.mls10, identity.cipher_suite, gid, 0, tree.tree_hash(), b"", extensions
        )
        private = TreePrivateKeys(LeafIndex(0), {NodeIndex(0): enc_priv})
        epoch = first_epoch(cs, config, context, tree, private, provider.random(cs.nh))
        return cls.from_epoch(identity, epoch, LeafIndex(0), config)

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
        w = welcome if isinstance(welcome, Welcome) else decode_as(welcome, "welcome")
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
        if identity is None and not bundle.signature_private_key and bundle.signer is None:
            raise UsageError(
                "the KeyPackage bundle holds no signing key (an external signer's, stored): "
                "pass identity= with the signer"
            )
        ident = identity or SigningIdentity(
            bundle.key_package.cipher_suite,
            leaf.credential,
            bundle.signature_private_key,
            leaf.signature_key,
            leaf.capabilities,
            leaf.extensions,
            bundle.signer,
        )
        group = cls.from_epoch(ident, joined.epoch, joined.own_leaf, config, external_psks=psks)
        group._state.welcome_psks = joined.group_secrets.psks
        for key, value in resumption.items():
            group.add_resumption_psk(*key, value)
        return group

    # --- State at rest ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state, private keys included, as versioned bytes (see ``serialize``)."""
        from mlspy.group.serialize import serialize_state

        return serialize_state(self._state)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        credential_validator: CredentialValidator | None = None,
        provider: Provider | None = None,
        signer: MessageSigner | None = None,
    ) -> Group:
        """Restore a state saved with :meth:`to_bytes`. What is not stored is passed again:
        the credential validator, the provider (default: the system's) and, for an identity
        with an external signer, the ``signer`` (required then; :class:`UsageError` without
        it)."""
        from mlspy.group.serialize import deserialize_state

        return cls(
            deserialize_state(
                data, credential_validator=credential_validator, provider=provider, signer=signer
            )
        )

    @property
    def state(self) -> MemberState:
        """The internal state object (for ``mlspy.group``'s serialization and stores)."""
        return self._state

    # --- Read-only views ------------------------------------------------------------------

    @property
    def cipher_suite(self) -> CipherSuiteProvider:
        return self._state.cs

    @property
    def config(self) -> GroupConfig:
        return self._state.config

    @property
    def group_id(self) -> bytes:
        return self._state.group_id

    @property
    def epoch(self) -> int:
        return self._state.epoch.epoch

    @property
    def context(self) -> GroupContext:
        return self._state.epoch.context

    @property
    def extensions(self) -> tuple[Extension, ...]:
        return self._state.epoch.context.extensions

    @property
    def own_leaf_index(self) -> LeafIndex:
        return self._state.own_leaf

    @property
    def identity(self) -> SigningIdentity:
        return self._state.identity

    @property
    def epoch_authenticator(self) -> bytes:
        return self._state.epoch.secrets.epoch_authenticator

    @property
    def tree(self) -> RatchetTree:
        """A copy of the public ratchet tree."""
        return self._state.epoch.tree.copy()

    @property
    def status(self) -> Lifecycle:
        """Where we stand: active, pending commit, joining, removed, or waiting for reinit."""
        st = self._state
        if st.lifecycle is Lifecycle.ACTIVE and st.pending is not None:
            return Lifecycle.PENDING_COMMIT
        return st.lifecycle

    @property
    def active(self) -> bool:
        """False once we were removed or the group was reinitialized (or while joining)."""
        return self._state.lifecycle is Lifecycle.ACTIVE

    @property
    def pending_commit(self) -> StagedCommit | None:
        return self._state.pending.staged if self._state.pending else None

    @property
    def pending_commit_message(self) -> bytes | None:
        """The MLSMessage bytes of our pending commit, as sent to the Delivery Service."""
        return self._state.pending.message_bytes if self._state.pending else None

    @property
    def pending_proposals(self) -> list[QueuedProposal]:
        return list(self._state.proposals.values())

    def members(self) -> list[Member]:
        return [Member.of(i, leaf) for i, leaf in self._state.epoch.tree.leaves()]

    def member_at(self, leaf: int) -> Member:
        """The member at ``leaf``; :class:`UsageError` if the leaf is blank."""
        node = self._state.epoch.tree.leaf(LeafIndex(leaf))
        if node is None:
            raise UsageError(f"leaf {leaf} is not a member")
        return Member.of(LeafIndex(leaf), node)

    def sender_of(self, message: bytes | MLSMessage) -> Member | None:
        """The member of the current epoch who sent ``message``, read without processing or
        consuming anything (a PrivateMessage's sender from its sender data, §6.3.2), e.g. to
        say whose commit was rejected. None when it is not a member's message of this epoch
        or its sender data does not decrypt. Unauthenticated: a hint, not a proof."""
        msg = message if isinstance(message, MLSMessage) else MLSMessage.decode(message)
        epoch = self._state.epoch
        leaf: int | None = None
        if msg.public_message is not None:
            fc = msg.public_message.content
            if fc.epoch == epoch.epoch and fc.sender.sender_type == SenderType.member:
                leaf = fc.sender.leaf_index
        elif msg.private_message is not None and msg.private_message.epoch == epoch.epoch:
            try:
                leaf = decrypt_sender_data(
                    self.cipher_suite, msg.private_message, epoch.secrets.sender_data_secret
                ).leaf_index
            except MLSError:
                return None
        node = epoch.tree.leaf(LeafIndex(leaf)) if leaf is not None else None
        return Member.of(LeafIndex(leaf), node) if leaf is not None and node is not None else None

    def members_with_identity(self, identity: bytes | str) -> list[Member]:
        """Every member whose credential presents ``identity`` (one per device)."""
        name = identity.encode() if isinstance(identity, str) else identity
        return [m for m in self.members() if m.identity == name]

    def member(self, identity: bytes | str) -> Member:
        """The one member presenting ``identity``; :class:`UsageError` if none or several."""
        found = self.members_with_identity(identity)
        if len(found) != 1:
            what = "no member" if not found else f"{len(found)} members"
            raise UsageError(f"{what} with identity {identity!r}: name one by leaf or Member")
        return found[0]

    def public_view(self) -> PublicGroup:
        """A copy of the public view of the current epoch (what a Delivery Service holds)."""
        return self._state.public_view().copy()

    def held_node_indices(self) -> set[int]:
        """The tree nodes whose private keys we hold (for pictures and diagnostics)."""
        private = self._state.epoch.private
        return set(private.keys) if private is not None else set()

    def export_secret(self, label: str | bytes, context: bytes, length: int) -> bytes:
        """``MLS-Exporter(Label, Context, Length)`` of the current epoch (§8.5)."""
        secret = self._state.epoch.secrets.exporter_secret
        return mls_exporter(self.cipher_suite, secret, label, context, length)

    def export_ratchet_tree(self) -> bytes:
        """The ``ratchet_tree`` encoding, for members who join with the tree out of band."""
        return encode_ratchet_tree(self._state.epoch.tree.to_nodes())

    def add_external_psk(self, psk_id: bytes, psk: bytes) -> None:
        self._state.external_psks[psk_id] = psk

    def resumption_psk(self, epoch: int | None = None) -> bytes | None:
        key = (self.group_id, self.epoch if epoch is None else epoch)
        return self._state.resumption.get(key)

    def resumption_psks(self) -> dict[tuple[bytes, int], bytes]:
        """The retained resumption PSKs by (group_id, epoch), e.g. for joining a successor."""
        return dict(self._state.resumption)

    def add_resumption_psk(self, group_id: bytes, epoch: int, psk: bytes) -> None:
        """Make another group's resumption PSK available (reinit and branch, §11)."""
        self._state.resumption[(group_id, epoch)] = psk

    def group_info(
        self, *, with_ratchet_tree: bool | None = None, external_pub: bool | None = None
    ) -> bytes:
        """A signed GroupInfo for the current epoch (§12.4.3), as an MLSMessage."""
        self._state.require_secrets()
        gi = self._state.group_info(self._state.epoch, with_ratchet_tree, external_pub)
        return MLSMessage.wrap(gi).encode()

    def pending_group_info(
        self, *, with_ratchet_tree: bool | None = None, external_pub: bool | None = None
    ) -> bytes:
        """A signed GroupInfo for the epoch our pending commit starts (an external join's
        included), e.g. to give the Delivery Service with the commit."""
        pending = self._state.pending
        if pending is None or pending.staged.new_state is None:
            raise GroupStateError("no pending commit that starts an epoch")
        gi = self._state.group_info(pending.staged.new_state, with_ratchet_tree, external_pub)
        return MLSMessage.wrap(gi).encode()

    @property
    def welcome_psks(self) -> tuple[PreSharedKeyID, ...]:
        """The PSKs named by the Welcome we joined with (empty for other joins)."""
        return self._state.welcome_psks

    @property
    def reinit(self) -> ReInit | None:
        """The ReInit this group was closed with, if any (§11.2)."""
        return self._state.reinit

    # --- Sending ---------------------------------------------------------------------------

    def _random(self, n: int) -> bytes:
        """``n`` bytes from the group's provider (nonces, group ids)."""
        return self._state.config.provider.random(n)

    def _frame(
        self, content_type: ContentType, authenticated_data: bytes, **body: object
    ) -> FramedContent:
        return FramedContent(
            self.group_id,
            self.epoch,
            Sender.member(self._state.own_leaf),
            authenticated_data,
            content_type,
            **body,  # type: ignore[arg-type]
        )

    def encrypt_application(self, data: bytes, authenticated_data: bytes = b"") -> bytes:
        """An application message as a PrivateMessage (§6.3)."""
        st = self._state
        st.require_active()
        if st.proposals:
            raise GroupStateError(
                "proposals are pending: commit them before sending application data (§12.4)"
            )
        fc = self._frame(ContentType.application, authenticated_data, application_data=data)
        return protect(
            st.cs,
            st.epoch,
            st.identity.signing_key,
            fc,
            WireFormat.mls_private_message,
            padding_block=st.config.padding_block,
            rng=st.config.provider.rng,
        ).encode()

    def _send_proposal(
        self,
        proposal: Proposal,
        authenticated_data: bytes = b"",
        wire_format: WireFormat | None = None,
    ) -> bytes:
        st = self._state
        st.require_active()
        fc = self._frame(ContentType.proposal, authenticated_data, proposal=proposal)
        ac = authenticated_for(
            st.cs,
            st.epoch,
            st.identity.signing_key,
            fc,
            handshake_wire_format(st, wire_format),
        )
        st.public_view().validate_proposal(ac)  # what we send passes the receivers' checks
        message = protect_signed(
            st.cs,
            st.epoch,
            ac,
            padding_block=st.config.padding_block,
            rng=st.config.provider.rng,
        )
        # Our own proposals are cached like received ones, so a commit can cover them by ref.
        ref = st.cs.make_proposal_ref(ac.encode())
        st.proposals[ref] = QueuedProposal(proposal, fc.sender, ref)
        wire = message.encode()
        st.own_messages[wire] = ref
        return wire

    def propose_add(
        self,
        key_package: KeyPackage | bytes | MLSMessage,
        authenticated_data: bytes = b"",
        *,
        wire_format: WireFormat | None = None,
    ) -> bytes:
        """Propose adding the owner of ``key_package`` (a KeyPackage, or its bytes bare or
        as an MLSMessage)."""
        kp = as_key_package(key_package)
        return self._send_proposal(Proposal(Add(kp)), authenticated_data, wire_format)

    def propose_remove(
        self,
        member: MemberRef,
        authenticated_data: bytes = b"",
        *,
        wire_format: WireFormat | None = None,
    ) -> bytes:
        """Propose removing a member, named by leaf index, :class:`Member` or identity."""
        leaf = self._leaf_of(member)
        return self._send_proposal(Proposal(Remove(leaf)), authenticated_data, wire_format)

    def propose_update(
        self, authenticated_data: bytes = b"", *, wire_format: WireFormat | None = None
    ) -> bytes:
        enc_priv, leaf = self._fresh_leaf(LeafNodeSource.update)
        message = self._send_proposal(Proposal(Update(leaf)), authenticated_data, wire_format)
        ref = next(reversed(self._state.proposals))
        self._state.own_update_keys[ref] = enc_priv
        return message

    def propose_external_psk(
        self,
        psk_id: bytes,
        authenticated_data: bytes = b"",
        *,
        wire_format: WireFormat | None = None,
    ) -> bytes:
        if psk_id not in self._state.external_psks:
            raise UsageError("unknown external PSK id: add it with add_external_psk first")
        pid = PreSharedKeyID.external(psk_id, self._random(self.cipher_suite.nh))
        return self._send_proposal(Proposal(PreSharedKey(pid)), authenticated_data, wire_format)

    def propose_resumption_psk(
        self, epoch: int, authenticated_data: bytes = b"", *, wire_format: WireFormat | None = None
    ) -> bytes:
        if (self.group_id, epoch) not in self._state.resumption:
            raise UsageError(f"no resumption PSK retained for epoch {epoch}")
        pid = PreSharedKeyID.resumption(
            ResumptionPSKUsage.application,
            self.group_id,
            epoch,
            self._random(self.cipher_suite.nh),
        )
        return self._send_proposal(Proposal(PreSharedKey(pid)), authenticated_data, wire_format)

    def propose_group_context_extensions(
        self,
        extensions: tuple[Extension, ...],
        authenticated_data: bytes = b"",
        *,
        wire_format: WireFormat | None = None,
    ) -> bytes:
        proposal = Proposal(GroupContextExtensions(extensions))
        return self._send_proposal(proposal, authenticated_data, wire_format)

    def propose_reinit(
        self,
        *,
        group_id: bytes | None = None,
        cipher_suite: int | None = None,
        extensions: tuple[Extension, ...] | None = None,
        authenticated_data: bytes = b"",
        wire_format: WireFormat | None = None,
    ) -> bytes:
        reinit = ReInit(
            group_id if group_id is not None else self._random(self.cipher_suite.nh),
            ProtocolVersion.mls10,
            cipher_suite if cipher_suite is not None else self.context.cipher_suite,
            extensions if extensions is not None else self.extensions,
        )
        return self._send_proposal(Proposal(reinit), authenticated_data, wire_format)

    def propose_custom(
        self,
        proposal_type: int,
        data: bytes,
        authenticated_data: bytes = b"",
        *,
        wire_format: WireFormat | None = None,
    ) -> bytes:
        proposal = Proposal(CustomProposal(proposal_type, data))
        return self._send_proposal(proposal, authenticated_data, wire_format)

    def _fresh_leaf(self, source: LeafNodeSource) -> tuple[bytes, LeafNode]:
        cs = self.cipher_suite
        enc_priv, enc_pub = cs.hpke_key_pair(rng=self._state.config.provider.rng)
        ident = self._state.identity
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
        leaf = sign_leaf_node(cs, ident.signing_key, unsigned, self.group_id, self._state.own_leaf)
        return enc_priv, leaf

    def _leaf_of(self, member: MemberRef) -> LeafIndex:
        if isinstance(member, Member):
            current = self._state.epoch.tree.leaf(member.leaf_index)
            if current is None or current.signature_key != member.signature_key:
                raise UsageError(f"{member!r} is no longer a member at leaf {member.leaf_index}")
            return member.leaf_index
        if isinstance(member, bytes | str):
            return self.member(member).leaf_index
        return self.member_at(member).leaf_index

    # --- Committing ------------------------------------------------------------------------

    def commit(
        self,
        proposals: Iterable[Proposal] = (),
        *,
        add: Iterable[KeyPackage | bytes | MLSMessage] = (),
        remove: Iterable[MemberRef] = (),
        force_path: bool = False,
        include_pending: bool = True,
        admit: Callable[[QueuedProposal], bool] | None = None,
        authenticated_data: bytes = b"",
        ratchet_tree_in_welcome: bool | None = None,
        resumption_usage: ResumptionPSKUsage | None = None,
        wire_format: WireFormat | None = None,
        new_identity: SigningIdentity | None = None,
    ) -> CommitOutput:
        """Create a Commit covering the cached proposals (by reference), ``proposals`` (by
        value), and adds of ``add``'s KeyPackages and removals of ``remove``'s members (by
        leaf, :class:`Member` or identity). The group does not change until
        :meth:`merge_pending_commit`.

        ``admit`` chooses which cached proposals to cover (default: every valid one), e.g.
        leaving out an outsider's request to join until someone approves it.

        ``resumption_usage`` admits a reinit or branch resumption PSK, which is only valid in
        the first commit of a successor group (§11.2, §11.3).

        ``new_identity`` rotates our signature key: the same credential with a new key pair
        (bound to it at the Authentication Service first); the commit's path carries it, and
        :meth:`merge_pending_commit` takes it (``identity=``)."""
        by_value = [
            *proposals,
            *(Proposal(Remove(self._leaf_of(m))) for m in remove),
            *(Proposal(Add(as_key_package(kp))) for kp in add),
        ]
        options = CommitOptions(
            force_path=force_path,
            include_pending=include_pending,
            admit=admit,
            authenticated_data=authenticated_data,
            ratchet_tree_in_welcome=ratchet_tree_in_welcome,
            resumption_usage=resumption_usage,
            wire_format=wire_format,
            new_identity=new_identity,
        )
        return create_commit(self._state, by_value, options)

    def add_members(
        self, key_packages: Iterable[KeyPackage | bytes | MLSMessage], **options: object
    ) -> CommitOutput:
        """Commit adding the owners of ``key_packages``; see :meth:`commit` for options."""
        return self.commit(add=key_packages, **options)  # type: ignore[arg-type]

    def remove_members(self, members: Iterable[MemberRef], **options: object) -> CommitOutput:
        """Commit removing ``members`` (leaf, Member or identity); see :meth:`commit`."""
        return self.commit(remove=members, **options)  # type: ignore[arg-type]

    def merge_pending_commit(self, identity: SigningIdentity | None = None) -> StagedCommit:
        """Make our pending commit's epoch current (after the Delivery Service accepted it).
        A commit made with ``new_identity`` needs that identity again (it is not stored with
        the pending commit); for any other, ``identity`` is ignored."""
        pending = self._state.pending
        if pending is None:
            raise GroupStateError("no pending commit")
        new_state = pending.staged.new_state
        leaf = new_state.tree.leaf(self._state.own_leaf) if new_state is not None else None
        rotated = leaf is not None and leaf.signature_key != self._state.identity.signature_key
        if rotated and (
            identity is None or leaf is None or identity.signature_key != leaf.signature_key
        ):
            raise UsageError(
                "our pending commit carries a new signature key: merge it with identity= "
                "that key's SigningIdentity"
            )
        self._merge(pending.staged)
        if rotated and identity is not None:
            self._state.identity = identity
        return pending.staged

    def clear_pending_commit(self) -> None:
        """Forget our pending commit (e.g. the Delivery Service rejected it). An external
        join's pending commit cannot be cleared: discard the group instead."""
        if self._state.lifecycle is Lifecycle.JOINING:
            raise GroupStateError("an external join that failed is discarded, not cleared")
        self._state.pending = None

    def merge_staged_commit(self, staged: StagedCommit) -> None:
        """Make a staged commit's epoch current: one returned by :meth:`process` (our own
        echoed commit included) for the current epoch."""
        st = self._state
        if staged.own:
            if st.pending is None or st.pending.staged is not staged:
                raise GroupStateError("this is not our pending commit (merged already?)")
        elif st.lifecycle not in (Lifecycle.ACTIVE,):
            raise GroupStateError(f"cannot merge a commit: the group is {st.lifecycle.value}")
        if staged.epoch != self.epoch + 1:
            raise GroupStateError("the staged commit is not for the next epoch")
        self._merge(staged)

    def _merge(self, staged: StagedCommit) -> None:
        st = self._state
        st.proposals.clear()
        st.own_update_keys.clear()
        st.own_messages.clear()
        st.pending = None
        new_state = staged.new_state
        if staged.self_removed or new_state is None:
            # Removed (§12.4.2): the last epoch stays current but keeps no more than a past
            # epoch does (late messages), so our path keys and its other secrets are gone,
            # from memory and from storage.
            st.epoch = retire(st.epoch)
            st.lifecycle = Lifecycle.REMOVED
            return
        if st.lifecycle is Lifecycle.JOINING:
            st.lifecycle = Lifecycle.ACTIVE
        else:
            st.past.add(st.epoch, st.config.max_past_epochs)
        st.epoch = replace(new_state, secrets=forget_consumed(new_state.secrets))
        st.remember_resumption(st.epoch)
        if staged.reinit is not None:
            st.reinit = staged.reinit
            st.lifecycle = Lifecycle.REINIT

    # --- Receiving -------------------------------------------------------------------------

    def process(
        self, message: bytes | MLSMessage
    ) -> ApplicationMessage | ProposalReceived | StagedCommit:
        """Verify and interpret one message of this group; see the module docstring."""
        st = self._state
        raw = message.encode() if isinstance(message, MLSMessage) else bytes(message)
        if st.pending is not None and raw == st.pending.message_bytes:
            # Our own commit echoed by the Delivery Service (an external join's included): we
            # cannot decrypt it (its key is spent) and need not; it is exactly what we staged.
            return st.pending.staged
        self._state.require_secrets()
        own_ref = st.own_messages.get(raw)
        if own_ref is not None and own_ref in st.proposals:
            # Our own proposal echoed back: already cached when we sent it.
            q = st.proposals[own_ref]
            return ProposalReceived(q.proposal, q.sender, own_ref, self.member_at(st.own_leaf))
        u = unprotect(st.cs, decode_message(message), st.epoch, st.past.epochs)
        fc = u.content.content
        if fc.content_type == ContentType.application:
            return self._receive_application(u)
        if fc.content_type == ContentType.proposal:
            check_not_own_proposal(fc.sender, st.own_leaf)
            view = st.public_view()
            event = view.validate_proposal(u.content)
            self._consume(u)
            view.cache_proposal(event)
            return event
        staged = stage_commit(st, u)
        self._consume(u)
        return staged

    def _receive_application(self, u: Unprotected) -> ApplicationMessage:
        if u.opened is None:  # pragma: no cover - unprotect rejects public application data
            raise GroupStateError("application data must be a PrivateMessage")
        fc = u.content.content
        leaf = LeafIndex(u.opened.sender_data.leaf_index)
        node = u.epoch.tree.leaf(leaf)
        if node is None:  # pragma: no cover - unprotect checked the sender
            raise GroupStateError(f"sender leaf {leaf} is not a member")
        self._consume(u)
        return ApplicationMessage(
            Member.of(leaf, node), fc.application_data or b"", fc.authenticated_data, fc.epoch
        )

    @staticmethod
    def _consume(u: Unprotected) -> None:
        """Delete the message key of an accepted PrivateMessage (§9.2)."""
        if u.opened is not None:
            u.epoch.secret_tree.consume(u.opened.lookup)

    def __repr__(self) -> str:  # never show secrets
        return f"Group(epoch={self.epoch}, leaf={self.own_leaf_index}, {self.status.value})"


__all__ = ["Group", "MemberRef"]
