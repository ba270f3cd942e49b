"""Negative tests for commit and proposal validation (RFC 9420 §12.1, §12.2, §12.4.2,
§12.4.3.2).

Every test builds a real four-member group (``alice``, ``bob``, ``carol``, ``dave`` at leaves
0-3), crafts a message that breaks exactly one rule — usually a Commit from ``bob`` forged by
:func:`group_helpers.forge_commit`, honest in everything but that rule, with a confirmation
tag the receiver would accept — and feeds it to ``carol``. Each test checks the exact error
class and the RFC section its message cites, that ``carol``'s state did not change (epoch,
epoch authenticator, an exported secret, tree hash, GroupContext, cached proposals) and that
she still processes the next valid commit and application messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import pytest

from group_helpers import (
    PSK_ID,
    PSK_VALUE,
    Ref,
    assert_recovers,
    commit_and_deliver,
    forge_commit,
    forge_external_commit,
    leaf_of,
    make_group,
    new_kp,
    propose_to_all,
    psk_proposal,
    ref_of,
    reframe,
    reinit_proposal,
    reject,
    resign_leaf,
    share_psk,
    snapshot,
    update_leaf,
)
from mlspy.errors import (
    CommitError,
    ConfirmationTagError,
    CredentialTypeError,
    EpochError,
    ExternalCommitError,
    ExternalProposalError,
    MembershipTagError,
    ParentHashError,
    PathRequiredError,
    ProposalError,
    ProposalListError,
    PskError,
    SenderError,
    SignatureError,
    UpdatePathError,
)
from mlspy.group import (
    Group,
    GroupConfig,
    SigningIdentity,
    StagedCommit,
    default_capabilities,
    join_external,
)
from mlspy.messages import (
    Credential,
    CustomProposal,
    FramedContent,
    GroupContextExtensions,
    HPKECiphertext,
    LeafNodeSource,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    Remove,
    Sender,
    Update,
    UpdatePath,
    WireFormat,
)
from mlspy.protection import protect_public_message

ALICE, BOB, CAROL, DAVE = 0, 1, 2, 3
CUSTOM_TYPE = 0xF0F0
CUSTOM_CREDENTIAL = 0xF0F1


# --- §12.2: proposal list validation, regular commits ---------------------------------------------


# --- §12.4.2: processing a Commit ---------------------------------------------------------------


def _drop_last_node(path: UpdatePath) -> UpdatePath:
    return replace(path, nodes=path.nodes[:-1])


def _extra_node(path: UpdatePath) -> UpdatePath:
    return replace(path, nodes=(*path.nodes, path.nodes[-1]))


def _drop_a_ciphertext(path: UpdatePath) -> UpdatePath:
    first = path.nodes[0]
    shorter = replace(first, encrypted_path_secret=first.encrypted_path_secret[:-1])
    return replace(path, nodes=(shorter, *path.nodes[1:]))


def _corrupt_ciphertexts(path: UpdatePath) -> UpdatePath:
    def flip(ct: HPKECiphertext) -> HPKECiphertext:
        return replace(ct, ciphertext=bytes(b ^ 0x01 for b in ct.ciphertext))

    nodes = tuple(
        replace(n, encrypted_path_secret=tuple(flip(c) for c in n.encrypted_path_secret))
        for n in path.nodes
    )
    return replace(path, nodes=nodes)


def _with_leaf(
    committer: Group, signer: bytes | None = None, **changes: object
) -> Callable[[UpdatePath], UpdatePath]:
    """Edit the committer's path leaf and re-sign it (with ``signer``, default its own key)."""

    def tweak(path: UpdatePath) -> UpdatePath:
        leaf = replace(path.leaf_node, **changes)  # type: ignore[arg-type]
        key = signer or committer.identity.signature_private_key
        return replace(path, leaf_node=resign_leaf(committer, leaf, key, committer.own_leaf_index))

    return tweak


def _content(**changes: object) -> Callable[[FramedContent], FramedContent]:
    return lambda fc: replace(fc, **changes)  # type: ignore[arg-type]


