"""Live interop with mls-rs (awslabs/mls-rs) through its UniFFI Python binding, suite 0x0001.

mls-rs and mlspy clients share groups and pass each other real wire bytes: KeyPackages,
Welcomes (with the ratchet tree inside or out of band), PublicMessage / PrivateMessage commits
and proposals, and PrivateMessage application data. The binding exposes no epoch, roster or
epoch authenticator, so agreement is checked through ``MLS-Exporter`` (RFC 9420 §8.5) after
every epoch change, by decrypting each other's application messages, and by reading the epoch
from message headers. See docs/interop-mls-rs.md for the binding's API and its fixed choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

mls_rs = pytest.importorskip(
    "mls_rs_uniffi",
    reason="mls-rs binding not installed: pip install -e '.[interop]' "
    "(PyPI agentvault-mls-rs-uniffi)",
)

from mlspy.errors import MLSError  # noqa: E402
from mlspy.group import (  # noqa: E402
    ApplicationMessage,
    CommitOutput,
    Group,
    GroupConfig,
    KeyPackageBundle,
    ProposalReceived,
    SigningIdentity,
    StagedCommit,
    create_key_package,
)
from mlspy.messages import Add, MLSMessage, Proposal, Remove, WireFormat  # noqa: E402

RS_SUITE = mls_rs.CipherSuite.CURVE25519_AES128  # MLS suite 0x0001, the binding's only one
SUITE = 0x0001
GROUP_ID = b"mlspy-mls-rs-interop"
EXPORTS = ((b"interop", b"context", 32), (b"", b"", 1), (b"long", b"\x00" * 40, 100))


# --- Plumbing -------------------------------------------------------------------------------


def rs_client(name: bytes, *, tree_in_welcome: bool = True) -> mls_rs.Client:
    """An mls-rs client with a basic credential and its own in-memory store."""
    storage = mls_rs.client_config_default().group_state_storage
    config = mls_rs.ClientConfig(
        group_state_storage=storage, use_ratchet_tree_extension=tree_in_welcome
    )
    return mls_rs.Client(name, mls_rs.generate_signature_keypair(RS_SUITE), config)


def rs_message(data: bytes) -> mls_rs.Message:
    return mls_rs.Message.from_bytes(data)


def header_epoch(message: bytes) -> int:
    """The epoch of an MLSMessage carrying a PublicMessage or PrivateMessage (§6)."""
    decoded = MLSMessage.decode(message)
    framed = decoded.public_message or decoded.private_message
    assert framed is not None, "not a framed message"
    return framed.content.epoch if decoded.public_message else framed.epoch


def wire_format(message: bytes) -> WireFormat:
    return WireFormat(int.from_bytes(message[2:4], "big"))


@dataclass
class Hub:
    """An in-memory Delivery Service: every member of the group, mlspy or mls-rs, by name.

    Handshakes go to every member, the sender included (the echo applies its own commit)."""

    py: dict[bytes, Group] = field(default_factory=dict)
    rs: dict[bytes, mls_rs.Group] = field(default_factory=dict)
    rs_clients: dict[bytes, mls_rs.Client] = field(default_factory=dict)
    py_config: GroupConfig = field(default_factory=GroupConfig)
    bundles: dict[bytes, KeyPackageBundle] = field(default_factory=dict)
    seen_exports: set[bytes] = field(default_factory=set)

    # Creating members

    def rs_create(self, name: bytes, *, tree_in_welcome: bool = True) -> None:
        client = rs_client(name, tree_in_welcome=tree_in_welcome)
        self.rs_clients[name] = client
        self.rs[name] = client.create_group(GROUP_ID)

    def py_create(self, name: bytes) -> None:
        identity = SigningIdentity.generate(name, SUITE)
        self.py[name] = Group.create(identity, group_id=GROUP_ID, config=self.py_config)

    def rs_key_package(self, name: bytes, *, tree_in_welcome: bool = True) -> bytes:
        client = rs_client(name, tree_in_welcome=tree_in_welcome)
        self.rs_clients[name] = client
        kp = client.generate_key_package_message().to_bytes()
        assert kp[:4] == b"\x00\x01\x00\x05"
        return kp

    def py_key_package(self, name: bytes) -> bytes:
        bundle = create_key_package(SigningIdentity.generate(name, SUITE))
        self.bundles[name] = bundle
        return MLSMessage.wrap(bundle.key_package).encode()

    def rs_join(self, name: bytes, welcome: bytes, tree: bytes | None = None) -> None:
        ratchet_tree = mls_rs.RatchetTree(bytes=tree) if tree is not None else None
        joined = self.rs_clients[name].join_group(ratchet_tree, rs_message(welcome))
        self.rs[name] = joined.group
        self.check_in_sync(new_epoch=False)

    def py_join(self, name: bytes, welcome: bytes, tree: bytes | None = None) -> None:
        bundle = self.bundles.pop(name)
        self.py[name] = Group.join(welcome, bundle, ratchet_tree=tree, config=self.py_config)
        self.check_in_sync(new_epoch=False)

    # Committing

    def rs_commit(self, out: mls_rs.CommitOutput, by: bytes) -> bytes:
        """Deliver an mls-rs CommitOutput's commit to everyone and check they agree."""
        commit = out.commit_message.to_bytes()
        assert wire_format(commit) == WireFormat.mls_public_message
        self.deliver_commit(commit, by)
        return commit

    def py_commit(
        self, by: bytes, proposals: list[Proposal] | None = None, **kw: Any
    ) -> CommitOutput:
        out = self.py[by].commit(proposals or [], **kw)
        assert wire_format(out.commit) == self.py_config.handshake_wire_format
        self.deliver_commit(out.commit, by)
        return out

    def deliver_commit(self, commit: bytes, by: bytes) -> set[bytes]:
        """Every member processes ``commit``; removed members leave the hub. Then check sync."""
        epoch = header_epoch(commit)
        removed: set[bytes] = set()
        for name, group in list(self.py.items()):
            event = group.process(commit)
            assert isinstance(event, StagedCommit)
            assert event.own == (name == by)
            group.merge_staged_commit(event)  # our own echo too: nothing merges by itself
            if event.self_removed:
                assert not group.active
                removed.add(name)
            else:
                assert group.epoch == epoch + 1
        for name, rs_group in list(self.rs.items()):
            received = rs_group.process_incoming_message(rs_message(commit))
            assert received.is_commit()
            if received.effect.is_removed():
                removed.add(name)
            else:
                assert received.effect.is_new_epoch()
        for name in removed:
            self.py.pop(name, None)
            self.rs.pop(name, None)
        self.check_in_sync()
        return removed

    def deliver_proposal(self, proposal: bytes, by: bytes) -> None:
        """Every other member caches the proposal (the proposer already has it)."""
        for name, group in self.py.items():
            if name != by:
                assert isinstance(group.process(proposal), ProposalReceived)
        for name, rs_group in self.rs.items():
            if name != by:
                assert rs_group.process_incoming_message(
                    rs_message(proposal)
                ).is_received_proposal()

    # Checking

    def exports(self) -> dict[bytes, tuple[bytes, ...]]:
        out: dict[bytes, tuple[bytes, ...]] = {}
        for name, group in self.py.items():
            out[name] = tuple(group.export_secret(*args) for args in EXPORTS)
        for name, rs_group in self.rs.items():
            out[name] = tuple(rs_group.export_secret(*args) for args in EXPORTS)
        return out

    def check_in_sync(self, *, new_epoch: bool = True) -> None:
        """All members export the same secrets, new ones if the epoch just changed."""
        exports = self.exports()
        values = set(exports.values())
        assert len(values) == 1, (
            f"exporter mismatch: { {n: e[0].hex() for n, e in exports.items()} }"
        )
        (value,) = values
        assert [len(v) for v in value] == [n for *_, n in EXPORTS]
        if new_epoch:
            assert value[0] not in self.seen_exports, "exporter secret did not change"
            self.seen_exports.add(value[0])
        assert len({g.epoch for g in self.py.values()}) <= 1

    def send_application(self, by: bytes, data: bytes) -> bytes:
        if by in self.py:
            message = self.py[by].encrypt_application(data)
        else:
            message = self.rs[by].encrypt_application_message(data).to_bytes()
        assert wire_format(message) == WireFormat.mls_private_message
        return message

    def receive_application(self, by: bytes, message: bytes, data: bytes) -> None:
        """Every member but the sender decrypts ``message`` to ``data``."""
        for name, group in self.py.items():
            if name == by:
                continue
            event = group.process(message)
            assert isinstance(event, ApplicationMessage)
            assert event.data == data
            assert event.epoch == group.epoch
            assert event.sender.leaf_index == self.py_leaf_of(name, by)
        for name, rs_group in self.rs.items():
            if name == by:
                continue
            received = rs_group.process_incoming_message(rs_message(message))
            assert received.is_application_message()
            assert received.data == data
            if by in self.rs:
                assert received.sender == self.rs_clients[by].signing_identity()

    def chat(self, by: bytes, data: bytes) -> None:
        self.receive_application(by, self.send_application(by, data), data)

    def everyone_chats(self) -> None:
        for name in [*self.py, *self.rs]:
            self.chat(name, b"epoch hello from " + name)

    # Looking up members

    def py_leaf_of(self, viewer: bytes, member: bytes) -> int:
        """The leaf index of ``member`` as the mlspy member ``viewer`` sees the roster."""
        (leaf,) = [
            m.leaf_index for m in self.py[viewer].members() if m.credential.identity == member
        ]
        return int(leaf)

    def rs_identity_of(self, member: bytes) -> mls_rs.SigningIdentity:
        """A SigningIdentity for mls-rs's remove_members (matched by credential identity)."""
        client = self.rs_clients.get(member) or rs_client(member)
        return client.signing_identity()


