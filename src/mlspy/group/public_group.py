"""A public view of a group, with no secrets (RFC 9420 §12.4; RFC 9750 §5).

A Delivery Service (or any observer that sees PublicMessage handshakes) can follow a group from
a GroupInfo and the ratchet tree: it verifies signatures, validates every proposal list and
UpdatePath exactly as members do, and advances the GroupContext — tree hash and both transcript
hashes are computable from public data. It cannot check membership tags or confirmation tags
(those need epoch secrets) nor read PrivateMessages.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from mlspy.codec import Reader, Writer, decode_all, write_struct
from mlspy.crypto import CipherSuiteProvider, suite
from mlspy.errors import (
    CommitError,
    DecodeError,
    EpochError,
    FramingError,
    GroupStateError,
    LeafNodeError,
    MLSError,
    PathRequiredError,
    ProposalError,
    ProposalListError,
    StorageError,
    UsageError,
    WelcomeError,
)
from mlspy.group.framing import decode_message, sender_signature_key
from mlspy.group.proposals import (
    AppliedProposals,
    QueuedProposal,
    apply_proposals,
    check_leaf_supports_group,
    check_sender_may_propose,
)
from mlspy.group.state import Member
from mlspy.group.welcome import verify_group_info
from mlspy.messages import (
    AuthenticatedContent,
    ContentType,
    GroupContext,
    GroupInfo,
    LeafNodeSource,
    MLSMessage,
    Proposal,
    ProposalOrRefType,
    Sender,
    SenderType,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from mlspy.messages import RatchetTree as RatchetTreeExtension
from mlspy.protection import verify_content_signature
from mlspy.schedule.transcript import confirmed_transcript_hash, interim_transcript_hash
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import merge_update_path
from mlspy.tree.validation import validate_leaf_node, validate_tree


@dataclass(frozen=True)
class PublicProposal:
    proposal: Proposal
    sender: Sender
    ref: bytes


@dataclass
class PublicStagedCommit:
    """A validated commit's public outcome; current after :meth:`PublicGroup.merge`."""

    sender: Sender
    context: GroupContext
    tree: RatchetTree
    interim_transcript_hash: bytes
    applied: AppliedProposals
    reinit: bool