class TestCommitFraming:
    """RFC 9420 §12.4.2, first steps (and §6, §6.1, §6.2): the Commit must be for the current
    epoch of this group, from a member leaf that is not blank (and not our own), carry a valid
    membership tag, and be signed by the sender's leaf key."""

    @pytest.mark.parametrize("delta", [-1, 1, 2**32])
    def test_wrong_epoch(self, groups: list[Group], delta: int) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, tweak_content=_content(epoch=bob.epoch + delta))
        reject(carol, message, EpochError, "epoch")
        assert_recovers(groups, carol)

    def test_replayed_commit_of_a_past_epoch(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        old = commit_and_deliver(groups, bob)
        reject(carol, old, EpochError, f"epoch {carol.epoch - 1}")
        assert_recovers(groups, carol)

    def test_wrong_group_id(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, tweak_content=_content(group_id=os.urandom(32)))
        reject(carol, message, EpochError, "another group")
        assert_recovers(groups, carol)

    def test_sender_outside_the_tree(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, tweak_content=_content(sender=Sender.member(99)))
        reject(carol, message, SenderError, "99")
        assert_recovers(groups, carol)

    def test_sender_at_a_blank_leaf(self, groups: list[Group]) -> None:
        alice, bob, carol, dave = groups[ALICE], groups[BOB], groups[CAROL], groups[DAVE]
        commit_and_deliver(groups, alice, [Proposal(Remove(DAVE))])
        message = forge_commit(
            bob,
            tweak_content=_content(sender=Sender.member(DAVE)),
            signature_private_key=dave.identity.signature_private_key,
        )
        reject(carol, message, SenderError, "sender leaf 3 is not a member")
        assert_recovers(groups, carol)

    def test_our_own_commit_that_is_not_pending(self, groups: list[Group]) -> None:
        carol = groups[CAROL]
        out = carol.commit()
        carol.clear_pending_commit()
        reject(carol, out.commit, CommitError, "our own leaf", member_only=True)
        assert_recovers(groups, carol)

    @pytest.mark.parametrize(
        "sender",
        [Sender.external(0), Sender.new_member_proposal()],
        ids=lambda s: s.sender_type.name,
    )
    def test_commit_from_a_non_member_sender_type(
        self, groups: list[Group], sender: Sender
    ) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, tweak_content=_content(sender=sender))
        reject(carol, message, ExternalProposalError)
        assert_recovers(groups, carol)

    def test_bad_membership_tag(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, membership_key=os.urandom(32))
        reject(carol, message, MembershipTagError, "does not verify", member_only=True)
        assert_recovers(groups, carol)

    def test_signature_by_another_member(self, groups: list[Group]) -> None:
        bob, carol, alice = groups[BOB], groups[CAROL], groups[ALICE]
        message = forge_commit(bob, signature_private_key=alice.identity.signature_private_key)
        reject(carol, message, SignatureError, "does not verify")
        assert_recovers(groups, carol)

    def test_content_changed_after_signing(self, groups: list[Group]) -> None:
        """authenticated_data edited and the membership tag recomputed: only the signature
        catches it."""
        bob, carol = groups[BOB], groups[CAROL]
        pm = MLSMessage.decode(forge_commit(bob)).public_message
        assert pm is not None
        edited = pm.authenticated_content()
        edited = replace(edited, content=replace(edited.content, authenticated_data=b"evil"))
        epoch = bob.state.epoch
        remac = protect_public_message(
            bob.cipher_suite, edited, epoch.context, epoch.secrets.membership_key
        )
        reject(carol, MLSMessage.wrap(remac).encode(), SignatureError, "does not verify")
        assert_recovers(groups, carol)


