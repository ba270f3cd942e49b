"""Crash safety: a process killed (SIGKILL) at any write point of a state transition leaves
exactly the old or exactly the new state, can go on with the group, and never reuses a key."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlspy.errors import SecretTreeError
from mlspy.group import ApplicationMessage, SigningIdentity, StagedCommit, create_key_package
from mlspy.messages import Add, Proposal
from mlspy.storage import GroupStore, SQLiteStore, StoredGroup

WORKER = Path(__file__).resolve().parent / "crash_worker.py"
POINTS = ["begin", "written", "committed", "none"]


def _run(db: Path, operation: str, point: str, inp: Path, out: Path) -> int:
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(db), operation, point, str(inp), str(out)],
        capture_output=True,
        timeout=60,
    )
    if point == "none":
        assert proc.returncode == 0, proc.stderr.decode()
    else:
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    return proc.returncode


def _pair(tmp: Path) -> tuple[GroupStore, StoredGroup, GroupStore, StoredGroup]:
    alice_groups = GroupStore(SQLiteStore(tmp / "alice.db"))
    bob_groups = GroupStore(SQLiteStore(tmp / "bob.db"))
    bob_kp = create_key_package(SigningIdentity.generate(b"bob"))
    bob_groups.add_key_package(bob_kp)
    alice = alice_groups.create_group(SigningIdentity.generate(b"alice"))
    out = alice.commit([Proposal(Add(bob_kp.key_package))])
    alice.merge_pending_commit()
    bob = bob_groups.join(out.welcome or b"")
    return alice_groups, alice, bob_groups, bob


@pytest.mark.parametrize("point", POINTS)
def test_killed_while_merging_a_commit(tmp_path: Path, point: str) -> None:
    alice_groups, alice, _, bob = _pair(tmp_path)
    out = alice.commit()
    old_epoch = alice.group.epoch
    _run(tmp_path / "alice.db", "merge", point, tmp_path / "x", tmp_path / "y")
    after = alice_groups.load(alice.group.group_id)
    if after.group.pending_commit is not None:  # old state: merge again
        assert after.group.epoch == old_epoch and point in ("begin", "written")
        after.merge_pending_commit()
    assert after.group.epoch == old_epoch + 1
    staged = bob.process(out.commit)
    assert isinstance(staged, StagedCommit)
    bob.merge_staged_commit(staged)
    assert after.group.epoch_authenticator == bob.group.epoch_authenticator
    assert isinstance(bob.process(after.encrypt_application(b"go on")), ApplicationMessage)


@pytest.mark.parametrize("point", POINTS)
def test_killed_while_joining(tmp_path: Path, point: str) -> None:
    alice_groups = GroupStore(SQLiteStore(tmp_path / "alice.db"))
    bob_groups = GroupStore(SQLiteStore(tmp_path / "bob.db"))
    kp = create_key_package(SigningIdentity.generate(b"bob"))
    bob_groups.add_key_package(kp)
    alice = alice_groups.create_group(SigningIdentity.generate(b"alice"))
    out = alice.commit([Proposal(Add(kp.key_package))])
    alice.merge_pending_commit()
    (tmp_path / "welcome").write_bytes(out.welcome or b"")
    _run(tmp_path / "bob.db", "join", point, tmp_path / "welcome", tmp_path / "y")
    groups = bob_groups.group_ids()
    kps = bob_groups.key_packages()
    # Exactly old (KeyPackage kept, no group) or new (group stored, KeyPackage consumed).
    assert (groups, len(kps)) in (([], 1), ([alice.group.group_id], 0))
    bob = bob_groups.load(alice.group.group_id) if groups else bob_groups.join(out.welcome or b"")
    assert bob_groups.key_packages() == []
    assert isinstance(bob.process(alice.encrypt_application(b"hi")), ApplicationMessage)


@pytest.mark.parametrize("point", POINTS)
def test_killed_while_encrypting_never_reuses_a_nonce(tmp_path: Path, point: str) -> None:
    alice_groups, alice, _, bob = _pair(tmp_path)
    sent = tmp_path / "sent"
    _run(tmp_path / "alice.db", "encrypt", point, tmp_path / "x", sent)
    # A message leaves only after its ratchet step is durable.
    assert sent.exists() == (point == "none")
    after = alice_groups.load(alice.group.group_id)
    fresh = after.encrypt_application(b"after the crash")
    if sent.exists():
        assert isinstance(bob.process(sent.read_bytes()), ApplicationMessage)
    # Had the restarted sender reused a generation, bob would reject this as already used.
    event = bob.process(fresh)
    assert isinstance(event, ApplicationMessage) and event.data == b"after the crash"


@pytest.mark.parametrize("point", POINTS)
def test_killed_while_decrypting(tmp_path: Path, point: str) -> None:
    _, alice, bob_groups, bob = _pair(tmp_path)
    message = alice.encrypt_application(b"read me once")
    (tmp_path / "message").write_bytes(message)
    _run(tmp_path / "bob.db", "decrypt", point, tmp_path / "message", tmp_path / "y")
    after = bob_groups.load(bob.group.group_id)
    if point in ("begin", "written"):  # old state: the key is still there
        event = after.process(message)
        assert isinstance(event, ApplicationMessage)
    # Now consumed, durably: a replay is rejected and the state is unchanged.
    with pytest.raises(SecretTreeError):
        after.process(message)
    assert isinstance(after.process(alice.encrypt_application(b"next")), ApplicationMessage)
