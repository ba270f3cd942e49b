"""Adversarial multi-party scenarios over the in-memory hub: a member (or an outsider, or the
network) misbehaves and the group must notice.

Most attacks are built by *sabotaging one step* of the library's own commit creation with
``monkeypatch`` (the UpdatePath ciphertexts, the context that is signed, the confirmation tag):
everything else about the message is produced honestly by ``Group.commit`` — the signature, the
membership tag and the encryption all verify — so a receiver that failed to enforce the rule
under test would accept the message rather than reject it for another reason. A few messages
that ``Group.commit`` refuses to build at all are forged with :func:`forge_commit`.

Every rejection asserts the exact error class from :mod:`mlspy.errors` and that the rejecting
member's epoch, epoch authenticator, tree hash, GroupContext, exporter and pending proposals did
not change (:func:`reject`). Tests read a few ``Group`` internals (``_cs``, ``_epoch``,
``_identity``) but never write them.
"""

from __future__ import annotations

import copy
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hub import Hub, hub_with

import mlspy.group.commit_create as commit_create
from group_helpers import forge_commit as forge
from group_helpers import reject_any as reject
from group_helpers import snapshot as fingerprint
from mlspy.crypto import suite
from mlspy.errors import (
    ConfirmationTagError,
    CryptoError,
    EpochError,
    GroupInfoError,
    GroupStateError,
    MembershipTagError,
    MLSError,
    ProposalListError,
    SecretTreeError,
    SenderError,
    SignatureError,
    TreeHashError,
    UpdatePathError,
    WelcomeError,
)
from mlspy.group import (
    ApplicationMessage,
    CommitOutput,
    Group,
    KeyPackageBundle,
    ProposalReceived,
    SigningIdentity,
    StagedCommit,
    create_key_package,
    join_external,
)
from mlspy.group.key_package import KEY_PACKAGE_TBS
from mlspy.group.public_group import PublicGroup, PublicStagedCommit
from mlspy.group.state import EpochState
from mlspy.group.welcome import GROUP_INFO_TBS, WELCOME
from mlspy.messages import (
    Add,
    AuthenticatedContent,
    ContentType,
    ExternalPub,
    FramedContent,
    GroupInfo,
    GroupSecrets,
    HPKECiphertext,
    KeyPackage,
    MLSMessage,
    Proposal,
    Remove,
    Sender,
    UpdatePath,
    Welcome,
    WireFormat,
)
from mlspy.protection import authenticate, protect_private_message, protect_public_message
from mlspy.schedule.key_schedule import compute_welcome_secret, welcome_key_nonce
from mlspy.schedule.secret_tree import SecretTree
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import UPDATE_PATH_NODE, CreatedUpdatePath, sign_leaf_node

EXPORT_LABEL = b"adversarial"


# --- Checking rejections (tests/group_helpers.py: reject_any also asks the public view) ---


def accept_commit(g: Group, message: bytes) -> StagedCommit:
    staged = g.process(message)
    assert isinstance(staged, StagedCommit), staged
    g.merge_staged_commit(staged)
    return staged


def agree(*groups: Group) -> None:
    first = groups[0]
    for g in groups[1:]:
        assert g.epoch == first.epoch
        assert g.epoch_authenticator == first.epoch_authenticator
        assert g.tree.tree_hash() == first.tree.tree_hash()
        assert g.export_secret(EXPORT_LABEL, b"", 32) == first.export_secret(EXPORT_LABEL, b"", 32)


def flip(data: bytes, at: int = -1) -> bytes:
    """``data`` with one bit flipped (by default in its last byte)."""
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def everyone_talks(hub: Hub) -> None:
    """Each member commits with a path, then sends a message every other member reads."""
    for name in hub.members():
        hub.commit(name, force_path=True)
    for name in hub.members():
        assert hub.deliver(hub.send(name, b"hello from " + name.encode())) == len(hub.members()) - 1


# --- Sabotaging one step of Group.commit ------------------------------------------------------


PathSabotage = Callable[[RatchetTree, LeafIndex, CreatedUpdatePath, bytes], CreatedUpdatePath]


def sabotage_path(monkeypatch: pytest.MonkeyPatch, tweak: PathSabotage) -> None:
    """Make ``Group.commit`` post-process its UpdatePath with ``tweak(tree, leaf, created,
    provisional_context)`` *before* it signs, computes the confirmation tag and protects the
    commit: whatever the tweak does, the result is signed, confirmed and MACed honestly."""
    original = commit_create.create_update_path

    def patched(tree: RatchetTree, leaf: LeafIndex, *args: Any, **kwargs: Any) -> Any:
        created = original(tree, leaf, *args, **kwargs)
        context_for = args[3]
        return tweak(tree, leaf, created, context_for(tree.tree_hash()))

    monkeypatch.setattr(commit_create, "create_update_path", patched)