class TestCommitProcessing:
    """RFC 9420 §12.4.2: referenced proposals must be known, PSKs available, the path present
    when the proposals (or an empty list) require it, the UpdatePath well formed for the
    committer's filtered direct path with a valid ``commit`` LeafNode, fresh keys and a correct
    parent hash, and the confirmation tag must verify."""

    def test_forged_commit_is_accepted_when_nothing_is_broken(self, groups: list[Group]) -> None:
        """Control: the forging helper builds commits a receiver accepts."""
        bob, carol, dave = groups[BOB], groups[CAROL], groups[DAVE]
        update = propose_to_all(groups, dave.propose_update(), dave)
        message = forge_commit(bob, [update, new_kp(), Proposal(Remove(ALICE))])
        staged = carol.process(message)
        assert isinstance(staged, StagedCommit)
        assert [m.leaf_index for m in staged.updated] == [DAVE] and staged.removed_leaves == [ALICE]

    def test_reference_to_an_unknown_proposal(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [ProposalOrRef.by_reference(os.urandom(32))])
        reject(carol, message, ProposalListError, "unknown proposal")
        assert_recovers(groups, carol)

    def test_reference_to_a_proposal_only_the_committer_saw(self, groups: list[Group]) -> None:
        bob, carol, dave = groups[BOB], groups[CAROL], groups[DAVE]
        message = dave.propose_update()
        bob.process(message)  # carol never received it
        message = forge_commit(bob, [ref_of(dave, message)])
        reject(carol, message, ProposalListError, "unknown proposal")
        assert_recovers(groups, carol)

    def test_psk_not_available(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        bob.add_external_psk(PSK_ID, PSK_VALUE)  # only the committer knows it
        message = forge_commit(bob, [psk_proposal(bob)], psks={PSK_ID: PSK_VALUE})
        reject(carol, message, PskError, "not available", member_only=True)
        assert_recovers(groups, carol)

    @pytest.mark.parametrize("what", ["empty", "update", "remove", "gce", "custom"])
    def test_path_missing(self, groups: list[Group], what: str) -> None:
        if what == "custom":  # a proposal type every member supports: path required (§12.4)
            caps = default_capabilities(proposals=(CUSTOM_TYPE,))
            ids = [SigningIdentity.generate(f"m{i}".encode(), capabilities=caps) for i in range(4)]
            groups = make_group(identities=ids)
        bob, carol, dave = groups[BOB], groups[CAROL], groups[DAVE]
        proposals: list[Proposal | Ref] = []
        if what == "update":
            proposals = [propose_to_all(groups, dave.propose_update(), dave)]
        elif what == "remove":
            proposals = [Proposal(Remove(DAVE))]
        elif what == "gce":
            proposals = [Proposal(GroupContextExtensions(()))]
        elif what == "custom":
            proposals = [Proposal(CustomProposal(CUSTOM_TYPE, b"x"))]
        message = forge_commit(bob, proposals, path=False)
        reject(carol, message, PathRequiredError, "require an UpdatePath")
        assert_recovers(groups, carol)

    def test_path_may_be_omitted_for_add_psk_reinit(self, groups: list[Group]) -> None:
        """Control: Add, PreSharedKey and ReInit do not require a path (§12.4)."""
        bob, carol = groups[BOB], groups[CAROL]
        share_psk(groups)
        for proposals in ([new_kp()], [psk_proposal(bob)], [reinit_proposal(bob)]):
            message = forge_commit(bob, proposals, path=False, psks={PSK_ID: PSK_VALUE})
            assert isinstance(carol.process(message), StagedCommit)

    @pytest.mark.parametrize(
        "tweak",
        [_drop_last_node, _extra_node, _drop_a_ciphertext],
        ids=["missing_node", "extra_node", "missing_ciphertext"],
    )
    def test_path_shape_does_not_match_the_tree(
        self, groups: list[Group], tweak: Callable[[UpdatePath], UpdatePath]
    ) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, UpdatePathError, "nodes|ciphertexts")
        assert_recovers(groups, carol)

    def test_path_secret_does_not_decrypt(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, tweak_path=_corrupt_ciphertexts)
        reject(carol, message, UpdatePathError, "cannot decrypt", member_only=True)
        assert_recovers(groups, carol)

    def test_committer_leaf_source_not_commit(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        tweak = _with_leaf(bob, leaf_node_source=LeafNodeSource.update, parent_hash=None)
        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, CommitError, "invalid committer leaf: leaf_node_source")
        assert_recovers(groups, carol)

    def test_committer_leaf_bad_signature(self, groups: list[Group]) -> None:
        bob, carol, alice = groups[BOB], groups[CAROL], groups[ALICE]
        tweak = _with_leaf(bob, signer=alice.identity.signature_private_key)
        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, CommitError, "invalid committer leaf: signature")
        assert_recovers(groups, carol)

    def test_committer_leaf_with_unsupported_credential_type(self, groups: list[Group]) -> None:
        """§7.3 applies to the path's LeafNode too: its credential type must be supported by
        every member."""
        bob, carol = groups[BOB], groups[CAROL]
        tweak = _with_leaf(
            bob,
            credential=Credential.custom(CUSTOM_CREDENTIAL, b"bob"),
            capabilities=default_capabilities(credentials=(1, 2, CUSTOM_CREDENTIAL)),
        )
        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, CredentialTypeError, "credential type")
        assert_recovers(groups, carol)

    def test_committer_leaf_with_another_members_signature_key(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        tweak = _with_leaf(
            bob,
            signer=carol.identity.signature_private_key,
            signature_key=carol.identity.signature_key,
        )
        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, CommitError, "signature key belongs to another member")
        assert_recovers(groups, carol)

    def test_committer_leaf_keeps_its_encryption_key(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        tweak = _with_leaf(bob, encryption_key=leaf_of(bob, BOB).encryption_key)
        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, UpdatePathError, "new encryption key")
        assert_recovers(groups, carol)

    def test_path_key_already_in_the_tree(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        taken = leaf_of(carol, CAROL).encryption_key

        def tweak(path: UpdatePath) -> UpdatePath:
            node = replace(path.nodes[0], encryption_key=taken)
            return replace(path, nodes=(node, *path.nodes[1:]))

        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, UpdatePathError, "already used")
        assert_recovers(groups, carol)

    def test_path_encrypts_to_a_member_added_by_the_same_commit(self, groups: list[Group]) -> None:
        """§7.6: an UpdatePathNode has one ciphertext per node of its copath child's
        resolution, leaving out the members the same commit adds. Bob adds a newcomer at leaf
        4, the whole resolution under the root's copath child, so the root's node carries
        none; one more (to the newcomer) is refused."""
        bob, carol = groups[BOB], groups[CAROL]

        def to_the_newcomer(path: UpdatePath) -> UpdatePath:
            root = path.nodes[-1]
            assert root.encrypted_path_secret == ()
            extra = HPKECiphertext(os.urandom(32), os.urandom(48))
            nodes = (*path.nodes[:-1], replace(root, encrypted_path_secret=(extra,)))
            return replace(path, nodes=nodes)

        message = forge_commit(bob, [new_kp()], path=True, tweak_path=to_the_newcomer)
        reject(carol, message, UpdatePathError, "ciphertexts for a resolution of 0")
        assert_recovers(groups, carol)

    def test_path_key_is_not_a_kem_public_key(self, groups: list[Group]) -> None:
        """§5.1.1, §7.6: every UpdatePath public key is a valid KEM public key (the all-zero
        X25519 point has small order)."""
        bob, carol = groups[BOB], groups[CAROL]

        def zero(path: UpdatePath) -> UpdatePath:
            node = replace(path.nodes[0], encryption_key=bytes(32))
            return replace(path, nodes=(node, *path.nodes[1:]))

        reject(carol, forge_commit(bob, tweak_path=zero), UpdatePathError, "invalid public key")
        assert_recovers(groups, carol)

    def test_committer_leaf_parent_hash_wrong(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, tweak_path=_with_leaf(bob, parent_hash=os.urandom(32)))
        reject(carol, message, ParentHashError, "parent_hash")
        assert_recovers(groups, carol)

    def test_confirmation_tag_changed(self, groups: list[Group]) -> None:
        """A valid commit whose tag is replaced, then re-signed and re-MACed."""
        bob, carol = groups[BOB], groups[CAROL]
        out = bob.commit()
        bob.clear_pending_commit()
        message = reframe(bob, out.commit, confirmation_tag=os.urandom(32))
        reject(carol, message, ConfirmationTagError, "does not verify", member_only=True)
        assert_recovers(groups, carol)

    @pytest.mark.parametrize(
        "tag", [b"", b"\x00" * 32, b"\x00" * 64], ids=["empty", "zero", "long"]
    )
    def test_confirmation_tag_forged(self, groups: list[Group], tag: bytes) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [Proposal(Remove(DAVE))], confirmation_tag=tag)
        reject(carol, message, ConfirmationTagError, "does not verify", member_only=True)
        assert_recovers(groups, carol)


