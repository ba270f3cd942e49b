"""Multi-party scenarios over the in-memory hub, named after the MLS interop harness's
scenarios (welcome_join, external_join, application, commit, reinit, branch, external
proposals), for every cipher suite and both handshake wire formats, plus a seeded random walk.

Every hub step asserts that all members agree (see :meth:`hub.Hub.check`); with PublicMessage
handshakes the Delivery Service's public view must agree too.
"""

from __future__ import annotations

import os
import random

import pytest
from hub import Hub, Sent, hub_with

from mlspy.errors import (
    EpochError,
    ExternalCommitError,
    GroupStateError,
    MLSError,
    PskError,
    WelcomeError,
)
from mlspy.group import (
    Group,
    ProposalReceived,
    branch,
    check_successor,
    external_proposal,
    join_external,
    new_member_add_proposal,
    reinit_successor,
)
from mlspy.group.public_group import PublicGroup, PublicStagedCommit
from mlspy.group.welcome import join_from_welcome
from mlspy.messages import (
    Add,
    ApplicationId,
    ExternalSenders,
    GroupContextExtensions,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    RatchetTree,
    Remove,
    ResumptionPSKUsage,
    WireFormat,
    decode_ratchet_tree,
)
from mlspy.tree.ratchet_tree import RatchetTree as PublicRatchetTree
from parity import raises_exactly

SUITES = [1, 2, 3, 4, 5, 6, 7]