def rs_group_with_py_member(*, tree_in_welcome: bool = True) -> Hub:
    """mls-rs "alice" creates the group and adds mlspy "bob" from an mlspy KeyPackage."""
    hub = Hub()
    hub.rs_create(b"alice", tree_in_welcome=tree_in_welcome)
    hub.check_in_sync()
    out = hub.rs[b"alice"].add_members([rs_message(hub.py_key_package(b"bob"))])
    hub.rs_commit(out, by=b"alice")
    tree = None
    if not tree_in_welcome:
        assert out.ratchet_tree is not None
        tree = out.ratchet_tree.bytes
    hub.py_join(b"bob", out.welcome_message.to_bytes(), tree)
    return hub


# --- 1. mlspy joins mls-rs groups ---------------------------------------------------------------


def test_mlspy_joins_rs_group_tree_in_welcome() -> None:
    """An mlspy KeyPackage is accepted by mls-rs; mlspy joins from the ratchet_tree extension."""
    hub = rs_group_with_py_member(tree_in_welcome=True)
    bob = hub.py[b"bob"]
    assert bob.epoch == 1
    assert [m.credential.identity for m in bob.members()] == [b"alice", b"bob"]
    assert int(bob.own_leaf_index) == 1
    hub.everyone_chats()


def test_mlspy_joins_rs_group_tree_out_of_band() -> None:
    """mls-rs leaves the tree out of its Welcome; mlspy needs and uses the exported tree."""
    hub = Hub()
    hub.rs_create(b"alice", tree_in_welcome=False)
    out = hub.rs[b"alice"].add_members([rs_message(hub.py_key_package(b"bob"))])
    hub.rs_commit(out, by=b"alice")
    welcome = out.welcome_message.to_bytes()
    tree = out.ratchet_tree.bytes
    assert tree == hub.rs[b"alice"].export_tree().bytes
    with pytest.raises(MLSError):  # the Welcome really carries no tree
        Group.join(welcome, hub.bundles[b"bob"])
    hub.py_join(b"bob", welcome, tree)
    assert hub.py[b"bob"].export_ratchet_tree() == tree
    hub.everyone_chats()