class TestPrivateMessageCommit:
    """RFC 9420 §12.4.2 and §9.2 with PrivateMessage handshakes: a rejected Commit consumes
    no ratchet key, so the committer's next genuine commit at the same generation decrypts."""

    @pytest.mark.parametrize("broken", ["confirmation_tag", "proposal_list"])
    def test_rejected_private_commit_leaves_the_ratchet(self, broken: str) -> None:
        config = GroupConfig(handshake_wire_format=WireFormat.mls_private_message)
        groups = make_group(4, config=config)
        bob, carol = groups[BOB], groups[CAROL]
        if broken == "confirmation_tag":
            message = forge_commit(
                bob, wire_format=WireFormat.mls_private_message, confirmation_tag=os.urandom(32)
            )
            reject(carol, message, ConfirmationTagError)
        else:
            gces = [Proposal(GroupContextExtensions(()))] * 2
            message = forge_commit(bob, gces, wire_format=WireFormat.mls_private_message)
            reject(carol, message, ProposalListError, "more than one group_context_extensions")
        genuine = bob.commit()  # handshake generation 0 again: its key must still be there
        bob.merge_pending_commit()
        staged = carol.process(genuine.commit)
        assert isinstance(staged, StagedCommit)
        carol.merge_staged_commit(staged)
        assert carol.epoch_authenticator == bob.epoch_authenticator


