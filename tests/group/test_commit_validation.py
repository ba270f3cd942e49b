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
    Ref,
    assert_recovers,
    commit_and_deliver,
    deliver,
    forge_commit,
    forge_external_commit,
    forge_key_package,
    forge_proposal,
    make_group,
    ref_of,
    reframe,
    reject,
    resign_leaf,
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
    RequiredCapabilitiesError,
    SenderError,
    SignatureError,
    UpdatePathError,
)
from mlspy.group import (
    Group,
    GroupConfig,
    SigningIdentity,
    StagedCommit,
    create_key_package,
    default_capabilities,
    join_external,
)
from mlspy.messages import (
    Add,
    Credential,
    CustomProposal,
    Extension,
    ExternalInit,
    FramedContent,
    GroupContextExtensions,
    HPKECiphertext,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    ProtocolVersion,
    ReInit,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Sender,
    Update,
    UpdatePath,
    WireFormat,
)
from mlspy.protection import protect_public_message

ALICE, BOB, CAROL, DAVE = 0, 1, 2, 3
CUSTOM_TYPE = 0xF0F0
CUSTOM_CREDENTIAL = 0xF0F1
PSK_ID = b"shared psk"
PSK_VALUE = b"\x42" * 32


@pytest.fixture
def groups() -> list[Group]:
    return make_group(4)


def _new_kp(name: bytes = b"newcomer") -> Proposal:
    return Proposal(Add(create_key_package(SigningIdentity.generate(name)).key_package))


def _share_psk(groups: list[Group]) -> None:
    for g in groups:
        g.add_external_psk(PSK_ID, PSK_VALUE)


def _psk(group: Group, nonce: bytes | None = None) -> Proposal:
    pid = PreSharedKeyID.external(
        PSK_ID, os.urandom(group.cipher_suite.nh) if nonce is None else nonce
    )
    return Proposal(PreSharedKey(pid))


def _propose(groups: list[Group], message: bytes, proposer: Group) -> Ref:
    """Deliver a proposal to every other member (each caches it) and return its reference."""
    deliver(groups, message, sender=proposer)
    return ref_of(proposer, message)


def _reinit(group: Group, version: int = ProtocolVersion.mls10) -> Proposal:
    return Proposal(ReInit(os.urandom(32), version, group.context.cipher_suite, ()))


def _leaf_of(group: Group, leaf: int) -> LeafNode:
    node = group.tree.leaf(leaf)  # type: ignore[arg-type]
    assert node is not None
    return node


# --- §12.2: proposal list validation, regular commits ---------------------------------------------


