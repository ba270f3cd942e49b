"""A public view of a group, with no secrets (RFC 9420 §12.4; RFC 9750 §5).

A Delivery Service (or any observer that sees PublicMessage handshakes) follows a group from a
GroupInfo and the ratchet tree. It runs the very code a member runs for every publicly
checkable rule (:mod:`mlspy.group.commit_validate`): signatures, each proposal on receipt,
proposal lists, the committer's path leaf, UpdatePath structure, lifetimes and credentials,
with the same :class:`GroupConfig` checks; and it advances the GroupContext (tree hash and both
transcript hashes are public). What it cannot check needs epoch secrets: membership tags,
confirmation tags, path secrets, and anything inside a PrivateMessage. A member is this view
plus its secrets: :meth:`Group.public_view` gives a copy of a member's.
"""

from __future__ import annotations

from collections import OrderedDict

from mlspy.codec import Reader, Writer, decode_all, write_struct
from mlspy.crypto import CipherSuiteProvider, suite
from mlspy.errors import (
    DecodeError,
    FramingError,
    GroupStateError,
    MLSError,
    StorageError,
    TreeError,
    WelcomeError,
)
from mlspy.group.commit_validate import (
    PskAvailable,
    ValidatedCommit,
    validate_commit,
    validate_proposal,
)
from mlspy.group.framing import decode_as, decode_message, verify_public_message
from mlspy.group.proposals import QueuedProposal
from mlspy.group.state import GroupConfig, LeafChecks, Member, ProposalReceived
from mlspy.group.welcome import validate_group_tree, verify_group_info
from mlspy.messages import (
    AuthenticatedContent,
    ContentType,
    GroupContext,
    GroupInfo,
    MLSMessage,
    Proposal,
    Sender,
    SenderType,
    WireFormat,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from mlspy.messages import RatchetTree as RatchetTreeExtension
from mlspy.schedule.transcript import interim_transcript_hash
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree

# What the public view's ``process`` returns: the events a member returns for the same
# message, minus what needs secrets.
PublicProposal = ProposalReceived
PublicStagedCommit = ValidatedCommit


class PublicGroup:
    """The public state of one epoch of a group, and the rules that judge its handshakes.

    ``proposals`` (shared, not copied, when a member builds its view) are the proposals
    received this epoch by reference."""

    def __init__(
        self,
        context: GroupContext,
        tree: RatchetTree,
        interim_transcript_hash: bytes,
        *,
        config: GroupConfig | None = None,
        proposals: OrderedDict[bytes, QueuedProposal] | None = None,
        closed: bool = False,
    ) -> None:
        self._cs = suite(context.cipher_suite)
        self._context = context
        self._tree = tree
        self._interim = interim_transcript_hash
        self._config = config or GroupConfig()
        self._proposals: OrderedDict[bytes, QueuedProposal] = (
            proposals if proposals is not None else OrderedDict()
        )
        self._closed = closed

    @classmethod
    def from_group_info(
        cls,
        group_info: bytes | MLSMessage | GroupInfo,
        *,
        ratchet_tree: bytes | None = None,
        config: GroupConfig | None = None,
    ) -> PublicGroup:
        """Start following a group from a signed GroupInfo (tree inside or out of band).

        The tree is validated as a joiner validates it (§12.4.3.1), with ``config``'s
        lifetime and credential checks."""
        config = config or GroupConfig()
        gi = (
            group_info if isinstance(group_info, GroupInfo) else decode_as(group_info, "group_info")
        )
        ctx = gi.group_context
        try:
            cs = suite(ctx.cipher_suite)
            ext = RatchetTreeExtension.find_in(gi.extensions)
        except MLSError as exc:
            raise WelcomeError(
                f"unusable GroupInfo: {exc}", rule=getattr(exc, "rule", None)
            ) from exc
        if ext is not None:
            tree = RatchetTree.from_nodes(cs, ext.ratchet_tree)
        elif ratchet_tree is not None:
            tree = RatchetTree.from_nodes(cs, decode_ratchet_tree(ratchet_tree))
        else:
            raise WelcomeError("no ratchet tree: pass it out of band")
        verify_group_info(cs, gi, tree)
        validate_group_tree(tree, ctx, config)
        interim = interim_transcript_hash(cs, ctx.confirmed_transcript_hash, gi.confirmation_tag)
        return cls(ctx, tree, interim, config=config)

    # --- Views --------------------------------------------------------------------------

    @property
    def cipher_suite(self) -> CipherSuiteProvider:
        return self._cs

    @property
    def context(self) -> GroupContext:
        return self._context

    @property
    def group_id(self) -> bytes:
        return self._context.group_id

    @property
    def epoch(self) -> int:
        return self._context.epoch

    @property
    def tree(self) -> RatchetTree:
        """A copy of the ratchet tree."""
        return self._tree.copy()

    @property
    def interim_transcript_hash(self) -> bytes:
        return self._interim

    @property
    def config(self) -> GroupConfig:
        return self._config

    @property
    def closed(self) -> bool:
        """True after a ReInit commit: the group takes no more handshakes."""
        return self._closed

    @property
    def pending_proposals(self) -> list[QueuedProposal]:
        return list(self._proposals.values())

    def members(self) -> list[Member]:
        return [Member.of(i, leaf) for i, leaf in self._tree.leaves()]

    def member_at(self, leaf: int) -> Member | None:
        node = self._tree.leaf(LeafIndex(leaf))
        return None if node is None else Member.of(LeafIndex(leaf), node)

    def export_ratchet_tree(self) -> bytes:
        return encode_ratchet_tree(self._tree.to_nodes())

    def copy(self) -> PublicGroup:
        """An independent copy (tree and proposal cache copied)."""
        return PublicGroup(
            self._context,
            self._tree.copy(),
            self._interim,
            config=self._config,
            proposals=OrderedDict(self._proposals),
            closed=self._closed,
        )

    # --- The rules ------------------------------------------------------------------------

    def leaf_checks(self) -> LeafChecks:
        return self._config.leaf_checks()

    def validate_proposal(self, content: AuthenticatedContent) -> ProposalReceived:
        """A verified proposal on receipt (§12.1); returns it with its reference."""
        fc = content.content
        proposal = fc.proposal
        if proposal is None:  # pragma: no cover - decoding guarantees it
            raise FramingError("proposal content without a proposal")
        validate_proposal(
            self._cs, self._context, self._tree, proposal, fc.sender, self.leaf_checks()
        )
        ref = self._cs.make_proposal_ref(content.encode())
        member = None
        if fc.sender.sender_type == SenderType.member:
            member = self.member_at(fc.sender.leaf_index or 0)
        return ProposalReceived(proposal, fc.sender, ref, member)

    def cache_proposal(self, event: ProposalReceived) -> None:
        self._proposals[event.ref] = QueuedProposal(event.proposal, event.sender, event.ref)

    def validate_commit(
        self, content: AuthenticatedContent, *, psk_available: PskAvailable | None = None
    ) -> ValidatedCommit:
        """Every public rule of a verified commit (§12.4.2); nothing changes."""
        return validate_commit(
            self._cs,
            self._context,
            self._tree,
            self._interim,
            content,
            self._proposals,
            self.leaf_checks(),
            psk_available=psk_available,
        )

    # --- Processing -----------------------------------------------------------------------

    def _verified(self, message: bytes | MLSMessage) -> AuthenticatedContent:
        msg = decode_message(message)
        pm = msg.public_message
        if pm is None:
            raise FramingError(
                "a public group can only follow PublicMessages",
                rule="FR-04" if msg.wire_format == WireFormat.mls_welcome else "FR-03",
            )
        return verify_public_message(self._cs, pm, self._context, self._tree, None)

    def process(self, message: bytes | MLSMessage) -> ProposalReceived | ValidatedCommit:
        """Validate a PublicMessage proposal (then cached) or commit (staged: current after
        :meth:`merge`). A failure raises and changes nothing."""
        if self._closed:
            raise GroupStateError("the group was reinitialized")
        content = self._verified(message)
        if content.content.content_type == ContentType.proposal:
            event = self.validate_proposal(content)
            self.cache_proposal(event)
            return event
        return self.validate_commit(content)

    def merge(self, staged: ValidatedCommit) -> None:
        """Make a staged commit's epoch current."""
        if staged.context.epoch != self._context.epoch + 1:
            raise GroupStateError("the staged commit is not for the next epoch")
        self._context = staged.context
        self._tree = staged.tree
        self._interim = staged.interim_transcript_hash
        self._proposals.clear()
        if staged.applied.reinit is not None:
            self._closed = True


def serialize_public_group(group: PublicGroup) -> bytes:
    """The public state (no secrets) of a followed group, for the Delivery Service's store."""
    w = Writer()
    w.fixed(b"MLSp")
    w.uint16(1)
    group.context.encode_to(w)
    tree = group._tree
    w.uint32(tree.n_leaves)
    w.opaque(encode_ratchet_tree(tree.to_nodes()))
    w.opaque(group.interim_transcript_hash)

    def write_proposal(w: Writer, p: QueuedProposal) -> None:
        w.opaque(p.ref or b"")
        write_struct(w, p.proposal)
        write_struct(w, p.sender)

    w.vector(group.pending_proposals, write_proposal)
    w.uint8(int(group.closed))
    return w.getvalue()


def deserialize_public_group(data: bytes, *, config: GroupConfig | None = None) -> PublicGroup:
    """Restore a public view saved by :func:`serialize_public_group`; ``config`` gives the
    lifetime and credential checks (not stored)."""

    def read(r: Reader) -> PublicGroup:
        if r.fixed(4) != b"MLSp" or r.uint16() != 1:
            raise DecodeError("not a stored public group state")
        context = GroupContext.decode_from(r)
        cs = suite(context.cipher_suite)
        n_leaves = r.uint32()
        tree = RatchetTree.from_nodes(cs, decode_ratchet_tree(r.opaque()), n_leaves=n_leaves)
        interim = r.opaque()
        cached = r.vector(_read_public_proposal)
        proposals = OrderedDict((q.ref or b"", q) for q in cached)
        return PublicGroup(
            context, tree, interim, config=config, proposals=proposals, closed=bool(r.uint8())
        )

    try:
        return decode_all(data, read, "stored public group")
    except (DecodeError, TreeError) as exc:
        raise StorageError(f"corrupt stored public group: {exc}") from exc


def _read_public_proposal(r: Reader) -> QueuedProposal:
    ref = r.opaque()
    return QueuedProposal(Proposal.decode_from(r), Sender.decode_from(r), ref)


__all__ = [
    "PublicGroup",
    "PublicProposal",
    "PublicStagedCommit",
    "deserialize_public_group",
    "serialize_public_group",
]