# --- §12.4.3.2: external commits ----------------------------------------------------------------


@pytest.fixture
def joiner() -> SigningIdentity:
    return SigningIdentity.generate(b"joiner")


class TestExternalCommit:
    """RFC 9420 §12.2 (external list) and §12.4.3.2: an external Commit holds exactly one
    ExternalInit, at most one Remove, PreSharedKeys and nothing else, all by value; it has a
    path, is signed with the path leaf's key, and its new leaf is unique in the group."""

    def test_forged_external_commit_is_accepted_when_nothing_is_broken(
        self, groups: list[Group], joiner: SigningIdentity
    ) -> None:
        """Control for the forging helper (a join, and a resync by dave's new device)."""
        carol = groups[CAROL]
        assert isinstance(carol.process(forge_external_commit(carol, joiner)), StagedCommit)
        dave_again = SigningIdentity.generate(groups[DAVE].identity.credential.identity or b"")
        resync = forge_external_commit(carol, dave_again, extra=[Proposal(Remove(DAVE))])
        staged = carol.process(resync)
        assert isinstance(staged, StagedCommit) and staged.removed_leaves == [DAVE]

    def test_no_external_init(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        message = forge_external_commit(carol, joiner, external_inits=0)
        reject(carol, message, ProposalListError, "exactly one external_init")
        assert_recovers(groups, carol)

    def test_two_external_inits(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        message = forge_external_commit(carol, joiner, external_inits=2)
        reject(carol, message, ProposalListError, "exactly one external_init")
        assert_recovers(groups, carol)

    def test_proposal_by_reference(self, groups: list[Group], joiner: SigningIdentity) -> None:
        alice, carol = groups[ALICE], groups[CAROL]
        ref = propose_to_all(groups, alice.propose_remove(DAVE), alice)
        message = forge_external_commit(carol, joiner, extra=[ref])
        reject(carol, message, ProposalListError, "by reference")
        assert_recovers(groups, carol)

    @pytest.mark.parametrize("kind", ["add", "group_context_extensions", "reinit"])
    def test_forbidden_proposal_type(
        self, groups: list[Group], joiner: SigningIdentity, kind: str
    ) -> None:
        carol = groups[CAROL]
        extra = {
            "add": new_kp(),
            "group_context_extensions": Proposal(GroupContextExtensions(())),
            "reinit": reinit_proposal(carol),
        }[kind]
        message = forge_external_commit(carol, joiner, extra=[extra])
        reject(carol, message, ProposalListError, "may not contain proposal types")
        assert_recovers(groups, carol)

    def test_update_in_external_commit(self, groups: list[Group], joiner: SigningIdentity) -> None:
        """An external commit may hold only ExternalInit, Remove and PSK proposals (§12.2)."""
        carol = groups[CAROL]
        extra = Proposal(Update(update_leaf(carol)))
        message = forge_external_commit(carol, joiner, extra=[extra])
        reject(carol, message, ProposalListError, "may not contain proposal types")
        assert_recovers(groups, carol)

    def test_two_removes(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        extra = [Proposal(Remove(DAVE)), Proposal(Remove(ALICE))]
        message = forge_external_commit(carol, joiner, extra=extra)
        reject(carol, message, ProposalListError, "at most one")
        assert_recovers(groups, carol)

    def test_remove_of_blank_leaf(self, groups: list[Group], joiner: SigningIdentity) -> None:
        alice, carol = groups[ALICE], groups[CAROL]
        commit_and_deliver(groups, alice, [Proposal(Remove(DAVE))])
        message = forge_external_commit(carol, joiner, extra=[Proposal(Remove(DAVE))])
        reject(carol, message, ProposalError, "blank or absent")
        assert_recovers(groups, carol)

    def test_path_missing(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        message = forge_external_commit(carol, joiner, path=False)
        reject(carol, message, PathRequiredError)
        assert_recovers(groups, carol)

    def test_joiner_leaf_source_not_commit(
        self, groups: list[Group], joiner: SigningIdentity
    ) -> None:
        carol = groups[CAROL]
        new_leaf = carol.tree.n_leaves  # the joiner takes the first blank leaf: a new one

        def tweak(path: UpdatePath) -> UpdatePath:
            leaf = replace(path.leaf_node, leaf_node_source=LeafNodeSource.update, parent_hash=None)
            signed = resign_leaf(carol, leaf, joiner.signature_private_key, new_leaf)
            return replace(path, leaf_node=signed)

        message = forge_external_commit(carol, joiner, tweak_path=tweak)
        reject(carol, message, CommitError, "invalid committer leaf: leaf_node_source")
        assert_recovers(groups, carol)

    def test_not_signed_by_the_path_leaf(
        self, groups: list[Group], joiner: SigningIdentity
    ) -> None:
        carol = groups[CAROL]
        other = SigningIdentity.generate(b"impostor")
        message = forge_external_commit(
            carol, joiner, signature_private_key=other.signature_private_key
        )
        reject(carol, message, SignatureError, "does not verify")
        assert_recovers(groups, carol)

    def test_kem_output_unusable(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        message = forge_external_commit(carol, joiner, kem_output=b"\x05" * 7)
        reject(carol, message, ExternalCommitError, "external init secret", member_only=True)
        assert_recovers(groups, carol)

    def test_joiner_already_a_member(self, groups: list[Group]) -> None:
        """A member's identity joins again without removing its old leaf: two leaves would
        share a signature key (§7.3). ``join_external`` refuses to build it (the sender runs
        the receivers' rules); forged, every receiver refuses it."""
        alice, carol, dave = groups[ALICE], groups[CAROL], groups[DAVE]
        with pytest.raises(CommitError, match="signature key belongs to another member"):
            join_external(alice.group_info(), dave.identity)
        message = forge_external_commit(carol, dave.identity)
        reject(carol, message, CommitError, "signature key belongs to another member")
        assert_recovers(groups, carol)

    def test_psk_not_available(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        pid = PreSharedKeyID.external(PSK_ID, os.urandom(32))
        message = forge_external_commit(
            carol, joiner, extra=[Proposal(PreSharedKey(pid))], external_psks={PSK_ID: PSK_VALUE}
        )
        reject(carol, message, PskError, "not available", member_only=True)
        assert_recovers(groups, carol)

    def test_confirmation_tag_wrong(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        message = forge_external_commit(carol, joiner, confirmation_tag=os.urandom(32))
        reject(carol, message, ConfirmationTagError, "does not verify", member_only=True)
        assert_recovers(groups, carol)


def test_snapshot_sees_every_change(groups: list[Group]) -> None:
    """The state check is not vacuous: a cached proposal and a merged commit both change it."""
    carol, dave = groups[CAROL], groups[DAVE]
    before = snapshot(carol)
    carol.process(dave.propose_remove(BOB))
    cached = snapshot(carol)
    assert cached.pending_proposals == before.pending_proposals + 1
    commit_and_deliver(groups, groups[BOB])
    after = snapshot(carol)
    assert after.epoch == before.epoch + 1
    assert after.epoch_authenticator != before.epoch_authenticator
    assert after.exported != before.exported and after.tree_hash != before.tree_hash
