"""Live interop with ts-mls (npm ``ts-mls`` 1.6.4) in the post-quantum suites both support.

A ts-mls member runs in Node (``interop/tsmls/peer.mjs``, installed by this module's set-up
with ``npm ci``); mlspy members share groups with it, passing real wire bytes both ways:
KeyPackages, Welcomes (the ratchet tree inside), commits with and without an UpdatePath, Adds
and Removes by either side, application messages. After every epoch both sides must agree on
the epoch, the epoch authenticator and an ``MLS-Exporter`` secret (RFC 9420 §8.5, §8.7).

Suites: ts-mls's 79-88 (ML-KEM-768, ML-KEM-1024 and X-Wing with Ed25519 or ML-DSA-87;
``mlspy.crypto.pq_suites``). Skipped, with the reason shown, only where Node or npm is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlspy.crypto import CipherSuite
from mlspy.crypto.pq_suites import TS_MLS_SUITES
from mlspy.group import ApplicationMessage, Group, SigningIdentity, StagedCommit, create_key_package
from mlspy.messages import MLSMessage

PEER_DIR = Path(__file__).resolve().parents[2] / "interop" / "tsmls"
LABEL, CONTEXT, LENGTH = "mlspy ts-mls interop", b"\x01\x02", 32


def _node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            "Node.js and npm are needed for the ts-mls interop tests (apt install nodejs npm)"
        )
    return node


@pytest.fixture(scope="module")
def node() -> str:
    """Node, with ts-mls and its post-quantum peer packages installed (pinned by the lock)."""
    path = _node()
    marker = PEER_DIR / "node_modules" / ".mlspy-installed"
    lock = PEER_DIR / "package-lock.json"
    if not marker.exists() or marker.read_text() != lock.read_text():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PEER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed in {PEER_DIR}:\n{done.stderr[-3000:]}"
        marker.write_text(lock.read_text())
    return path


class Peer:
    """The ts-mls member in its Node process."""

    def __init__(self, node: str) -> None:
        self.proc = subprocess.Popen(
            [node, str(PEER_DIR / "peer.mjs")],
            cwd=PEER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"ts-mls peer died: {self.proc.stderr.read() if self.proc.stderr else ''}"
        answer: dict[str, Any] = json.loads(line)
        assert answer.pop("ok"), f"ts-mls failed {op}: {answer['error']}"
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def peer(node: str) -> Iterator[Peer]:
    p = Peer(node)
    yield p
    p.close()


def _agree(group: Group, peer: Peer) -> None:
    """Same epoch, epoch authenticator and exported secret on both sides."""
    theirs = peer("state", label=LABEL, context=CONTEXT.hex(), length=LENGTH)
    assert theirs["epoch"] == group.epoch
    assert bytes.fromhex(theirs["epoch_authenticator"]) == group.epoch_authenticator
    assert bytes.fromhex(theirs["exporter"]) == group.export_secret(LABEL, CONTEXT, LENGTH)


def _receive(group: Group, message: bytes) -> object:
    event = group.process(message)
    if isinstance(event, StagedCommit):
        group.merge_staged_commit(event)
    return event


def _talk(group: Group, peer: Peer, tag: str) -> None:
    """An application message each way."""
    mine = f"from mlspy {tag}".encode()
    got = peer("process", message=group.encrypt_application(mine).hex())
    assert got == {"kind": "application", "data": mine.hex()}
    theirs = f"from ts-mls {tag}".encode()
    event = _receive(group, bytes.fromhex(peer("send", data=theirs.hex())["message"]))
    assert isinstance(event, ApplicationMessage) and event.data == theirs


@pytest.mark.parametrize("cs", TS_MLS_SUITES, ids=lambda c: CipherSuite(c).name)
def test_a_group_shared_with_ts_mls(cs: int, peer: Peer) -> None:
    # mlspy creates the group and adds the ts-mls member by its KeyPackage.
    alice = Group.create(SigningIdentity.generate(b"alice", cs))
    bob_kp = bytes.fromhex(peer("keypackage", suite=cs, identity="bob")["key_package"])
    out = alice.commit(add=[bob_kp])
    alice.merge_pending_commit()
    assert out.welcome is not None
    peer("join", welcome=out.welcome.hex())
    _agree(alice, peer)
    _talk(alice, peer, "epoch 1")

    # ts-mls commits with an UpdatePath (new node keys derived as ts-mls derives them).
    event = _receive(alice, bytes.fromhex(peer("commit")["commit"]))
    assert isinstance(event, StagedCommit) and alice.epoch == 2
    _agree(alice, peer)
    # mlspy commits with an UpdatePath; ts-mls decrypts its path secret.
    out = alice.commit(force_path=True)
    alice.merge_pending_commit()
    assert peer("process", message=out.commit.hex())["kind"] == "commit"
    _agree(alice, peer)
    _talk(alice, peer, "epoch 3")

    # ts-mls adds an mlspy member, who joins from ts-mls's Welcome.
    carol_bundle = create_key_package(SigningIdentity.generate(b"carol", cs))
    carol_kp = MLSMessage.wrap(carol_bundle.key_package).encode()
    added = peer("add", key_package=carol_kp.hex())
    _receive(alice, bytes.fromhex(added["commit"]))
    carol = Group.join(bytes.fromhex(added["welcome"]), [carol_bundle])
    _agree(alice, peer)
    _agree(carol, peer)
    _talk(carol, peer, "carol")

    # ts-mls removes the mlspy member it added.
    carol_leaf = carol.own_leaf_index
    removal = bytes.fromhex(peer("remove", leaf=carol_leaf)["commit"])
    _receive(alice, removal)
    gone = carol.process(removal)
    assert isinstance(gone, StagedCommit) and gone.self_removed
    _agree(alice, peer)
    _talk(alice, peer, "after carol")

    # mlspy removes the ts-mls member.
    out = alice.commit(remove=[b"bob"])
    alice.merge_pending_commit()
    assert peer("process", message=out.commit.hex())["kind"] == "removed"
    assert [m.identity for m in alice.members()] == [b"alice"]


@pytest.mark.parametrize("cs", TS_MLS_SUITES, ids=lambda c: CipherSuite(c).name)
def test_ts_mls_creates_the_group_and_mlspy_joins(cs: int, peer: Peer) -> None:
    peer("keypackage", suite=cs, identity="bob")
    peer("create", group_id=b"made by ts-mls".hex())
    bundle = create_key_package(SigningIdentity.generate(b"alice", cs))
    added = peer("add", key_package=MLSMessage.wrap(bundle.key_package).encode().hex())
    alice = Group.join(bytes.fromhex(added["welcome"]), [bundle])
    assert alice.group_id == b"made by ts-mls"
    _agree(alice, peer)
    _talk(alice, peer, "in ts-mls's group")
    out = alice.commit(force_path=True)  # our first UpdatePath in a tree ts-mls built
    alice.merge_pending_commit()
    assert peer("process", message=out.commit.hex())["kind"] == "commit"
    _agree(alice, peer)
    event = _receive(alice, bytes.fromhex(peer("commit")["commit"]))
    assert isinstance(event, StagedCommit)
    _agree(alice, peer)
    _talk(alice, peer, "epoch 3")
    # ts-mls removes us.
    gone = alice.process(bytes.fromhex(peer("remove", leaf=alice.own_leaf_index)["commit"]))
    assert isinstance(gone, StagedCommit) and gone.self_removed