# --- 2. Application messages --------------------------------------------------------------------


def test_application_messages_both_ways() -> None:
    """Several messages each way, interleaved, out of order and of various sizes."""
    hub = rs_group_with_py_member()
    alice, bob = hub.rs[b"alice"], hub.py[b"bob"]
    for i in range(5):
        data = f"rs->py {i}".encode() * (i + 1)
        hub.receive_application(b"alice", hub.send_application(b"alice", data), data)
        data = f"py->rs {i}".encode() * (i + 1)
        hub.receive_application(b"bob", hub.send_application(b"bob", data), data)
    # Empty, and large enough to span several AEAD blocks.
    for data in (b"", bytes(range(256)) * 20):
        hub.chat(b"alice", data)
        hub.chat(b"bob", data)
    # Out of order: each side decrypts later generations first (secret tree skipping, §9.4).
    from_rs = [alice.encrypt_application_message(b"rs %d" % i).to_bytes() for i in range(4)]
    from_py = [bob.encrypt_application(b"py %d" % i) for i in range(4)]
    for i in (3, 0, 2, 1):
        event = bob.process(from_rs[i])
        assert isinstance(event, ApplicationMessage) and event.data == b"rs %d" % i
        assert alice.process_incoming_message(rs_message(from_py[i])).data == b"py %d" % i
    # A replayed message is refused by both (its key was deleted).
    with pytest.raises(MLSError):
        bob.process(from_rs[0])
    with pytest.raises(mls_rs.Error):
        alice.process_incoming_message(rs_message(from_py[0]))


