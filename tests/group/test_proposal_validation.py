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
from dataclasses import replace

import pytest

from group_helpers import (
    PSK_ID,
    PSK_VALUE,
    Ref,
    assert_recovers,
    commit_and_deliver,
    forge_commit,
    forge_key_package,
    forge_proposal,
    leaf_of,
    make_group,
    new_kp,
    propose_to_all,
    psk_proposal,
    reinit_proposal,
    reject,
    share_psk,
    update_leaf,
)
from mlspy.errors import (
    CredentialTypeError,
    KeyPackageError,
    ProposalError,
    ProposalListError,
    PskError,
    RequiredCapabilitiesError,
)
from mlspy.group import (
    Group,
    SigningIdentity,
    StagedCommit,
    create_key_package,
    default_capabilities,
)
from mlspy.messages import (
    Add,
    Credential,
    CustomProposal,
    Extension,
    ExternalInit,
    GroupContextExtensions,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Update,
)

ALICE, BOB, CAROL, DAVE = 0, 1, 2, 3
CUSTOM_TYPE = 0xF0F0
CUSTOM_CREDENTIAL = 0xF0F1


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
            item: Proposal | Ref = propose_to_all(groups, bob.propose_update(), bob)
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
        update = propose_to_all(groups, dave.propose_update(), dave)
        message = forge_commit(bob, [update, Proposal(Remove(DAVE))])
        reject(carol, message, ProposalListError, "several updates/removes")
        assert_recovers(groups, carol)

    def test_two_updates_of_one_leaf(self, groups: list[Group]) -> None:
        bob, carol, dave = groups[BOB], groups[CAROL], groups[DAVE]
        first = propose_to_all(groups, dave.propose_update(), dave)
        second = propose_to_all(groups, dave.propose_update(), dave)
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
        assert staged.removed_leaves == [DAVE] and [m.leaf_index for m in staged.added] == [DAVE]

    def test_add_whose_encryption_key_is_in_the_tree(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        taken = leaf_of(carol, CAROL).encryption_key
        kp = forge_key_package(
            SigningIdentity.generate(b"copycat"), leaf_changes={"encryption_key": taken}
        )
        message = forge_commit(bob, [Proposal(Add(kp))])
        reject(carol, message, ProposalListError, "encryption key")
        assert_recovers(groups, carol)

    def test_same_psk_twice(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        share_psk(groups)
        psk = psk_proposal(bob)
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
            "add": new_kp(),
            "reinit": reinit_proposal(bob),
        }[other]
        message = forge_commit(bob, [reinit_proposal(bob), company])
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
        assert isinstance(staged, StagedCommit) and staged.removed_leaves == [DAVE]

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
        err = reject(
            carol, message, ProposalError, f"invalid KeyPackage in add: .*{KP_CASES[case]}"
        )
        # The specific §10.1 / §7.3 rule, and the KeyPackage's error as the cause.
        assert type(err.__cause__) is KeyPackageError and err.rule == err.__cause__.rule
        assert_recovers(groups, carol)

    @pytest.mark.parametrize("case", ["cipher_suite", "key_package_signature", "expired"])
    def test_add_proposal_message(self, groups: list[Group], case: str) -> None:
        """An invalid Add is rejected when it arrives as a proposal, before any commit."""
        dave, carol = groups[DAVE], groups[CAROL]
        message = forge_proposal(dave, Proposal(Add(_bad_key_package(case))))
        err = reject(carol, message, ProposalError, KP_CASES[case])
        # Invalid on receipt (KP-07), for the KeyPackage rule its cause names.
        assert err.rule == "KP-07" and type(err.__cause__) is KeyPackageError
        assert err.__cause__.rule is not None
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
        return update_leaf(dave, encryption_key=leaf_of(dave, DAVE).encryption_key)
    if name == "encryption_key_of_another_member":
        return update_leaf(dave, encryption_key=leaf_of(dave, CAROL).encryption_key)
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
        first = propose_to_all(groups, forge_proposal(dave, Proposal(Update(first_leaf))), dave)
        clone = update_leaf(alice, encryption_key=first_leaf.encryption_key)
        second = propose_to_all(groups, forge_proposal(alice, Proposal(Update(clone))), alice)
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
        share_psk(groups)
        message = forge_commit(
            bob, [psk_proposal(bob, os.urandom(length))], psks={PSK_ID: PSK_VALUE}
        )
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
        message = forge_commit(bob, [reinit_proposal(bob, version=0)])
        reject(carol, message, ProposalError, "older protocol version")
        assert_recovers(groups, carol)

    def test_gce_with_duplicate_extension_types(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        ext = Extension(CUSTOM_TYPE, b"")
        message = forge_commit(bob, [Proposal(GroupContextExtensions((ext, ext)))])
        reject(carol, message, ProposalError, "duplicate extension types")
        assert_recovers(groups, carol)