class TestProposalListRegularCommit:
    """RFC 9420 §12.2 "Proposal List Validation" for a regular (member) Commit: a list with a
    committer's Update, a Remove of the committer, several Updates/Removes for one leaf, two
    Adds of one client, an Add of a member, a repeated PSK, two GroupContextExtensions, a
    ReInit with company, an ExternalInit, an unsupported proposal type, or one that leaves an
    invalid tree is rejected."""

    @pytest.mark.parametrize("by_reference", [True, False], ids=["by_ref", "by_value"])
    def test_update_from_committer(self, groups: list[Group], by_reference: bool) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        if by_reference:
            item: Proposal | Ref = _propose(groups, bob.propose_update(), bob)
        else:
            item = Proposal(Update(update_leaf(bob)))
        message = forge_commit(bob, [item])
        reject(carol, message, ProposalListError, "committer's own update")
        assert_recovers(groups, carol)

    def test_remove_of_committer(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [Proposal(Remove(BOB))])
        reject(carol, message, ProposalListError, "remove the committer")
        assert_recovers(groups, carol)

    def test_two_removes_of_one_leaf(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [Proposal(Remove(DAVE)), Proposal(Remove(DAVE))])
        reject(carol, message, ProposalListError, "several updates/removes")
        assert_recovers(groups, carol)

    def test_update_and_remove_of_one_leaf(self, groups: list[Group]) -> None:
        bob, carol, dave = groups[BOB], groups[CAROL], groups[DAVE]
        update = _propose(groups, dave.propose_update(), dave)
        message = forge_commit(bob, [update, Proposal(Remove(DAVE))])
        reject(carol, message, ProposalListError, "several updates/removes")
        assert_recovers(groups, carol)

    def test_two_updates_of_one_leaf(self, groups: list[Group]) -> None:
        bob, carol, dave = groups[BOB], groups[CAROL], groups[DAVE]
        first = _propose(groups, dave.propose_update(), dave)
        second = _propose(groups, dave.propose_update(), dave)
        message = forge_commit(bob, [first, second])
        reject(carol, message, ProposalListError, "several updates/removes")
        assert_recovers(groups, carol)

    def test_two_adds_of_one_client(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        newcomer = SigningIdentity.generate(b"twice")
        kps = [create_key_package(newcomer).key_package for _ in range(2)]
        message = forge_commit(bob, [Proposal(Add(kp)) for kp in kps])
        reject(carol, message, ProposalListError, "two adds")
        assert_recovers(groups, carol)

    def test_add_of_a_current_member(self, groups: list[Group]) -> None:
        bob, carol, dave = groups[BOB], groups[CAROL], groups[DAVE]
        again = create_key_package(dave.identity).key_package
        message = forge_commit(bob, [Proposal(Add(again))])
        reject(carol, message, ProposalListError, "already in the group")
        assert_recovers(groups, carol)

    def test_add_of_a_member_removed_by_the_same_commit_is_valid(self, groups: list[Group]) -> None:
        """The exception of the rule above: a Remove of the matching client makes it valid."""
        bob, carol, dave = groups[BOB], groups[CAROL], groups[DAVE]
        again = create_key_package(dave.identity).key_package
        message = forge_commit(bob, [Proposal(Remove(DAVE)), Proposal(Add(again))])
        staged = carol.process(message)
        assert isinstance(staged, StagedCommit)
        assert staged.removed == [DAVE] and [i for i, _ in staged.added] == [DAVE]

    def test_add_whose_encryption_key_is_in_the_tree(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        taken = _leaf_of(carol, CAROL).encryption_key
        kp = forge_key_package(
            SigningIdentity.generate(b"copycat"), leaf_changes={"encryption_key": taken}
        )
        message = forge_commit(bob, [Proposal(Add(kp))])
        reject(carol, message, ProposalListError, "encryption key")
        assert_recovers(groups, carol)

    def test_same_psk_twice(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        _share_psk(groups)
        psk = _psk(bob)
        message = forge_commit(bob, [psk, psk], psks={PSK_ID: PSK_VALUE})
        reject(carol, message, ProposalListError, "same PSK")
        assert_recovers(groups, carol)

    def test_two_group_context_extensions(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        gce = Proposal(GroupContextExtensions(()))
        message = forge_commit(bob, [gce, gce])
        reject(carol, message, ProposalListError, "more than one group_context_extensions")
        assert_recovers(groups, carol)

    @pytest.mark.parametrize("other", ["remove", "add", "reinit"])
    def test_reinit_with_another_proposal(self, groups: list[Group], other: str) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        company = {
            "remove": Proposal(Remove(DAVE)),
            "add": _new_kp(),
            "reinit": _reinit(bob),
        }[other]
        message = forge_commit(bob, [_reinit(bob), company])
        reject(carol, message, ProposalListError, "only proposal")
        assert_recovers(groups, carol)

    def test_external_init_in_regular_commit(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [Proposal(ExternalInit(os.urandom(32)))])
        reject(carol, message, ProposalListError, "external_init")
        assert_recovers(groups, carol)

    def test_proposal_type_unsupported_by_a_member(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [Proposal(CustomProposal(CUSTOM_TYPE, b"hello"))])
        reject(carol, message, ProposalListError, "does not support proposal type")
        assert_recovers(groups, carol)

    def test_proposal_type_unsupported_only_by_a_removed_member_is_valid(self) -> None:
        """Members removed by the commit need not support a custom proposal type (§12.2)."""
        caps = default_capabilities(proposals=(CUSTOM_TYPE,))
        ids = [SigningIdentity.generate(f"m{i}".encode(), capabilities=caps) for i in range(3)]
        ids.append(SigningIdentity.generate(b"m3"))  # dave lacks the custom type
        groups = make_group(identities=ids)
        bob, carol = groups[BOB], groups[CAROL]
        custom = Proposal(CustomProposal(CUSTOM_TYPE, b"hello"))
        reject(carol, forge_commit(bob, [custom]), ProposalListError, "member 3")
        staged = carol.process(forge_commit(bob, [custom, Proposal(Remove(DAVE))]))
        assert isinstance(staged, StagedCommit) and staged.removed == [DAVE]

    def test_gce_requiring_a_capability_no_member_has(self, groups: list[Group]) -> None:
        """After the commit every leaf must support the group's required_capabilities
        (§12.2 last rule, §7.3, §11.1)."""
        bob, carol = groups[BOB], groups[CAROL]
        required = RequiredCapabilities((CUSTOM_TYPE,), (), ()).to_extension()
        message = forge_commit(bob, [Proposal(GroupContextExtensions((required,)))])
        reject(carol, message, RequiredCapabilitiesError, "lacks required capabilities")
        assert_recovers(groups, carol)

    def test_add_with_credential_type_members_do_not_support(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        ident = SigningIdentity.generate(
            b"exotic",
            capabilities=default_capabilities(credentials=(1, 2, CUSTOM_CREDENTIAL)),
        )
        ident = replace(ident, credential=Credential.custom(CUSTOM_CREDENTIAL, b"exotic"))
        kp = create_key_package(ident).key_package
        message = forge_commit(bob, [Proposal(Add(kp))])
        reject(carol, message, CredentialTypeError, "credential type")
        assert_recovers(groups, carol)

    def test_add_lacking_a_credential_type_in_use(self) -> None:
        caps = default_capabilities(credentials=(1, 2, CUSTOM_CREDENTIAL))
        ids = [SigningIdentity.generate(f"m{i}".encode(), capabilities=caps) for i in range(4)]
        ids[DAVE] = replace(ids[DAVE], credential=Credential.custom(CUSTOM_CREDENTIAL, b"m3"))
        groups = make_group(identities=ids)
        bob, carol = groups[BOB], groups[CAROL]
        plain = SigningIdentity.generate(b"plain", capabilities=default_capabilities())
        message = forge_commit(bob, [Proposal(Add(create_key_package(plain).key_package))])
        reject(carol, message, CredentialTypeError, "credential type")
        assert_recovers(groups, carol)


# --- §12.1: individual proposal validity ----------------------------------------------------------


def _bad_key_package(case: str) -> KeyPackage:
    """A KeyPackage that breaks one rule of §10.1 / §7.3 (so an Add of it breaks §12.1.1)."""
    ident = SigningIdentity.generate(b"candidate-" + case.encode())
    if case == "cipher_suite":
        return forge_key_package(ident, cipher_suite=2)
    if case == "version":
        return forge_key_package(ident, version=2)
    if case == "init_key_equals_encryption_key":
        return forge_key_package(ident, init_key=lambda kp: kp.leaf_node.encryption_key)
    if case == "init_key_not_a_key":
        return forge_key_package(ident, init_key=b"\x01\x02\x03")
    if case == "key_package_signature":
        return replace(create_key_package(ident).key_package, signature=os.urandom(64))
    if case == "leaf_signature":
        return forge_key_package(ident, leaf_changes={"signature": os.urandom(64)}, sign_leaf=False)
    if case == "leaf_node_source":
        changes = {"leaf_node_source": LeafNodeSource.update, "lifetime": None}
        return forge_key_package(ident, leaf_changes=changes)
    if case == "expired":
        return forge_key_package(ident, leaf_changes={"lifetime": Lifetime(0, 1)})
    if case == "unsupported_leaf_extension":
        extensions = (Extension(CUSTOM_TYPE, b""),)
        return forge_key_package(ident, leaf_changes={"extensions": extensions})
    raise AssertionError(case)


KP_CASES = {
    "cipher_suite": "cipher suite",
    "version": "version",
    "init_key_equals_encryption_key": "init_key equals",
    "init_key_not_a_key": "init_key is not a valid",
    "key_package_signature": "KeyPackage signature",
    "leaf_signature": "signature on LeafNode",
    "leaf_node_source": "leaf_node_source",
    "expired": "outside",
    "unsupported_leaf_extension": "extension type",
}


class TestAddProposalValidity:
    """RFC 9420 §12.1.1: an Add is invalid if its KeyPackage is invalid (§10.1: cipher suite
    and version of the group, leaf node valid for a KeyPackage per §7.3, KeyPackage signature,
    init_key distinct from the leaf's encryption_key)."""

    @pytest.mark.parametrize("case", list(KP_CASES))
    def test_add_by_value_in_commit(self, groups: list[Group], case: str) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [Proposal(Add(_bad_key_package(case)))])
        reject(carol, message, ProposalError, f"invalid KeyPackage in add: .*{KP_CASES[case]}")
        assert_recovers(groups, carol)

    @pytest.mark.parametrize("case", ["cipher_suite", "key_package_signature", "expired"])
    def test_add_proposal_message(self, groups: list[Group], case: str) -> None:
        """An invalid Add is rejected when it arrives as a proposal, before any commit."""
        dave, carol = groups[DAVE], groups[CAROL]
        message = forge_proposal(dave, Proposal(Add(_bad_key_package(case))))
        reject(carol, message, ProposalError, KP_CASES[case])
        assert_recovers(groups, carol)


def _update_case(name: str, dave: Group, carol: Group) -> LeafNode:
    if name == "leaf_node_source":
        return update_leaf(
            dave,
            leaf_node_source=LeafNodeSource.key_package,
            lifetime=Lifetime(0, 2**63),
        )
    if name == "signed_for_another_leaf":
        return update_leaf(dave, leaf_index=ALICE)
    if name == "same_encryption_key":
        return update_leaf(dave, encryption_key=_leaf_of(dave, DAVE).encryption_key)
    if name == "encryption_key_of_another_member":
        return update_leaf(dave, encryption_key=_leaf_of(dave, CAROL).encryption_key)
    if name == "signature_key_of_another_member":
        return update_leaf(
            dave,
            signature_key=carol.identity.signature_key,
            signature_private_key=carol.identity.signature_private_key,
        )
    if name == "unsupported_leaf_extension":
        return update_leaf(dave, extensions=(Extension(CUSTOM_TYPE, b""),))
    raise AssertionError(name)


UPDATE_CASES = {
    "leaf_node_source": "leaf_node_source",
    "signed_for_another_leaf": "signature on leaf",
    "same_encryption_key": "must change the encryption key",
    "encryption_key_of_another_member": "encryption key is already in the tree",
    "signature_key_of_another_member": "signature key belongs to another member",
    "unsupported_leaf_extension": "extension type",
}


class TestUpdateProposalValidity:
    """RFC 9420 §12.1.2 and §7.3: an Update's LeafNode must be valid for an update
    (leaf_node_source ``update``, signed for the sender's leaf and group, supported extensions)
    with a new encryption key and keys unique in the group. Checked when the proposal arrives."""

    @pytest.mark.parametrize("case", list(UPDATE_CASES))
    def test_update_proposal(self, groups: list[Group], case: str) -> None:
        dave, carol = groups[DAVE], groups[CAROL]
        leaf = _update_case(case, dave, carol)
        message = forge_proposal(dave, Proposal(Update(leaf)))
        reject(carol, message, ProposalError, UPDATE_CASES[case])
        assert_recovers(groups, carol)

    def test_update_to_a_credential_type_members_do_not_support(self, groups: list[Group]) -> None:
        """§7.3: the new credential type must be supported by every member."""
        dave, carol = groups[DAVE], groups[CAROL]
        leaf = update_leaf(
            dave,
            credential=Credential.custom(CUSTOM_CREDENTIAL, b"dave"),
            capabilities=default_capabilities(credentials=(1, 2, CUSTOM_CREDENTIAL)),
        )
        reject(carol, forge_proposal(dave, Proposal(Update(leaf))), CredentialTypeError)
        assert_recovers(groups, carol)

    def test_update_valid_alone_but_not_with_an_earlier_one(self, groups: list[Group]) -> None:
        """Two members' Updates, each valid on arrival, that carry the same encryption key:
        the second is invalid once the first is applied (§7.3 uniqueness)."""
        bob, carol, dave, alice = groups[BOB], groups[CAROL], groups[DAVE], groups[ALICE]
        first_leaf = update_leaf(dave)
        first = _propose(groups, forge_proposal(dave, Proposal(Update(first_leaf))), dave)
        clone = update_leaf(alice, encryption_key=first_leaf.encryption_key)
        second = _propose(groups, forge_proposal(alice, Proposal(Update(clone))), alice)
        message = forge_commit(bob, [first, second])
        reject(carol, message, ProposalError, "encryption key is already in the tree")
        assert_recovers(groups, carol)


class TestRemovePskReinitValidity:
    """RFC 9420 §12.1.3 (a Remove must name a non-blank leaf), §12.1.4 (a PreSharedKey's
    psk_nonce is KDF.Nh bytes; a resumption PSK with usage reinit or branch only in a
    reinitialization or branch), §12.1.5 (a ReInit may not lower the version), §12.1.7 (a
    GroupContextExtensions has no duplicate extension types)."""

    def test_remove_of_blank_leaf(self, groups: list[Group]) -> None:
        alice, bob, carol = groups[ALICE], groups[BOB], groups[CAROL]
        commit_and_deliver(groups, alice, [Proposal(Remove(DAVE))])
        assert not groups[DAVE].active and carol.tree.n_leaves == 4
        message = forge_commit(bob, [Proposal(Remove(DAVE))])
        reject(carol, message, ProposalError, "blank or absent leaf 3")
        assert_recovers(groups, carol)

    def test_remove_of_leaf_outside_the_tree(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [Proposal(Remove(17))])
        reject(carol, message, ProposalError, "blank or absent leaf 17")
        assert_recovers(groups, carol)

    def test_remove_proposal_of_blank_leaf(self, groups: list[Group]) -> None:
        alice, carol, dave = groups[ALICE], groups[CAROL], groups[DAVE]
        commit_and_deliver(groups, alice, [Proposal(Remove(DAVE))])
        message = forge_proposal(alice, Proposal(Remove(DAVE)))
        reject(carol, message, ProposalError, "blank or absent leaf 3")
        assert not dave.active
        assert_recovers(groups, carol)

    @pytest.mark.parametrize(("proposer", "target"), [(DAVE, ALICE), (ALICE, BOB)])
    def test_remove_proposal_of_any_member_is_valid(
        self, groups: list[Group], proposer: int, target: int
    ) -> None:
        """§12.1.3: a Remove is valid when it names a non-blank leaf, whoever will commit it.
        (Regression: receipt-time checks once used the first other leaf as a stand-in
        committer and rejected a Remove of it as "a commit may not remove the committer".)"""
        carol = groups[CAROL]
        event = carol.process(groups[proposer].propose_remove(target))
        assert getattr(event, "proposal", None) == Proposal(Remove(target))

    @pytest.mark.parametrize("length", [0, 16, 33])
    def test_psk_nonce_length(self, groups: list[Group], length: int) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        _share_psk(groups)
        message = forge_commit(bob, [_psk(bob, os.urandom(length))], psks={PSK_ID: PSK_VALUE})
        reject(carol, message, ProposalError, "psk_nonce")
        assert_recovers(groups, carol)

    @pytest.mark.parametrize("usage", [ResumptionPSKUsage.reinit, ResumptionPSKUsage.branch])
    def test_resumption_psk_with_reinit_or_branch_usage(
        self, groups: list[Group], usage: ResumptionPSKUsage
    ) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        pid = PreSharedKeyID.resumption(usage, bob.group_id, bob.epoch, os.urandom(32))
        message = forge_commit(bob, [Proposal(PreSharedKey(pid))])
        reject(carol, message, PskError, "reinit or branch")
        assert_recovers(groups, carol)

    def test_reinit_to_an_older_version(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [_reinit(bob, version=0)])
        reject(carol, message, ProposalError, "older protocol version")
        assert_recovers(groups, carol)

    def test_gce_with_duplicate_extension_types(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        ext = Extension(CUSTOM_TYPE, b"")
        message = forge_commit(bob, [Proposal(GroupContextExtensions((ext, ext)))])
        reject(carol, message, ProposalError, "duplicate extension types")
        assert_recovers(groups, carol)


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
        reject(carol, out.commit, CommitError, "our own leaf")
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
        reject(carol, message, MembershipTagError, "does not verify")
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
        epoch = bob._epoch
        remac = protect_public_message(bob._cs, edited, epoch.context, epoch.secrets.membership_key)
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
        update = _propose(groups, dave.propose_update(), dave)
        message = forge_commit(bob, [update, _new_kp(), Proposal(Remove(ALICE))])
        staged = carol.process(message)
        assert isinstance(staged, StagedCommit)
        assert staged.updated == [DAVE] and staged.removed == [ALICE]

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
        message = forge_commit(bob, [_psk(bob)], psks={PSK_ID: PSK_VALUE})
        reject(carol, message, PskError, "not available")
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
            proposals = [_propose(groups, dave.propose_update(), dave)]
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
        _share_psk(groups)
        for proposals in ([_new_kp()], [_psk(bob)], [_reinit(bob)]):
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
        reject(carol, message, UpdatePathError, "cannot decrypt")
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
        tweak = _with_leaf(bob, encryption_key=_leaf_of(bob, BOB).encryption_key)
        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, UpdatePathError, "new encryption key")
        assert_recovers(groups, carol)

    def test_path_key_already_in_the_tree(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        taken = _leaf_of(carol, CAROL).encryption_key

        def tweak(path: UpdatePath) -> UpdatePath:
            node = replace(path.nodes[0], encryption_key=taken)
            return replace(path, nodes=(node, *path.nodes[1:]))

        message = forge_commit(bob, tweak_path=tweak)
        reject(carol, message, UpdatePathError, "already used")
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
        reject(carol, message, ConfirmationTagError, "does not verify")
        assert_recovers(groups, carol)

    @pytest.mark.parametrize(
        "tag", [b"", b"\x00" * 32, b"\x00" * 64], ids=["empty", "zero", "long"]
    )
    def test_confirmation_tag_forged(self, groups: list[Group], tag: bytes) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_commit(bob, [Proposal(Remove(DAVE))], confirmation_tag=tag)
        reject(carol, message, ConfirmationTagError, "does not verify")
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
        """Control for the forging helper (a join and a resync)."""
        carol = groups[CAROL]
        assert isinstance(carol.process(forge_external_commit(carol, joiner)), StagedCommit)
        resync = forge_external_commit(carol, joiner, extra=[Proposal(Remove(DAVE))])
        staged = carol.process(resync)
        assert isinstance(staged, StagedCommit) and staged.removed == [DAVE]

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
        ref = _propose(groups, alice.propose_remove(DAVE), alice)
        message = forge_external_commit(carol, joiner, extra=[ref])
        reject(carol, message, ProposalListError, "by reference")
        assert_recovers(groups, carol)

    @pytest.mark.parametrize("kind", ["add", "group_context_extensions", "reinit"])
    def test_forbidden_proposal_type(
        self, groups: list[Group], joiner: SigningIdentity, kind: str
    ) -> None:
        carol = groups[CAROL]
        extra = {
            "add": _new_kp(),
            "group_context_extensions": Proposal(GroupContextExtensions(())),
            "reinit": _reinit(carol),
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
        reject(carol, message, ExternalCommitError, "external init secret")
        assert_recovers(groups, carol)

    def test_joiner_already_a_member(self, groups: list[Group]) -> None:
        """A member's identity joins again without removing its old leaf: two leaves would
        share a signature key (§7.3). Built with the public ``join_external``."""
        alice, carol, dave = groups[ALICE], groups[CAROL], groups[DAVE]
        _, message = join_external(alice.group_info(), dave.identity)
        reject(carol, message, CommitError, "signature key belongs to another member")
        assert_recovers(groups, carol)

    def test_psk_not_available(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        pid = PreSharedKeyID.external(PSK_ID, os.urandom(32))
        message = forge_external_commit(
            carol, joiner, extra=[Proposal(PreSharedKey(pid))], external_psks={PSK_ID: PSK_VALUE}
        )
        reject(carol, message, PskError, "not available")
        assert_recovers(groups, carol)

    def test_confirmation_tag_wrong(self, groups: list[Group], joiner: SigningIdentity) -> None:
        carol = groups[CAROL]
        message = forge_external_commit(carol, joiner, confirmation_tag=os.urandom(32))
        reject(carol, message, ConfirmationTagError, "does not verify")
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