# --- 3. mlspy commits in a mixed group ----------------------------------------------------------


def test_mlspy_commits_add_empty_and_remove() -> None:
    """mlspy adds an mls-rs client (Welcome by mlspy, tree inside), makes empty commits with an
    UpdatePath, and removes it; mls-rs members process every commit."""
    hub = rs_group_with_py_member()
    kp = hub.rs_key_package(b"carol")
    out = hub.py_commit(b"bob", [Proposal(Add(MLSMessage.decode(kp).key_package))])
    assert out.welcome is not None
    assert MLSMessage.decode(out.commit).public_message.content.commit.path is None
    hub.rs_join(b"carol", out.welcome)  # the tree is in mlspy's Welcome by default
    hub.everyone_chats()

    out = hub.py_commit(b"bob", force_path=True)
    assert MLSMessage.decode(out.commit).public_message.content.commit.path is not None
    hub.everyone_chats()
    out = hub.py_commit(b"bob")  # no proposals: the path is required (§12.4)
    assert MLSMessage.decode(out.commit).public_message.content.commit.path is not None
    hub.everyone_chats()

    hub.py_commit(b"bob", [Proposal(Remove(hub.py_leaf_of(b"bob", b"carol")))])
    assert set(hub.rs) == {b"alice"}  # carol saw her removal (CommitEffect REMOVED)
    hub.everyone_chats()


def test_mlspy_created_group_with_rs_members() -> None:
    """mlspy creates the group and adds two mls-rs clients in one commit (one Welcome), then one
    more with the tree out of band; the mls-rs members then commit and mlspy follows."""
    hub = Hub()
    hub.py_create(b"alice")
    hub.check_in_sync()
    kps = [MLSMessage.decode(hub.rs_key_package(n)).key_package for n in (b"bob", b"carol")]
    out = hub.py_commit(b"alice", [Proposal(Add(kp)) for kp in kps])
    hub.rs_join(b"bob", out.welcome)
    hub.rs_join(b"carol", out.welcome)
    hub.everyone_chats()

    kp = MLSMessage.decode(hub.rs_key_package(b"dave", tree_in_welcome=False)).key_package
    out = hub.py_commit(b"alice", [Proposal(Add(kp))], ratchet_tree_in_welcome=False)
    with pytest.raises(mls_rs.Error, match="ratchet tree"):
        hub.rs_clients[b"dave"].join_group(None, rs_message(out.welcome))
    hub.rs_join(b"dave", out.welcome, out.ratchet_tree)
    hub.everyone_chats()

    hub.rs_commit(hub.rs[b"carol"].commit(), by=b"carol")
    hub.rs_commit(hub.rs[b"dave"].remove_members([hub.rs_identity_of(b"bob")]), by=b"dave")
    hub.py_commit(b"alice", [Proposal(Remove(hub.py_leaf_of(b"alice", b"carol")))])
    assert set(hub.rs) == {b"dave"}
    hub.everyone_chats()


# --- 4. mls-rs commits processed by mlspy -------------------------------------------------------