@pytest.fixture(params=SUITES, ids=lambda s: f"suite{s}")
def cs(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def everyone_commits(hub: Hub) -> None:
    """Each member in turn commits with a path: every member's keys get exercised."""
    for name in hub.members():
        hub.commit(name, force_path=True)


def nonce(hub: Hub) -> bytes:
    return os.urandom(hub.group(hub.members()[0]).cipher_suite.nh)


# --- welcome_join ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [False, True], ids=["no_path", "path"])
@pytest.mark.parametrize("tree_oob", [False, True], ids=["tree_in_welcome", "tree_oob"])
def test_welcome_join(cs: int, wire: WireFormat, tree_oob: bool, path: bool) -> None:
    hub = hub_with(["alice"], wire, cs)
    kps = [hub.key_package("bob"), hub.key_package("carol")]
    bundles = [b for n in ("bob", "carol") for b in hub.clients[n].bundles.values()]
    out = hub.commit(
        "alice",
        [Proposal(Add(kp)) for kp in kps],
        force_path=path,
        tree_out_of_band=tree_oob,
    )
    assert out.welcome is not None
    # What the Welcome carried: a path secret exactly when the commit had a path, and the
    # tree exactly when it was not sent out of band.
    welcome = MLSMessage.decode(out.welcome).welcome
    assert welcome is not None
    for bundle in bundles:
        joined, _ = join_from_welcome(
            welcome,
            [bundle],
            hub.config,
            ratchet_tree=lambda c: PublicRatchetTree.from_nodes(
                c, decode_ratchet_tree(out.ratchet_tree)
            ),
        )
        assert (joined.group_secrets.path_secret is not None) == path
        in_welcome = RatchetTree.find_in(joined.group_info.extensions) is not None
        assert in_welcome == (not tree_oob)
    # Carol's commit encrypts to the node Bob learned from his path secret (if any).
    hub.commit("carol")
    hub.commit("bob")
    hub.deliver(hub.send("alice", b"welcome"))
    if tree_oob:
        with raises_exactly(WelcomeError, "out of band"):
            Group.join(out.welcome, bundles[0], config=hub.config)


def test_welcome_join_external_psk(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob"], wire, cs)
    hub.share_psk(b"psk-1", b"\x11" * 32)
    hub.propose("bob", lambda g: g.propose_external_psk(b"psk-1"))
    kp = hub.key_package("carol")
    bundle = next(iter(hub.clients["carol"].bundles.values()))
    out = hub.commit("alice", [Proposal(Add(kp))])
    assert [p.psk_id for p in hub.group("carol").welcome_psks] == [b"psk-1"]
    # Without the PSK, the Welcome cannot be used.
    with raises_exactly(PskError, "not available"):
        Group.join(out.welcome, bundle, config=hub.config)  # type: ignore[arg-type]
    hub.commit("carol")


# --- external_join --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["normal", "psk", "resync", "tree_oob"])
def test_external_join(cs: int, wire: WireFormat, variant: str) -> None:
    hub = hub_with(["alice", "bob"], wire, cs)
    if variant == "normal":
        hub.external_join("carol", via="bob")
    elif variant == "psk":
        hub.share_psk(b"ext-psk", b"\x22" * 32)
        commit = MLSMessage.decode(hub.external_join("carol", psk_ids=[b"ext-psk"]))
        assert commit.public_message is not None  # external commits are always public
        fc = commit.public_message.content
        assert fc.commit is not None
        psks = [p.proposal.body for p in fc.commit.proposals if p.proposal is not None]
        assert [p.psk.psk_id for p in psks if isinstance(p, PreSharedKey)] == [b"ext-psk"]
    elif variant == "resync":
        old_leaf = hub.leaf("bob")
        hub.external_join("bob", via="alice", resync=True)
        assert hub.leaf("bob") == old_leaf  # the removed leaf is the leftmost blank one
    else:
        hub.external_join("carol", via="alice", tree_out_of_band=True)
    everyone_commits(hub)
    for name in hub.members():
        hub.deliver(hub.send(name, f"hello from {name}".encode()))


def test_external_join_needs_tree(cs: int) -> None:
    hub = hub_with(["alice"], WireFormat.mls_public_message, cs)
    gi = hub.group("alice").group_info(with_ratchet_tree=False)
    with raises_exactly(ExternalCommitError, "ratchet tree"):
        join_external(gi, hub.client("carol").identity)


# --- application ----------------------------------------------------------------------------


def test_application_in_order(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol"], wire, cs)
    for i in range(3):
        for name in hub.members():
            sent = hub.send(name, f"{name} {i}".encode(), authenticated_data=b"aad %d" % i)
            assert hub.deliver(sent) == 2


def test_application_out_of_order(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol"], wire, cs)
    rng = random.Random(cs)
    sent: list[Sent] = [hub.send("alice", b"a%d" % i) for i in range(6)]
    sent += [hub.send("bob", b"b%d" % i) for i in range(3)]
    for name in ("bob", "carol"):
        order = list(sent)
        rng.shuffle(order)
        for s in order:
            if s.sender != name:
                hub.deliver(s, only=[name])
    # A replayed message is rejected: its key is gone.
    with pytest.raises(MLSError):
        hub.group("carol").process(sent[0].message)


def test_application_across_epochs(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol"], wire, cs)
    early = hub.send("carol", b"sent in the first epoch")
    too_late = hub.send("carol", b"sent four epochs ago")
    hub.commit("alice")  # with a path: a new epoch and new keys
    mid = hub.send("bob", b"sent in the second epoch")
    hub.commit("bob", [Proposal(Remove(hub.leaf("carol")))])  # carol leaves
    hub.add("alice", ["dave"])  # dave joins: he cannot read older epochs
    assert hub.group("alice").epoch == early.epoch + 3
    # Up to max_past_epochs (3) late, even from a sender removed since.
    assert hub.deliver(mid) == 1
    assert hub.deliver(early) == 2
    hub.commit("dave")
    alice = hub.group("alice")
    before = alice.epoch_authenticator
    with raises_exactly(EpochError, "epoch"):
        alice.process(too_late.message)
    assert alice.epoch_authenticator == before
    hub.deliver(hub.send("dave", b"hi"))


# --- commit ---------------------------------------------------------------------------------


def test_commit_empty(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol"], wire, cs)
    everyone_commits(hub)
    hub.commit("bob")


def test_commit_add(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob"], wire, cs)
    hub.add("bob", ["carol", "dave"])
    hub.propose("carol", lambda g: g.propose_add(hub.key_package("eve")))
    hub.commit("dave")
    assert len(hub.members()) == 5
    hub.commit("eve")


def test_commit_remove(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol", "dave"], wire, cs)
    hub.commit("alice", [Proposal(Remove(hub.leaf("bob")))])
    assert "bob" not in hub.members()
    hub.propose("carol", lambda g: g.propose_remove(hub.leaf("dave")))
    hub.commit("alice")
    assert hub.members() == ["alice", "carol"]
    # The blank leaf is reused by the next add.
    hub.add("carol", ["eve"])
    assert hub.leaf("eve") == 1
    # A member may propose its own removal; another member commits it.
    hub.propose("eve", lambda g: g.propose_remove(hub.leaf("eve")))
    hub.commit("carol")
    assert hub.members() == ["alice", "carol"]
    everyone_commits(hub)


@pytest.mark.parametrize("proposer", ["member", "external"])
def test_remove_proposal_of_lowest_leaf(wire: WireFormat, proposer: str) -> None:
    hub = Hub(1, wire)
    hub.create("alice", extensions=(hub.external_senders(),))
    hub.add("alice", ["bob", "carol"])
    if proposer == "member":
        hub.propose("bob", lambda g: g.propose_remove(hub.leaf("alice")))
    else:
        gi = hub.group("alice").group_info()
        hub.deliver_proposal(
            external_proposal(
                gi, Proposal(Remove(hub.leaf("alice"))), hub.ds_signature_private_key, 0
            )
        )
    hub.commit("carol")
    assert hub.members() == ["bob", "carol"]


def _propose_conflicts(hub: Hub, case: str) -> str:
    """Cache proposals that cannot all be committed together; return the committer."""
    if case == "duplicate_remove":
        for name in ("bob", "carol"):
            hub.propose(name, lambda g: g.propose_remove(hub.leaf("dave")))
        return "alice"
    if case == "update_and_remove":
        hub.propose("bob", lambda g: g.propose_update())
        hub.propose("carol", lambda g: g.propose_remove(hub.leaf("bob")))
        return "alice"
    if case == "own_update":
        hub.propose("bob", lambda g: g.propose_update())
        return "bob"
    if case == "remove_committer":
        hub.propose("bob", lambda g: g.propose_remove(hub.leaf("carol")))
        return "carol"
    assert case == "two_gce"
    for i, name in enumerate(("bob", "carol")):
        exts = (ApplicationId(b"app %d" % i).to_extension(),)
        hub.propose(name, lambda g, e=exts: g.propose_group_context_extensions(e))
    return "alice"


@pytest.mark.parametrize(
    "case",
    ["duplicate_remove", "update_and_remove", "own_update", "remove_committer", "two_gce"],
)
def test_commit_drops_invalid_pending_proposals(case: str) -> None:
    hub = hub_with(["alice", "bob", "carol", "dave"], WireFormat.mls_public_message, 1)
    committer = _propose_conflicts(hub, case)
    hub.commit(committer)
    everyone_commits(hub)


def test_proposal_echo_to_sender() -> None:
    hub = hub_with(["alice", "bob", "carol"], WireFormat.mls_public_message, 1)
    message = hub.propose("bob", lambda g: g.propose_remove(hub.leaf("carol")))
    event = hub.group("bob").process(message)
    assert isinstance(event, ProposalReceived)
    hub.commit("bob")


def test_commit_update(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol"], wire, cs)
    old_key = hub.group("bob").members()[hub.leaf("bob")].encryption_key
    hub.propose("bob", lambda g: g.propose_update())
    hub.commit("alice")
    new_key = hub.group("alice").members()[hub.leaf("bob")].encryption_key
    assert new_key != old_key
    # Carol's path encrypts to Bob's new leaf key: Bob must hold its private key.
    hub.commit("carol")
    hub.commit("bob")


def test_commit_group_context_extensions(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol"], wire, cs)
    exts = (ApplicationId(b"chat").to_extension(), hub.external_senders())
    hub.propose("bob", lambda g: g.propose_group_context_extensions(exts))
    hub.commit("carol")
    assert hub.group("alice").extensions == exts
    exts2 = (ApplicationId(b"chat v2").to_extension(),)
    hub.commit("alice", [Proposal(GroupContextExtensions(exts2))])
    assert hub.group("bob").extensions == exts2
    hub.add("bob", ["dave"])
    assert hub.group("dave").extensions == exts2


def test_commit_psks(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol"], wire, cs)
    hub.commit("alice")
    hub.share_psk(b"ext", os.urandom(32))
    epoch = hub.group("bob").epoch
    hub.propose("bob", lambda g: g.propose_external_psk(b"ext"))
    hub.propose("carol", lambda g: g.propose_resumption_psk(epoch - 1))
    hub.commit("alice")
    # PSK-only commits need no path; by value, from the committer.
    resumption = PreSharedKeyID.resumption(
        ResumptionPSKUsage.application, hub.group("bob").group_id, epoch, nonce(hub)
    )
    hub.commit(
        "bob",
        [
            Proposal(PreSharedKey(PreSharedKeyID.external(b"ext", nonce(hub)))),
            Proposal(PreSharedKey(resumption)),
        ],
    )
    hub.commit("carol")


def test_commit_all_together(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol", "dave"], wire, cs)
    hub.share_psk(b"ext", os.urandom(32))
    # No resumption PSK here: the joiner could not know it (§12.4.3.1); see test_commit_psks.
    hub.propose("bob", lambda g: g.propose_update())
    hub.propose("carol", lambda g: g.propose_external_psk(b"ext"))
    exts = (ApplicationId(b"all").to_extension(),)
    hub.commit(
        "alice",
        [
            Proposal(Add(hub.key_package("eve"))),
            Proposal(Remove(hub.leaf("dave"))),
            Proposal(GroupContextExtensions(exts)),
        ],
    )
    assert sorted(hub.members()) == ["alice", "bob", "carol", "eve"]
    assert hub.group("eve").extensions == exts
    everyone_commits(hub)


# --- reinit and branch ----------------------------------------------------------------------


def _successor_hub(hub: Hub, names: list[str]) -> Hub:
    """An empty hub for a successor group of ``hub``'s, with the same clients' identities."""
    new = Hub(hub.cipher_suite, hub.config.handshake_wire_format)
    for name in names:
        new.client(name, hub.clients[name].identity)
    return new


def test_reinit(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol"], wire, cs)
    exts = (ApplicationId(b"reinit").to_extension(),)
    hub.propose("bob", lambda g: g.propose_reinit(group_id=b"next group", extensions=exts))
    hub.commit("carol")
    for name in hub.members():
        g = hub.group(name)
        assert not g.active and g.reinit is not None
    with pytest.raises(GroupStateError):
        hub.group("alice").commit()
    if hub.public is not None:
        assert hub.public.closed

    new_hub = _successor_hub(hub, hub.members())
    kps = [new_hub.key_package(n) for n in ("bob", "carol")]
    new, out = reinit_successor(hub.group("alice"), kps)
    new_hub.adopt("alice", new)
    new_hub.adopt_public_view("alice")
    for name in ("bob", "carol"):
        c = new_hub.clients[name]
        joined = Group.join(
            out.welcome,  # type: ignore[arg-type]
            list(c.bundles.values()),
            resumption_psks=hub.group(name).resumption_psks(),
            config=new_hub.config,
        )
        check_successor(joined, hub.group(name))
        c.group = joined
    new_hub.check()
    assert new.group_id == b"next group" and new.extensions == exts and new.epoch == 1
    everyone_commits(new_hub)


def test_reinit_new_cipher_suite(wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob"], wire, 1)
    hub.propose("alice", lambda g: g.propose_reinit(group_id=b"upgraded", cipher_suite=3))
    hub.commit("bob")
    new_hub = Hub(3, wire)
    kp = new_hub.key_package("bob")
    new, out = reinit_successor(hub.group("alice"), [kp], identity=new_hub.client("alice").identity)
    new_hub.adopt("alice", new)
    bob = new_hub.clients["bob"]
    bob.group = Group.join(
        out.welcome,  # type: ignore[arg-type]
        list(bob.bundles.values()),
        resumption_psks=hub.group("bob").resumption_psks(),
        config=new_hub.config,
    )
    check_successor(bob.group, hub.group("bob"))
    new_hub.check()
    assert new.context.cipher_suite == 3
    everyone_commits(new_hub)


def test_branch(cs: int, wire: WireFormat) -> None:
    hub = hub_with(["alice", "bob", "carol", "dave"], wire, cs)
    sub = _successor_hub(hub, ["alice", "bob", "carol"])
    new, out = branch(hub.group("alice"), [sub.key_package("bob"), sub.key_package("carol")])
    sub.adopt("alice", new)
    sub.adopt_public_view("alice")
    for name in ("bob", "carol"):
        c = sub.clients[name]
        joined = Group.join(
            out.welcome,  # type: ignore[arg-type]
            list(c.bundles.values()),
            resumption_psks=hub.group(name).resumption_psks(),
            config=sub.config,
        )
        check_successor(joined, hub.group(name))
        c.group = joined
    sub.check()
    assert new.group_id != hub.group("alice").group_id
    # Both groups live on independently.
    everyone_commits(sub)
    everyone_commits(hub)
    assert sub.group("bob").export_secret(b"x", b"", 32) != hub.group("bob").export_secret(
        b"x", b"", 32
    )


# --- external proposals ---------------------------------------------------------------------


def test_external_proposals(cs: int, wire: WireFormat) -> None:
    hub = Hub(cs, wire)
    hub.create("alice", extensions=(hub.external_senders(),))
    hub.add("alice", ["bob", "carol"])
    assert ExternalSenders.find_in(hub.group("bob").extensions) is not None

    def ds_propose(proposal: Proposal) -> None:
        gi = hub.group("alice").group_info()
        hub.deliver_proposal(external_proposal(gi, proposal, hub.ds_signature_private_key, 0))

    # The Delivery Service adds dave; bob commits it.
    ds_propose(Proposal(Add(hub.key_package("dave"))))
    hub.commit("bob")
    assert "dave" in hub.members()
    # The Delivery Service removes carol; dave commits it.
    ds_propose(Proposal(Remove(hub.leaf("carol"))))
    hub.commit("dave")
    assert "carol" not in hub.members()
    # Eve asks to be added (new_member_proposal); alice commits it.
    eve = hub.client("eve")
    kp = eve.key_package()
    g = hub.group("alice")
    hub.deliver_proposal(
        new_member_add_proposal(g.group_id, g.epoch, kp, eve.identity.signature_private_key)
    )
    hub.commit("alice")
    assert "eve" in hub.members()
    everyone_commits(hub)


# --- the Delivery Service's public view -----------------------------------------------------


def test_public_group_follows(cs: int) -> None:
    hub = Hub(cs, WireFormat.mls_public_message)
    hub.create("alice", extensions=(hub.external_senders(),))
    assert hub.public is not None
    hub.add("alice", ["bob", "carol"], force_path=True)
    # A second observer joins late from a GroupInfo without the tree.
    g = hub.group("bob")
    late = PublicGroup.from_group_info(
        g.group_info(with_ratchet_tree=False), ratchet_tree=g.export_ratchet_tree()
    )
    messages: list[bytes] = []
    messages.append(hub.propose("bob", lambda g: g.propose_update()))
    messages.append(hub.commit("carol").commit)
    messages.append(hub.external_join("dave", via="carol"))
    gi = hub.group("alice").group_info()
    ext = external_proposal(
        gi, Proposal(Remove(hub.leaf("carol"))), hub.ds_signature_private_key, 0
    )
    hub.deliver_proposal(ext)
    messages.append(ext)
    messages.append(hub.commit("dave").commit)
    messages.append(hub.add("alice", ["eve"]).commit)
    for m in messages:
        event = late.process(m)
        if isinstance(event, PublicStagedCommit):
            late.merge(event)
    assert late.context == hub.public.context == hub.group("eve").context
    assert late.members() == hub.group("eve").members()


# --- random walk ----------------------------------------------------------------------------

NAMES = [f"c{i}" for i in range(8)]


@pytest.mark.parametrize("reload", [False, True], ids=["live", "reloaded"])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_walk(wire: WireFormat, seed: int, reload: bool) -> None:
    """With ``reload``, every member's state is saved and restored after every step."""
    rng = random.Random(seed)
    hub = Hub(1, wire, reload=reload)
    hub.create("c0")
    in_flight: list[Sent] = []
    counts: dict[str, int] = {}
    delivered = 0
    for _ in range(60):
        members = hub.members()
        outside = [n for n in NAMES if n not in members]
        actions = ["empty", "update", "app", "app"]
        if outside:
            actions += ["add", "add", "external_join"]
        if len(members) > 2:
            actions += ["remove", "remove", "resync"]
        action = rng.choice(actions)
        counts[action] = counts.get(action, 0) + 1
        actor = rng.choice(members)
        if action == "empty":
            hub.commit(actor, force_path=rng.random() < 0.5)
        elif action == "update" and len(members) > 1:
            hub.propose(actor, lambda g: g.propose_update())
            hub.commit(rng.choice([m for m in members if m != actor]))
        elif action == "add":
            joiners = rng.sample(outside, k=min(len(outside), rng.randint(1, 3)))
            hub.add(actor, joiners, tree_out_of_band=rng.random() < 0.3)
        elif action == "remove":
            victim = rng.choice([m for m in members if m != actor])
            proposer = rng.choice([m for m in members if m != victim])
            if rng.random() < 0.5:
                hub.commit(actor, [Proposal(Remove(hub.leaf(victim)))])
            else:
                hub.propose(proposer, lambda g, v=victim: g.propose_remove(hub.leaf(v)))
                hub.commit(rng.choice([m for m in members if m != victim]))
        elif action == "external_join":
            hub.external_join(rng.choice(outside), tree_out_of_band=rng.random() < 0.3)
        elif action == "resync":
            hub.external_join(actor, resync=True)
        elif action == "app":
            in_flight.append(hub.send(actor, rng.randbytes(rng.randint(0, 40))))
        # Deliver some in-flight application messages, in any order, up to 3 epochs late.
        rng.shuffle(in_flight)
        epoch = hub.group(hub.members()[0]).epoch
        keep = []
        for s in in_flight:
            if epoch - s.epoch > 3:
                continue  # dropped: too late by policy
            if rng.random() < 0.5 or epoch - s.epoch == 3:
                delivered += hub.deliver(s)
            else:
                keep.append(s)
        in_flight = keep
    assert hub.steps > 60
    assert {"add", "remove", "external_join", "resync", "update", "app", "empty"} <= set(counts)
    print(f"random walk {seed}: {counts}, {delivered} deliveries, final {hub.members()}")