def sabotage_signed_context(monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    """Make ``Group.commit`` sign its FramedContent over a GroupContext with ``changes`` (each
    a value or a function of the real context). The confirmation tag is then computed from that
    signature and the membership tag over the real context, both honestly."""
    original = commit_create.authenticated_for

    def patched(cs: Any, epoch: EpochState, key: bytes, content: Any, wf: Any) -> Any:
        ctx = epoch.context
        values = {k: v(ctx) if callable(v) else v for k, v in changes.items()}
        return original(cs, replace(epoch, context=replace(ctx, **values)), key, content, wf)

    monkeypatch.setattr(commit_create, "authenticated_for", patched)


def sabotage_confirmation_tag(
    monkeypatch: pytest.MonkeyPatch, tag: Callable[[bytes], bytes]
) -> None:
    """Make ``Group.commit`` replace its confirmation tag by ``tag(real_tag)`` just before
    protection: the membership tag (or the encryption) then covers the wrong tag."""
    original = commit_create.protect_signed

    def patched(cs: Any, epoch: EpochState, content: AuthenticatedContent, **kw: Any) -> Any:
        auth = replace(content.auth, confirmation_tag=tag(content.auth.confirmation_tag or b""))
        return original(cs, epoch, replace(content, auth=auth), **kw)

    monkeypatch.setattr(commit_create, "protect_signed", patched)


def _secret_tree_copy(g: Group) -> SecretTree:
    """A copy of ``g``'s current secret tree (sharing the suite) to encrypt a forgery with,
    so that ``g``'s own ratchet stays where it is."""
    return copy.deepcopy(g.state.epoch.secret_tree, {id(g.cipher_suite): g.cipher_suite})


def forge_commit(sender: Group, proposals: Sequence[Proposal]) -> bytes:
    """A path-less Commit from ``sender`` carrying ``proposals`` by value, built without the
    proposal validation ``Group.commit`` would apply, with an honest signature, confirmation
    tag and membership tag / encryption in the sender's handshake wire format."""
    return forge(sender, proposals, path=False, wire_format=sender.config.handshake_wire_format)


# === 1. An UpdatePath that encrypts garbage to one copath subtree ==============================


def _corrupt_node(node: NodeIndex, how: str) -> PathSabotage:
    """Replace the ciphertexts of ``node``'s path secret (sent to the resolution of its copath
    child) by undecryptable bytes or by an honest encryption of a *wrong* path secret."""

    def tweak(
        tree: RatchetTree, leaf: LeafIndex, created: CreatedUpdatePath, context: bytes
    ) -> CreatedUpdatePath:
        cs = tree.cipher_suite
        fdp = tree.filtered_direct_path(leaf)
        k = fdp.index(node)
        path_node = created.update_path.nodes[k]
        if how == "undecryptable":
            cts = tuple(
                HPKECiphertext(ct.kem_output, flip(ct.ciphertext, 0))
                for ct in path_node.encrypted_path_secret
            )
        else:
            wrong = os.urandom(cs.nh)
            cts = []
            for r in tree.resolution(tree.copath_child(node, leaf)):
                key = tree.encryption_key(r)
                assert key is not None
                kem, ct = cs.encrypt_with_label(key, UPDATE_PATH_NODE, context, wrong)
                cts.append(HPKECiphertext(kem, ct))
            cts = tuple(cts)
        assert len(cts) == len(path_node.encrypted_path_secret) == 2  # carol and dave
        nodes = list(created.update_path.nodes)
        nodes[k] = replace(path_node, encrypted_path_secret=cts)
        return replace(created, update_path=UpdatePath(created.update_path.leaf_node, tuple(nodes)))

    return tweak


@pytest.mark.parametrize("cs", [1, 2, 3, 4, 5, 6, 7], ids=lambda s: f"suite{s}")
@pytest.mark.parametrize(
    ("how", "match"),
    [
        pytest.param("undecryptable", "cannot decrypt the path secret", id="undecryptable"),
        pytest.param(
            "wrong_path_secret",
            "derived public key of node 3 does not match",
            id="wrong_path_secret",
        ),
    ],
)
def test_update_path_garbage_to_one_subtree_forks_the_group(
    cs: int, wire: WireFormat, how: str, match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice commits with an UpdatePath whose path secret for the root (node 3) — encrypted
    to node 3's copath subtree {carol, dave} — is garbage, while bob's ciphertext (node 1) is
    honest. The commit is signed, confirmed and MACed correctly, so nothing outside the
    affected subtree can tell.

    What happens: the group **forks**. Bob derives the right path secrets, commit secret and
    confirmation tag, so he accepts and moves to epoch n+1 with alice. Carol and dave raise
    ``UpdatePathError`` from ``process`` — "cannot decrypt the path secret addressed to us"
    for undecryptable bytes, "derived public key ... does not match" for a well-formed
    encryption of a wrong secret — and stay in epoch n, their state untouched. A Delivery
    Service following the group (the public view) accepts the commit too: it cannot decrypt
    path secrets, so it sides with alice and bob.

    What the application sees: on the affected members, an ``MLSError`` from ``process`` on a
    commit every other member took, then ``EpochError`` on every later handshake and
    application message of the group. On the unaffected side, the affected members' messages
    arrive stamped with an epoch below the current one (``ApplicationMessage.epoch``) while the
    past epoch is retained, and their commits fail with ``EpochError``.

    Recovery (what the SDK does on state loss): the affected member re-joins by external commit
    from a current GroupInfo, removing its own old leaf (``remove_prior``); once every affected
    member has done so the group has converged again.
    """
    hub = hub_with(["alice", "bob", "carol", "dave"], wire, cs)
    alice, bob, carol, dave = (hub.group(n) for n in ("alice", "bob", "carol", "dave"))
    n = alice.epoch
    assert alice.tree.filtered_direct_path(LeafIndex(0)) == [NodeIndex(1), NodeIndex(3)]
    with monkeypatch.context() as m:
        sabotage_path(m, _corrupt_node(NodeIndex(3), how))
        out = alice.commit(force_path=True)
    if hub.public is not None:
        assert isinstance(hub.public.process(out.commit), PublicStagedCommit)
        hub._public_process(out.commit)  # the DS's view follows alice and bob
    assert accept_commit(alice, out.commit).own
    accept_commit(bob, out.commit)
    for victim in (carol, dave):
        reject(victim, out.commit, UpdatePathError, match, member_only=True)  # path secrets

    # The fork: two halves, each internally consistent.
    agree(alice, bob)
    agree(carol, dave)
    assert alice.epoch == n + 1 and carol.epoch == n
    assert alice.epoch_authenticator != carol.epoch_authenticator
    # The affected side cannot read the new epoch...
    reject(carol, alice.encrypt_application(b"can you read this?"), EpochError)
    # ...and what it sends lands in the unaffected side's past epoch, visibly stale.
    late = bob.process(carol.encrypt_application(b"hello?"))
    assert isinstance(late, ApplicationMessage)
    assert (late.data, late.epoch) == (b"hello?", n) and bob.epoch == n + 1
    stale = dave.commit(force_path=True)
    reject(alice, stale.commit, EpochError)
    dave.clear_pending_commit()

    # Recovery: carol re-joins by external commit from bob's GroupInfo; dave is still behind.
    carol_new, ext = join_external(
        bob.group_info(), hub.client("carol").identity, remove_prior=2, config=hub.config
    )
    hub._public_process(ext)
    for g in (alice, bob):
        assert accept_commit(g, ext).removed_leaves == [LeafIndex(2)]
    reject(dave, ext, EpochError)
    carol_new.merge_pending_commit()
    hub.clients["carol"].group = carol_new
    dave_new, ext = join_external(
        alice.group_info(), hub.client("dave").identity, remove_prior=3, config=hub.config
    )
    hub._public_process(ext)
    for g in (alice, bob, carol_new):
        accept_commit(g, ext)
    dave_new.merge_pending_commit()
    hub.clients["dave"].group = dave_new
    assert (hub.leaf("carol"), hub.leaf("dave")) == (2, 3)  # the leftmost blank leaves
    hub.check()  # converged: one epoch, one authenticator, one tree (and the DS's view agrees)
    everyone_talks(hub)


# === 2. Wrong confirmation tag; signature over another GroupContext ==========================


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param(lambda t: flip(t), id="flipped"),
        pytest.param(lambda t: b"", id="empty"),
        pytest.param(lambda t: os.urandom(len(t)), id="random"),
    ],
)
def test_commit_with_a_wrong_confirmation_tag(
    wire: WireFormat, tag: Callable[[bytes], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature and membership tag verify, the path decrypts, but the confirmation tag
    is not the one the new epoch's confirmation key gives: ``ConfirmationTagError``, nothing
    changes. The Delivery Service's public view cannot check the tag (it has no epoch
    secrets) and would accept the commit: checking it is the members' job."""
    hub = hub_with(["alice", "bob", "carol"], wire)
    alice = hub.group("alice")
    with monkeypatch.context() as m:
        sabotage_confirmation_tag(m, tag)
        out = alice.commit(force_path=True)
    for name in ("bob", "carol"):
        reject(
            hub.group(name), out.commit, ConfirmationTagError, "confirmation tag", member_only=True
        )
    if hub.public is not None:
        assert isinstance(hub.public.process(out.commit), PublicStagedCommit)
    alice.clear_pending_commit()
    hub.commit("alice", force_path=True)  # the honest commit still works for everyone
    everyone_talks(hub)


def test_commit_with_the_previous_epochs_confirmation_tag(
    wire: WireFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tag that *was* valid — the current epoch's — is not valid for the next one."""
    hub = hub_with(["alice", "bob"], wire)
    alice = hub.group("alice")
    with monkeypatch.context() as m:
        sabotage_confirmation_tag(m, lambda _: alice.state.epoch.confirmation_tag)
        out = alice.commit()
    reject(hub.group("bob"), out.commit, ConfirmationTagError, member_only=True)
    alice.clear_pending_commit()
    hub.commit("alice")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"epoch": lambda c: c.epoch + 1}, id="next_epoch"),
        pytest.param({"epoch": lambda c: c.epoch - 1}, id="previous_epoch"),
        pytest.param({"tree_hash": lambda c: os.urandom(len(c.tree_hash))}, id="tree_hash"),
        pytest.param(
            {"confirmed_transcript_hash": lambda c: flip(c.confirmed_transcript_hash)},
            id="transcript_hash",
        ),
        pytest.param({"group_id": b"another group"}, id="group_id"),
        pytest.param({"extensions": ()}, id="extensions"),
    ],
)
def test_commit_signed_over_another_group_context(
    wire: WireFormat, changes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FramedContentTBS of a member's message includes the GroupContext (§6.1): a commit
    signed over any other context — even one differing only in the epoch or tree hash, with
    the confirmation and membership tags computed honestly around that signature — is
    rejected with ``SignatureError``."""
    hub = Hub(1, wire)
    hub.create("alice", extensions=(hub.external_senders(),))
    hub.add("alice", ["bob", "carol"])
    alice = hub.group("alice")
    with monkeypatch.context() as m:
        sabotage_signed_context(m, **changes)
        out = alice.commit(force_path=True)
    for name in ("bob", "carol"):
        reject(hub.group(name), out.commit, SignatureError, "signature does not verify")
    if hub.public is not None:
        with pytest.raises(SignatureError):
            hub.public.process(out.commit)
    alice.clear_pending_commit()
    hub.commit("alice", force_path=True)


# === 3. Replayed and reordered messages ======================================================


def test_replayed_application_message(wire: WireFormat) -> None:
    """Each ratchet key decrypts once (§9.2): a replay is ``SecretTreeError``, and it does not
    disturb later messages, in this epoch or after a commit."""
    hub = hub_with(["alice", "bob", "carol"], wire)
    first = hub.send("alice", b"once")
    assert hub.deliver(first) == 2
    for name in ("bob", "carol"):
        reject(hub.group(name), first.message, SecretTreeError, "already used")
    assert hub.deliver(hub.send("alice", b"twice?")) == 2
    hub.commit("bob", force_path=True)
    # Replayed into the next epoch: the retained past epoch still knows the key was used.
    reject(hub.group("carol"), first.message, SecretTreeError, "already used")
    assert hub.deliver(hub.send("alice", b"new epoch")) == 2


def test_replayed_proposal(wire: WireFormat) -> None:
    """A replayed PublicMessage proposal has the same ProposalRef: it is cached once, not
    twice. A replayed PrivateMessage proposal reuses a consumed handshake key:
    ``SecretTreeError``. Either way the commit that follows covers the proposal once."""
    hub = hub_with(["alice", "bob", "carol"], wire)
    message = hub.propose("bob", lambda g: g.propose_update())
    carol = hub.group("carol")
    if wire == WireFormat.mls_public_message:
        before = fingerprint(carol)
        event = carol.process(message)
        assert isinstance(event, ProposalReceived)
        assert fingerprint(carol) == before  # same ref: nothing new cached
    else:
        reject(carol, message, SecretTreeError, "already used")
    alice = hub.group("alice")
    out = alice.commit()
    hub._public_process(out.commit)
    for name in ("alice", "bob", "carol"):
        assert [m.leaf_index for m in accept_commit(hub.group(name), out.commit).updated] == [1]
    hub.check()
    everyone_talks(hub)


def test_replayed_commit(wire: WireFormat) -> None:
    """A commit replayed after it was merged is for a past epoch: ``EpochError``, whether one
    or several epochs have passed; the group keeps working."""
    hub = hub_with(["alice", "bob", "carol"], wire)
    first = hub.commit("alice", force_path=True).commit
    for name in ("bob", "carol"):
        reject(hub.group(name), first, EpochError, "epoch 1, current epoch is 2")
    second = hub.commit("bob", force_path=True).commit
    for name in ("alice", "carol"):
        reject(hub.group(name), first, EpochError)
        reject(hub.group(name), second, EpochError)
    # The committer's own echo, replayed after it was merged, is no different.
    reject(hub.group("alice"), first, EpochError)
    everyone_talks(hub)


def test_reordered_application_messages(wire: WireFormat) -> None:
    """Application messages are fine out of order — within an epoch, and across a commit
    while the past epoch is retained (the event says which epoch each came from)."""
    hub = hub_with(["alice", "bob", "carol"], wire)
    rng = random.Random(7)
    sent = [hub.send("alice", b"a%d" % i) for i in range(5)]
    sent += [hub.send("bob", b"b%d" % i) for i in range(3)]
    late = [sent.pop(2), sent.pop(5)]  # held back until after the next commit
    rng.shuffle(sent)
    for s in sent:
        hub.deliver(s, only=["carol"])
    hub.commit("alice", force_path=True)
    for s in reversed(late):
        assert s.epoch == hub.group("carol").epoch - 1
        assert hub.deliver(s, only=["carol"]) == 1  # checks data, sender and epoch


def test_reordered_commits(wire: WireFormat) -> None:
    """Commits are strictly ordered: a commit for a future epoch (it overtook its
    predecessor) and one for a past epoch (it lost a race) are both ``EpochError``, and
    neither prevents processing in the right order afterwards. An application message of the
    next epoch that arrives before its commit is rejected, and readable once it is merged."""
    hub = hub_with(["alice", "bob", "carol"], wire)
    alice, bob, carol = (hub.group(n) for n in ("alice", "bob", "carol"))
    # bob and carol race in epoch 1; the DS orders bob's first.
    c1 = bob.commit(force_path=True)
    losing = carol.commit(force_path=True)
    hub._public_process(c1.commit)
    accept_commit(bob, c1.commit)
    accept_commit(alice, c1.commit)
    c2 = alice.commit(force_path=True)  # epoch 2 -> 3
    hub._public_process(c2.commit)
    accept_commit(alice, c2.commit)
    early = alice.encrypt_application(b"from epoch 3")
    # carol receives epoch 3's message and c2 (sent in epoch 2) before c1 (sent in epoch 1).
    reject(carol, early, EpochError, "epoch 3, current epoch is 1")
    reject(carol, c2.commit, EpochError, "epoch 2, current epoch is 1")
    accept_commit(carol, c1.commit)  # discards carol's own losing commit
    assert carol.pending_commit is None
    accept_commit(carol, c2.commit)
    accept_commit(bob, c2.commit)
    event = carol.process(early)
    assert isinstance(event, ApplicationMessage) and event.data == b"from epoch 3"
    # carol's losing commit reaches the others late: for a past epoch.
    for g in (alice, bob):
        reject(g, losing.commit, EpochError, "epoch 1, current epoch is 3")
    agree(alice, bob, carol)
    hub.check()
    everyone_talks(hub)


# === 4. A removed member keeps talking ========================================================


def _forged_by_stale(
    stale: Group, epoch: int, wire: WireFormat, content_type: ContentType, **body: Any
) -> bytes:
    """A message from ``stale``'s leaf for ``epoch``, made with the keys ``stale`` still has
    (its signature key; its old epoch's membership key, secret tree and sender-data secret)."""
    cs, old = stale.cipher_suite, stale.state.epoch
    fc = FramedContent(
        stale.group_id, epoch, Sender.member(stale.own_leaf_index), b"", content_type, **body
    )
    guess = replace(old.context, epoch=epoch)  # the real context is unknown to it
    key = stale.identity.signature_private_key
    if content_type == ContentType.application or wire == WireFormat.mls_private_message:
        ac = authenticate(cs, key, WireFormat.mls_private_message, fc, guess)
        pm = protect_private_message(
            cs, ac, _secret_tree_copy(stale), old.secrets.sender_data_secret
        )
        return MLSMessage.wrap(pm).encode()
    ac = authenticate(cs, key, WireFormat.mls_public_message, fc, guess)
    return MLSMessage.wrap(
        protect_public_message(cs, ac, guess, old.secrets.membership_key)
    ).encode()


def test_removed_member_messages(wire: WireFormat) -> None:
    """Bob is removed in epoch n -> n+1 but kept a copy of his epoch-n state.

    * His live group knows it was removed: sending raises ``GroupStateError``.
    * Handshakes for epoch n (his stale state) are ``EpochError``: a past epoch never takes a
      proposal or commit.
    * Messages he forges for epoch n+1 with what he still has: a PublicMessage naming his old
      (now blank) leaf is ``SenderError``; once a newcomer occupies that leaf, the same forgery
      fails the membership tag (``MembershipTagError``: he lacks the new membership key); a
      PrivateMessage cannot even be opened (``CryptoError``: no sender-data key).
    * Application messages of epoch n are indistinguishable from messages he sent before his
      removal that arrive late (RFC 9420 §15's delayed messages): they are accepted, stamped
      with epoch n, while epoch n is among the ``max_past_epochs`` retained; ``EpochError``
      after that.
    """
    hub = hub_with(["alice", "bob", "carol"], wire)
    bob_live = hub.group("bob")
    saved = bob_live.to_bytes()  # bob's epoch-n state, kept before his removal

    def stale() -> Group:
        return Group.from_bytes(saved)

    n = bob_live.epoch
    public = wire == WireFormat.mls_public_message
    hub.commit("alice", [Proposal(Remove(1))])
    assert not bob_live.active and "bob" not in hub.members()
    with pytest.raises(GroupStateError):
        bob_live.encrypt_application(b"still here")
    with pytest.raises(GroupStateError):
        bob_live.propose_update()
    alice, carol = hub.group("alice"), hub.group("carol")

    # Handshakes of epoch n.
    proposal = stale().propose_remove(0)
    commit = stale().commit([Proposal(Remove(0))]).commit
    for g in (alice, carol):
        reject(g, proposal, EpochError, f"epoch {n},")
        reject(g, commit, EpochError, f"epoch {n},")

    # Forgeries for epoch n+1.
    proposal = _forged_by_stale(
        stale(), n + 1, wire, ContentType.proposal, proposal=Proposal(Remove(0))
    )
    application = _forged_by_stale(
        stale(), n + 1, wire, ContentType.application, application_data=b"I am back"
    )
    for g in (alice, carol):
        if public:
            reject(g, proposal, SenderError, "sender leaf 1 is not a member")
        else:
            reject(g, proposal, CryptoError)
        reject(g, application, CryptoError)
    # Dave takes bob's old leaf; bob forges for the new epoch as leaf 1.
    hub.add("alice", ["dave"])
    assert hub.leaf("dave") == 1 and alice.epoch == n + 2
    proposal = _forged_by_stale(
        stale(), n + 2, wire, ContentType.proposal, proposal=Proposal(Remove(0))
    )
    application = _forged_by_stale(
        stale(), n + 2, wire, ContentType.application, application_data=b"I am dave"
    )
    for name in ("alice", "carol", "dave"):
        g = hub.group(name)
        # The membership tag (a member-only check) fails before the signature does.
        reject(g, proposal, MembershipTagError if public else CryptoError, member_only=True)
        reject(g, application, CryptoError)

    # Application messages of epoch n: late-message semantics.
    event = alice.process(stale().encrypt_application(b"sent 'before' my removal"))
    assert isinstance(event, ApplicationMessage)
    assert (event.sender.leaf_index, event.epoch, alice.epoch) == (1, n, n + 2)
    for _ in range(alice.config.max_past_epochs):
        hub.commit("carol")
    reject(carol, stale().encrypt_application(b"and now?"), EpochError, f"epoch {n},")
    everyone_talks(hub)


def test_removed_member_without_past_epochs(wire: WireFormat) -> None:
    """With ``max_past_epochs=0`` even a message of the epoch just left is ``EpochError``."""
    hub = Hub(1, wire)
    hub.config = replace(hub.config, max_past_epochs=0)
    hub.create("alice")
    hub.add("alice", ["bob", "carol"])
    bob = Group.from_bytes(hub.group("bob").to_bytes())
    hub.commit("alice", [Proposal(Remove(1))])
    late = bob.encrypt_application(b"hello")
    for name in ("alice", "carol"):
        assert hub.group(name).config.max_past_epochs == 0
        reject(hub.group(name), late, EpochError)


# === 5. Tampered Welcome and GroupInfo =========================================================


@dataclass
class PendingJoin:
    hub: Hub
    out: CommitOutput
    bundle: KeyPackageBundle
    welcome: Welcome


def _pending_join(wire: WireFormat) -> PendingJoin:
    """Alice and bob; alice has committed an Add of carol (merged by nobody yet)."""
    hub = hub_with(["alice", "bob"], wire)
    bundle = create_key_package(hub.client("carol").identity)
    out = hub.group("alice").commit([Proposal(Add(bundle.key_package))])
    assert out.welcome is not None
    welcome = MLSMessage.decode(out.welcome).welcome
    assert welcome is not None
    return PendingJoin(hub, out, bundle, welcome)


def _open_welcome(p: PendingJoin) -> tuple[GroupSecrets, GroupInfo, bytes, bytes]:
    """What only the joiner (or whoever holds its init key) can read: the GroupSecrets, the
    GroupInfo, and the Welcome AEAD key and nonce."""
    cs = p.hub.group("alice").cipher_suite
    entry = p.welcome.secrets[0]
    plain = cs.decrypt_with_label(
        p.bundle.init_private_key,
        WELCOME,
        p.welcome.encrypted_group_info,
        entry.encrypted_group_secrets.kem_output,
        entry.encrypted_group_secrets.ciphertext,
    )
    secrets = GroupSecrets.decode(plain)
    key, nonce = welcome_key_nonce(cs, compute_welcome_secret(cs, secrets.joiner_secret, None))
    gi = GroupInfo.decode(cs.aead_open(key, nonce, b"", p.welcome.encrypted_group_info))
    return secrets, gi, key, nonce


def _group_info_changed(
    change: Callable[[GroupInfo], GroupInfo], *, resign: bool
) -> Callable[[PendingJoin], Welcome]:
    """Change the Welcome's GroupInfo (re-signed by alice, the committer, if ``resign``) and
    seal it again under the right key, with the GroupSecrets re-encrypted to the joiner for the
    new ``encrypted_group_info`` (they are bound to it, §12.4.3.1)."""

    def tamper(p: PendingJoin) -> Welcome:
        alice = p.hub.group("alice")
        cs = alice.cipher_suite
        secrets, gi, key, nonce = _open_welcome(p)
        gi = change(gi)
        if resign:
            signature = cs.sign_with_label(
                alice.identity.signature_private_key, GROUP_INFO_TBS, gi.tbs()
            )
            gi = replace(gi, signature=signature)
        egi = cs.aead_seal(key, nonce, b"", gi.encode())
        kem, ct = cs.encrypt_with_label(
            p.bundle.key_package.init_key, WELCOME, egi, secrets.encode()
        )
        entry = replace(p.welcome.secrets[0], encrypted_group_secrets=HPKECiphertext(kem, ct))
        return replace(p.welcome, secrets=(entry,), encrypted_group_info=egi)

    return tamper


def _ciphertext_changed(
    change: Callable[[HPKECiphertext], HPKECiphertext],
) -> Callable[[PendingJoin], Welcome]:
    def tamper(p: PendingJoin) -> Welcome:
        e = p.welcome.secrets[0]
        e = replace(e, encrypted_group_secrets=change(e.encrypted_group_secrets))
        return replace(p.welcome, secrets=(e,))

    return tamper


def _context_changed(**changes: Callable[[Any], Any]) -> Callable[[GroupInfo], GroupInfo]:
    def change(gi: GroupInfo) -> GroupInfo:
        ctx = gi.group_context
        values = {k: f(getattr(ctx, k)) for k, f in changes.items()}
        return replace(gi, group_context=replace(ctx, **values))

    return change


def _external_pub_swapped(gi: GroupInfo) -> GroupInfo:
    """The external_pub extension replaced by a key the attacker holds."""
    _, attacker_pub = suite(gi.group_context.cipher_suite).hpke_key_pair()
    exts = tuple(
        ExternalPub(attacker_pub).to_extension()
        if e.extension_type == ExternalPub.extension_type
        else e
        for e in gi.extensions
    )
    assert exts != gi.extensions
    return replace(gi, extensions=exts)


GROUP_INFO_TAMPERING: dict[str, Callable[[GroupInfo], GroupInfo]] = {
    "epoch": _context_changed(epoch=lambda e: e + 1),
    "group_id": _context_changed(group_id=lambda g: b"another group"),
    "tree_hash": _context_changed(tree_hash=flip),
    "external_pub": _external_pub_swapped,
    "confirmation_tag": lambda gi: replace(gi, confirmation_tag=flip(gi.confirmation_tag)),
    "signer": lambda gi: replace(gi, signer=1),
    "signature": lambda gi: replace(gi, signature=flip(gi.signature, 10)),
}

WelcomeTamper = Callable[[PendingJoin], Welcome]
WELCOME_TAMPERING: dict[str, tuple[WelcomeTamper, type[MLSError], str]] = {
    # The GroupSecrets are HPKE-encrypted with encrypted_group_info as context: flipping the
    # GroupInfo ciphertext already breaks the GroupSecrets.
    "encrypted_group_info": (
        lambda p: replace(p.welcome, encrypted_group_info=flip(p.welcome.encrypted_group_info)),
        WelcomeError,
        "cannot decrypt our GroupSecrets",
    ),
    "group_secrets_ciphertext": (
        _ciphertext_changed(lambda c: replace(c, ciphertext=flip(c.ciphertext, 3))),
        WelcomeError,
        "cannot decrypt our GroupSecrets",
    ),
    "group_secrets_kem_output": (
        _ciphertext_changed(lambda c: replace(c, kem_output=flip(c.kem_output, 5))),
        WelcomeError,
        "cannot decrypt our GroupSecrets",
    ),
    "key_package_ref": (
        lambda p: replace(
            p.welcome,
            secrets=(
                replace(p.welcome.secrets[0], new_member=flip(p.welcome.secrets[0].new_member)),
            ),
        ),
        WelcomeError,
        "no entry for any of our KeyPackages",
    ),
    # Whoever holds the Welcome key changes a GroupInfo field and keeps the signature.
    **{
        f"group_info_{name}_resealed": (
            _group_info_changed(change, resign=False),
            GroupInfoError,
            "signature does not verify",
        )
        for name, change in GROUP_INFO_TAMPERING.items()
        if name in ("epoch", "tree_hash", "signer")
    },
    # A malicious committer re-signs what it changed: the remaining checks catch it.
    "group_info_confirmation_tag_resigned": (
        _group_info_changed(GROUP_INFO_TAMPERING["confirmation_tag"], resign=True),
        WelcomeError,
        "confirmation tag does not verify",
    ),
    "group_info_tree_hash_resigned": (
        _group_info_changed(GROUP_INFO_TAMPERING["tree_hash"], resign=True),
        TreeHashError,
        "tree hash",
    ),
}


@pytest.mark.parametrize("what", list(WELCOME_TAMPERING))
def test_tampered_welcome(wire: WireFormat, what: str) -> None:
    """A Welcome altered in transit (or by its committer) is refused with the error of the
    first check it fails; the joiner gets no group, the members are unaffected, and the
    genuine Welcome still works with the same KeyPackage afterwards."""
    p = _pending_join(wire)
    tamper, error, match = WELCOME_TAMPERING[what]
    bad = MLSMessage.wrap(tamper(p)).encode()
    with pytest.raises(MLSError) as info:
        Group.join(bad, p.bundle, config=p.hub.config)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert re.search(match, str(info.value), re.IGNORECASE), str(info.value)
    # The genuine Welcome (the hub joins carol with it) after the attack.
    p.hub.clients["carol"].bundles[p.bundle.ref()] = p.bundle
    p.hub.deliver_commit("alice", p.out)
    everyone_talks(p.hub)


@pytest.mark.parametrize("field", list(GROUP_INFO_TAMPERING))
def test_tampered_group_info_for_external_join(wire: WireFormat, field: str) -> None:
    """A GroupInfo with one field changed and the original signature kept — the epoch, the
    group id, the tree hash, the external_pub key (which would let the attacker learn the
    joiner's init secret), the confirmation tag, the signer index, the signature itself — is
    refused by ``join_external`` with ``GroupInfoError`` before the joiner sends anything; the
    members never see a commit. The genuine GroupInfo then works."""
    hub = hub_with(["alice", "bob"], wire)
    gi = MLSMessage.decode(hub.group("alice").group_info()).group_info
    assert gi is not None
    bad = MLSMessage.wrap(GROUP_INFO_TAMPERING[field](gi)).encode()
    before = [fingerprint(hub.group(n)) for n in hub.members()]
    with pytest.raises(MLSError) as info:
        join_external(bad, hub.client("carol").identity, config=hub.config)
    assert type(info.value) is GroupInfoError, f"{type(info.value).__name__}: {info.value}"
    assert "signature does not verify" in str(info.value)
    assert [fingerprint(hub.group(n)) for n in hub.members()] == before
    with pytest.raises(MLSError):  # a DS would not adopt it either
        PublicGroup.from_group_info(bad)
    hub.external_join("carol", via="alice")
    everyone_talks(hub)


# === 6. Reused KeyPackages =====================================================================


def test_same_key_package_committed_twice(wire: WireFormat) -> None:
    """Carol's KeyPackage is added by alice; bob adds the very same KeyPackage again (the DS
    handed it out twice, or it was replayed). Bob's ``commit`` refuses to build it
    (``ProposalListError``, nothing pending) and a commit forged without that check is refused
    by every member with the same error. Two Adds of one KeyPackage in one commit, likewise."""
    hub = hub_with(["alice", "bob"], wire)
    kp = hub.key_package("carol")
    hub.commit("alice", [Proposal(Add(kp))])
    assert "carol" in hub.members()
    bob = hub.group("bob")
    before = fingerprint(bob)
    with pytest.raises(ProposalListError, match="already in the group"):
        bob.commit([Proposal(Add(kp))])
    assert fingerprint(bob) == before
    forged = forge_commit(bob, [Proposal(Add(kp))])
    for name in ("alice", "carol"):
        reject(hub.group(name), forged, ProposalListError, "already in the group")
    # One KeyPackage twice in one commit.
    dave = hub.key_package("dave")
    with pytest.raises(ProposalListError, match="two adds for the same client"):
        bob.commit([Proposal(Add(dave)), Proposal(Add(dave))])
    forged = forge_commit(bob, [Proposal(Add(dave)), Proposal(Add(dave))])
    for name in ("alice", "carol"):
        reject(hub.group(name), forged, ProposalListError, "two adds for the same client")
    hub.commit("bob", [Proposal(Add(dave))])
    everyone_talks(hub)


def test_same_key_package_in_racing_commits(wire: WireFormat) -> None:
    """Alice and bob both add carol's one KeyPackage in the same epoch. Only the first commit
    the DS orders counts; the other is ``EpochError`` at every member. Carol can decrypt both
    Welcomes (both use her init key), but only the winner's puts her in the group everyone
    else is in — which is why a Delivery Service must release a Welcome only with its commit."""
    hub = hub_with(["alice", "bob"], wire)
    bundle = create_key_package(hub.client("carol").identity)
    alice, bob = hub.group("alice"), hub.group("bob")
    win = alice.commit([Proposal(Add(bundle.key_package))])
    lose = bob.commit([Proposal(Add(bundle.key_package))])
    hub._public_process(win.commit)
    accept_commit(alice, win.commit)
    accept_commit(bob, win.commit)
    assert bob.pending_commit is None
    reject(alice, lose.commit, EpochError)
    reject(bob, lose.commit, EpochError)
    carol = Group.join(win.welcome, bundle, config=hub.config)  # type: ignore[arg-type]
    dead_branch = Group.join(lose.welcome, bundle, config=hub.config)  # type: ignore[arg-type]
    agree(alice, bob, carol)
    assert dead_branch.epoch == carol.epoch
    assert dead_branch.epoch_authenticator != carol.epoch_authenticator
    reject(alice, dead_branch.encrypt_application(b"hi?"), CryptoError)
    hub.adopt("carol", carol)
    hub.check()


def _key_package_like(bundle_owner: SigningIdentity, *, encryption_key: bytes) -> KeyPackage:
    """A fresh, correctly signed KeyPackage of ``bundle_owner`` whose leaf carries someone
    else's (public) encryption key."""
    kp = create_key_package(bundle_owner).key_package
    cs = suite(kp.cipher_suite)
    leaf = sign_leaf_node(
        cs,
        bundle_owner.signature_private_key,
        replace(kp.leaf_node, encryption_key=encryption_key),
        None,
        None,
    )
    kp = replace(kp, leaf_node=leaf)
    signature = cs.sign_with_label(bundle_owner.signature_private_key, KEY_PACKAGE_TBS, kp.tbs())
    return replace(kp, signature=signature)


@pytest.mark.parametrize("reuse", ["signature_key", "encryption_key"])
def test_add_reusing_a_current_members_keys(wire: WireFormat, reuse: str) -> None:
    """A new KeyPackage that reuses a current member's key: carol's own second KeyPackage
    (same signature key — a client is in a group once), or mallory's KeyPackage carrying
    carol's leaf encryption key. Committing it, proposing it and a forged commit carrying it
    are all refused with ``ProposalListError``."""
    hub = hub_with(["alice", "bob", "carol"], wire)
    carol_leaf = next(m for m in hub.group("alice").members() if m.leaf_index == 2)
    if reuse == "signature_key":
        kp = create_key_package(hub.client("carol").identity).key_package
        match = "already in the group"
    else:
        mallory = hub.client("mallory").identity
        kp = _key_package_like(mallory, encryption_key=carol_leaf.encryption_key)
        match = "encryption key is already in the tree"
    alice, bob = hub.group("alice"), hub.group("bob")
    before = fingerprint(alice)
    with pytest.raises(ProposalListError, match=match):
        alice.commit([Proposal(Add(kp))])
    assert fingerprint(alice) == before
    # Bob's own client refuses to propose it (a sender runs the receivers' checks)...
    with pytest.raises(ProposalListError, match=match):
        bob.propose_add(kp)
    # ...so a modified client forges it: refused on receipt by the others.
    epoch = bob.state.epoch
    content = FramedContent(
        bob.group_id,
        bob.epoch,
        Sender.member(bob.own_leaf_index),
        b"",
        ContentType.proposal,
        proposal=Proposal(Add(kp)),
    )
    signed = authenticate(
        bob.cipher_suite,
        bob.identity.signature_private_key,
        WireFormat.mls_public_message,
        content,
        epoch.context,
    )
    proposal = MLSMessage.wrap(
        protect_public_message(
            bob.cipher_suite, signed, epoch.context, epoch.secrets.membership_key
        )
    ).encode()
    for name in ("alice", "carol"):
        reject(hub.group(name), proposal, ProposalListError, match)
    forged = forge_commit(alice, [Proposal(Add(kp))])
    for name in ("bob", "carol"):
        reject(hub.group(name), forged, ProposalListError, match)
    # bob drops his own proposal the others never cached by committing without it.
    out = bob.commit(include_pending=False)
    hub.deliver_commit("bob", out)
    everyone_talks(hub)


# === 7. External commit from a stale GroupInfo ===============================================


@pytest.mark.parametrize("behind", [1, 2])
def test_external_commit_from_a_stale_group_info(wire: WireFormat, behind: int) -> None:
    """Carol fetched the GroupInfo of epoch n; the group moved on before her external commit
    arrived. The members (and the DS's public view) refuse it with ``EpochError``; her
    locally built group is a dead branch. She retries with the fresh GroupInfo and is in."""
    hub = hub_with(["alice", "bob"], wire)
    stale = hub.group("alice").group_info()
    for _ in range(behind):
        hub.commit("bob", force_path=True)
    dead, commit = join_external(stale, hub.client("carol").identity, config=hub.config)
    for name in ("alice", "bob"):
        reject(hub.group(name), commit, EpochError, "current epoch is")
    if hub.public is not None:
        with pytest.raises(EpochError):
            hub.public.process(commit)
    assert dead.epoch < hub.group("alice").epoch  # refused: never merged, discarded
    hub.external_join("carol", via="bob")
    everyone_talks(hub)