def test_rs_commits_add_empty_update_and_remove() -> None:
    """mls-rs adds mls-rs and mlspy clients, makes empty (UpdatePath) commits, and removes
    members, mlspy ones included; mlspy members process every commit."""
    hub = rs_group_with_py_member()

    out = hub.rs[b"alice"].add_members([rs_message(hub.rs_key_package(b"carol"))])
    hub.rs_commit(out, by=b"alice")
    hub.rs_join(b"carol", out.welcome_message.to_bytes())
    hub.everyone_chats()

    out = hub.rs[b"carol"].add_members([rs_message(hub.py_key_package(b"dave"))])
    commit = hub.rs_commit(out, by=b"carol")
    assert MLSMessage.decode(commit).public_message.content.commit.path is None  # add-only
    hub.py_join(b"dave", out.welcome_message.to_bytes())
    assert [m.credential.identity for m in hub.py[b"dave"].members()] == [
        b"alice",
        b"bob",
        b"carol",
        b"dave",
    ]
    hub.everyone_chats()

    # Empty commits carry an UpdatePath: the committer's leaf is updated (§12.4.2).
    before = {m.leaf_index: m.encryption_key for m in hub.py[b"bob"].members()}
    commit = hub.rs_commit(hub.rs[b"alice"].commit(), by=b"alice")
    assert MLSMessage.decode(commit).public_message.content.commit.path is not None
    after = {m.leaf_index: m.encryption_key for m in hub.py[b"bob"].members()}
    assert [i for i in before if before[i] != after[i]] == [0]
    hub.rs_commit(hub.rs[b"carol"].commit(), by=b"carol")
    hub.everyone_chats()

    # Remove an mls-rs member, then an mlspy member (who sees its own removal).
    hub.rs_commit(hub.rs[b"alice"].remove_members([hub.rs_identity_of(b"carol")]), by=b"alice")
    assert set(hub.rs) == {b"alice"}
    bob = hub.py[b"bob"]
    out = hub.rs[b"alice"].remove_members([hub.rs_identity_of(b"bob")])
    assert hub.deliver_commit(out.commit_message.to_bytes(), by=b"alice") == {b"bob"}
    assert not bob.active
    assert set(hub.py) == {b"dave"}
    assert [m.credential.identity for m in hub.py[b"dave"].members()] == [b"alice", b"dave"]
    hub.everyone_chats()


# --- Proposals by reference, both ways ----------------------------------------------------------


def test_proposals_by_reference_both_ways() -> None:
    """Proposals sent by one implementation and committed (by reference) by the other:
    mls-rs Add -> mlspy commit; mlspy Remove and Update -> mls-rs commit."""
    hub = rs_group_with_py_member()
    alice = hub.rs[b"alice"]

    (proposal,) = alice.propose_add_members([rs_message(hub.py_key_package(b"carol"))])
    hub.deliver_proposal(proposal.to_bytes(), by=b"alice")
    out = hub.py_commit(b"bob")
    commit = MLSMessage.decode(out.commit).public_message.content.commit
    assert [p.reference is not None for p in commit.proposals] == [True]
    hub.py_join(b"carol", out.welcome)
    hub.everyone_chats()

    def bob_key() -> bytes:
        carol = hub.py[b"carol"]
        return carol.tree.leaf(hub.py_leaf_of(b"carol", b"bob")).encryption_key

    old_key = bob_key()
    hub.deliver_proposal(hub.py[b"bob"].propose_update(), by=b"bob")
    hub.rs_commit(alice.commit(), by=b"alice")  # bob must apply his own Update's new key
    assert bob_key() != old_key
    hub.everyone_chats()

    hub.deliver_proposal(
        hub.py[b"carol"].propose_remove(hub.py_leaf_of(b"carol", b"bob")), by=b"carol"
    )
    hub.rs_commit(alice.commit(), by=b"alice")
    assert set(hub.py) == {b"carol"}
    hub.everyone_chats()


# --- 6. Encrypted handshakes ---------------------------------------------------------------------


def test_mlspy_private_message_handshakes() -> None:
    """mlspy sends its commits and proposals as PrivateMessage (padded to 64-byte blocks);
    mls-rs decrypts and applies them (mls-rs always answers with PublicMessage handshakes)."""
    hub = Hub(
        py_config=GroupConfig(
            handshake_wire_format=WireFormat.mls_private_message, padding_block=64
        )
    )
    hub.rs_create(b"alice")
    hub.check_in_sync()
    out = hub.rs[b"alice"].add_members([rs_message(hub.py_key_package(b"bob"))])
    hub.rs_commit(out, by=b"alice")
    hub.py_join(b"bob", out.welcome_message.to_bytes())

    kp = MLSMessage.decode(hub.rs_key_package(b"carol")).key_package
    out = hub.py_commit(b"bob", [Proposal(Add(kp))])
    hub.rs_join(b"carol", out.welcome)
    hub.everyone_chats()
    hub.py_commit(b"bob", force_path=True)
    hub.everyone_chats()
    proposal = hub.py[b"bob"].propose_remove(hub.py_leaf_of(b"bob", b"carol"))
    assert wire_format(proposal) == WireFormat.mls_private_message
    hub.deliver_proposal(proposal, by=b"bob")
    hub.rs_commit(hub.rs[b"alice"].commit(), by=b"alice")
    assert set(hub.rs) == {b"alice"}
    hub.py_commit(b"bob", [Proposal(Remove(hub.py_leaf_of(b"bob", b"alice")))])
    assert not hub.rs and set(hub.py) == {b"bob"}