class PublicGroup:
    """Follows a group's public state from PublicMessage handshakes."""

    def __init__(
        self,
        context: GroupContext,
        tree: RatchetTree,
        interim_transcript_hash: bytes,
        *,
        now: int | None = None,
    ) -> None:
        self._cs = suite(context.cipher_suite)
        self._context = context
        self._tree = tree
        self._interim = interim_transcript_hash
        self._proposals: OrderedDict[bytes, PublicProposal] = OrderedDict()
        self._now = now
        self._closed = False

    @classmethod
    def from_group_info(
        cls,
        group_info: bytes | MLSMessage | GroupInfo,
        *,
        ratchet_tree: bytes | None = None,
        now: int | None = None,
    ) -> PublicGroup:
        """Start following a group from a signed GroupInfo (tree inside or out of band)."""
        if isinstance(group_info, GroupInfo):
            gi = group_info
        else:
            msg = decode_message(group_info)
            if msg.group_info is None:
                raise UsageError("the message is not a GroupInfo")
            gi = msg.group_info
        ctx = gi.group_context
        try:
            cs = suite(ctx.cipher_suite)
            ext = RatchetTreeExtension.find_in(gi.extensions)
        except (DecodeError, MLSError) as exc:
            raise WelcomeError(f"unusable GroupInfo: {exc}") from None
        if ext is not None:
            tree = RatchetTree.from_nodes(cs, ext.ratchet_tree)
        elif ratchet_tree is not None:
            tree = RatchetTree.from_nodes(cs, decode_ratchet_tree(ratchet_tree))
        else:
            raise WelcomeError("no ratchet tree: pass it out of band")
        verify_group_info(cs, gi, tree)
        validate_tree(tree, group_id=ctx.group_id, tree_hash=ctx.tree_hash, now=now)
        interim = interim_transcript_hash(cs, ctx.confirmed_transcript_hash, gi.confirmation_tag)
        return cls(ctx, tree, interim, now=now)

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
        return self._tree.copy()

    @property
    def closed(self) -> bool:
        """True after a ReInit commit: the group takes no more handshakes."""
        return self._closed

    def members(self) -> list[Member]:
        return [
            Member(i, leaf.credential, leaf.signature_key, leaf.encryption_key)
            for i, leaf in self._tree.leaves()
        ]

    def export_ratchet_tree(self) -> bytes:
        return encode_ratchet_tree(self._tree.to_nodes())

    # --- Processing -----------------------------------------------------------------------

    def _verified(self, message: bytes | MLSMessage) -> AuthenticatedContent:
        msg = decode_message(message)
        pm = msg.public_message
        if pm is None:
            raise FramingError("a public group can only follow PublicMessages")
        fc = pm.content
        if fc.group_id != self._context.group_id:
            raise EpochError("message for another group")
        if fc.epoch != self._context.epoch:
            raise EpochError(f"message for epoch {fc.epoch}, current is {self._context.epoch}")
        if fc.content_type == ContentType.application:
            raise FramingError("application data must be a PrivateMessage")
        key = sender_signature_key(self._context, self._tree, fc)
        content = pm.authenticated_content()
        verify_content_signature(self._cs, key, content, self._context)
        return content

    def process(self, message: bytes | MLSMessage) -> PublicProposal | PublicStagedCommit:
        """Validate a PublicMessage proposal (cached) or commit (staged)."""
        if self._closed:
            raise GroupStateError("the group was reinitialized")
        ac = self._verified(message)
        fc = ac.content
        if fc.content_type == ContentType.proposal:
            proposal = fc.proposal
            if proposal is None:  # pragma: no cover - decoding guarantees it
                raise ProposalError("empty proposal")
            check_sender_may_propose(proposal, fc.sender)
            ref = self._cs.make_proposal_ref(ac.encode())
            event = PublicProposal(proposal, fc.sender, ref)
            self._proposals[ref] = event
            return event
        return self._stage_commit(ac)

    def _stage_commit(self, ac: AuthenticatedContent) -> PublicStagedCommit:
        fc = ac.content
        commit = fc.commit
        if commit is None:  # pragma: no cover
            raise CommitError("empty commit")
        sender = fc.sender
        if sender.sender_type not in (SenderType.member, SenderType.new_member_commit):
            raise CommitError(f"a {sender.sender_type.name} sender may not commit")
        queued = []
        for por in commit.proposals:
            if por.type == ProposalOrRefType.proposal and por.proposal is not None:
                queued.append(QueuedProposal(por.proposal, sender, None))
            else:
                cached = self._proposals.get(por.reference or b"")
                if cached is None:
                    raise ProposalListError("the commit references an unknown proposal")
                queued.append(QueuedProposal(cached.proposal, cached.sender, cached.ref))
        tree = self._tree.copy()
        applied = apply_proposals(self._cs, self._context, tree, queued, sender, now=self._now)
        external = sender.sender_type == SenderType.new_member_commit
        if (applied.path_required or external) and commit.path is None:
            raise PathRequiredError("the commit's proposals require an UpdatePath")
        provisional = replace(
            self._context, epoch=self._context.epoch + 1, extensions=applied.extensions
        )
        if external and applied.removed:
            from mlspy.group.commit_receive import _check_resync

            _check_resync(self._tree, applied.removed[0], commit.path)
        if commit.path is not None:
            committer = (
                tree.add_leaf(commit.path.leaf_node)
                if external
                else LeafIndex(sender.leaf_index or 0)
            )
            try:
                validate_leaf_node(
                    self._cs,
                    commit.path.leaf_node,
                    group_id=self.group_id,
                    leaf_index=committer,
                    expected_source=LeafNodeSource.commit,
                    now=self._now,
                )
            except LeafNodeError as exc:
                raise CommitError(f"invalid committer leaf: {exc}") from None
            check_leaf_supports_group(commit.path.leaf_node, applied.extensions)
            merge_update_path(
                tree,
                committer,
                commit.path,
                excluded_leaves={i for i, _ in applied.added},
                joiner=external,
            )
        confirmed = confirmed_transcript_hash(
            self._cs, self._interim, ac.confirmed_transcript_hash_input()
        )
        context = replace(
            provisional, tree_hash=tree.tree_hash(), confirmed_transcript_hash=confirmed
        )
        interim = interim_transcript_hash(self._cs, confirmed, ac.auth.confirmation_tag or b"")
        return PublicStagedCommit(
            sender, context, tree, interim, applied, applied.reinit is not None
        )

    def merge(self, staged: PublicStagedCommit) -> None:
        """Make a staged commit's epoch current."""
        if staged.context.epoch != self._context.epoch + 1:
            raise GroupStateError("the staged commit is not for the next epoch")
        self._context = staged.context
        self._tree = staged.tree
        self._interim = staged.interim_transcript_hash
        self._proposals.clear()
        if staged.reinit:
            self._closed = True


def serialize_public_group(group: PublicGroup) -> bytes:
    """The public state (no secrets) of a followed group, for the Delivery Service's store."""
    w = Writer()
    w.fixed(b"MLSp")
    w.uint16(1)
    group._context.encode_to(w)
    w.uint32(group._tree.n_leaves)
    w.opaque(encode_ratchet_tree(group._tree.to_nodes()))
    w.opaque(group._interim)

    def write_proposal(w: Writer, p: PublicProposal) -> None:
        w.opaque(p.ref)
        write_struct(w, p.proposal)
        write_struct(w, p.sender)

    w.vector(list(group._proposals.values()), write_proposal)
    w.uint8(int(group._closed))
    return w.getvalue()


def deserialize_public_group(data: bytes, *, now: int | None = None) -> PublicGroup:
    def read(r: Reader) -> PublicGroup:
        if r.fixed(4) != b"MLSp" or r.uint16() != 1:
            raise DecodeError("not a stored public group state")
        context = GroupContext.decode_from(r)
        cs = suite(context.cipher_suite)
        n_leaves = r.uint32()
        tree = RatchetTree.from_nodes(cs, decode_ratchet_tree(r.opaque()))
        while tree.n_leaves < n_leaves:
            tree._extend()
        group = PublicGroup(context, tree, r.opaque(), now=now)
        for p in r.vector(_read_public_proposal):
            group._proposals[p.ref] = p
        group._closed = bool(r.uint8())
        return group

    try:
        return decode_all(data, read, "stored public group")
    except DecodeError as exc:
        raise StorageError(f"corrupt stored public group: {exc}") from None


def _read_public_proposal(r: Reader) -> PublicProposal:
    ref = r.opaque()
    return PublicProposal(Proposal.decode_from(r), Sender.decode_from(r), ref)


__all__ = [
    "PublicGroup",
    "PublicProposal",
    "PublicStagedCommit",
    "deserialize_public_group",
    "serialize_public_group",
]
