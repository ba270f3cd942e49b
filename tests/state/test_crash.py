"""Crash safety: a process killed (SIGKILL) at any write point of a state transition leaves
exactly the old or exactly the new state, can go on with the group, and never reuses a key."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlspy.errors import EpochError, SecretTreeError
from mlspy.group import (
    ApplicationMessage,
    GroupConfig,
    SigningIdentity,
    StagedCommit,
    create_key_package,
)
from mlspy.messages import Add, MLSMessage, Proposal, Remove, WireFormat
from mlspy.storage import GroupStore, SQLiteStore, StoredGroup

WORKER = Path(__file__).resolve().parent / "crash_worker.py"
POINTS = ["begin", "written", "committed", "none"]
# Handshakes as PublicMessage (the default) or encrypted: a received encrypted commit spends a
# handshake key of the old epoch's secret tree, a PublicMessage one spends nothing.
HANDSHAKES = [WireFormat.mls_public_message, WireFormat.mls_private_message]
HANDSHAKE_IDS = ["public", "private"]


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


def _pair(
    tmp: Path, handshake: WireFormat = WireFormat.mls_public_message
) -> tuple[GroupStore, StoredGroup, GroupStore, StoredGroup]:
    """Alice's group with Bob in it, both stored; both use ``handshake`` for handshakes."""
    config = GroupConfig(handshake_wire_format=handshake)
    alice_groups = GroupStore(SQLiteStore(tmp / "alice.db"))
    bob_groups = GroupStore(SQLiteStore(tmp / "bob.db"))
    bob_kp = create_key_package(SigningIdentity.generate(b"bob"))
    bob_groups.add_key_package(bob_kp)
    alice = alice_groups.create_group(SigningIdentity.generate(b"alice"), config=config)
    out = alice.commit([Proposal(Add(bob_kp.key_package))])
    alice.merge_pending_commit()
    bob = bob_groups.join(out.welcome or b"", config=config)
    return alice_groups, alice, bob_groups, bob


def _commit(alice: StoredGroup, handshake: WireFormat, proposals: list[Proposal]) -> bytes:
    """Alice commits and merges; the commit, sent with the wire format ``handshake``."""
    out = alice.commit(proposals)
    assert MLSMessage.decode(out.commit).wire_format == handshake
    alice.merge_pending_commit()
    return out.commit


def _talk(alice: StoredGroup, bob: StoredGroup) -> None:
    """Application messages go through both ways."""
    got = bob.receive(alice.encrypt_application(b"to bob"))
    assert isinstance(got, ApplicationMessage) and got.data == b"to bob"
    got = alice.receive(bob.encrypt_application(b"to alice"))
    assert isinstance(got, ApplicationMessage) and got.data == b"to alice"


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


@pytest.mark.parametrize("handshake", HANDSHAKES, ids=HANDSHAKE_IDS)
@pytest.mark.parametrize("point", POINTS)
def test_killed_while_receiving_a_commit(tmp_path: Path, point: str, handshake: WireFormat) -> None:
    _, alice, bob_groups, bob = _pair(tmp_path, handshake)
    old_epoch = bob.group.epoch
    commit = _commit(alice, handshake, [])
    (tmp_path / "commit").write_bytes(commit)
    _run(tmp_path / "bob.db", "receive", point, tmp_path / "commit", tmp_path / "y")
    after = bob_groups.load(bob.group.group_id)
    if point in ("begin", "written"):  # old state: the commit is delivered again
        assert after.group.epoch == old_epoch
        assert isinstance(after.receive(commit), StagedCommit)
    # Processed and merged in one write: never the old epoch with the commit's key spent.
    assert after.group.epoch == old_epoch + 1 == alice.group.epoch
    assert after.group.epoch_authenticator == alice.group.epoch_authenticator
    _talk(alice, after)
    # The state reached is durable.
    _talk(alice, GroupStore(SQLiteStore(tmp_path / "bob.db")).load(bob.group.group_id))


@pytest.mark.parametrize("handshake", HANDSHAKES, ids=HANDSHAKE_IDS)
@pytest.mark.parametrize("point", POINTS)
def test_killed_while_receiving_our_removal(
    tmp_path: Path, point: str, handshake: WireFormat
) -> None:
    _, alice, bob_groups, bob = _pair(tmp_path, handshake)
    group_id = bob.group.group_id
    commit = _commit(alice, handshake, [Proposal(Remove(bob.group.own_leaf_index))])
    (tmp_path / "commit").write_bytes(commit)
    _run(tmp_path / "bob.db", "receive", point, tmp_path / "commit", tmp_path / "y")
    if point in ("begin", "written"):  # old state: the group is there, the commit comes again
        assert bob_groups.group_ids() == [group_id]
        result = bob_groups.load(group_id).receive(commit)
        assert isinstance(result, StagedCommit) and result.self_removed
    # The commit that removes us deletes the group in the same write.
    assert bob_groups.group_ids() == []
    assert bob_groups.store.keys("") == []


@pytest.mark.parametrize("handshake", HANDSHAKES, ids=HANDSHAKE_IDS)
def test_killed_between_processing_and_merging_in_two_writes(
    tmp_path: Path, handshake: WireFormat
) -> None:
    """The old sequence (process, then merge: two writes), killed once the first write is
    durable. With encrypted handshakes that write holds the old epoch with the commit's
    handshake key spent: the redelivered commit is refused and the member is stuck in the old
    epoch, which is why :meth:`StoredGroup.receive` does both in one write."""
    _, alice, bob_groups, bob = _pair(tmp_path, handshake)
    old_epoch = bob.group.epoch
    commit = _commit(alice, handshake, [])
    (tmp_path / "commit").write_bytes(commit)
    _run(
        tmp_path / "bob.db", "receive_two_writes", "committed", tmp_path / "commit", tmp_path / "y"
    )
    after = bob_groups.load(bob.group.group_id)
    assert after.group.epoch == old_epoch  # killed after the first write, before the merge
    if handshake == WireFormat.mls_private_message:
        with pytest.raises(SecretTreeError):
            after.receive(commit)
        # Wedged: still in the old epoch, where the group's new messages cannot be read.
        assert after.group.epoch == old_epoch
        with pytest.raises(EpochError):
            after.receive(alice.encrypt_application(b"lost"))
    else:  # a PublicMessage commit spends no key: delivering it again recovers
        assert isinstance(after.receive(commit), StagedCommit)
        assert after.group.epoch_authenticator == alice.group.epoch_authenticator
        _talk(alice, after)


@pytest.mark.parametrize("point", POINTS)
def test_killed_while_receiving_a_message_with_an_event(tmp_path: Path, point: str) -> None:
    """The ratchet step of a received message and the write made with it (``also_write``, e.g.
    the application's inbox entry) are durable together or not at all."""
    _, alice, _, bob = _pair(tmp_path)
    message = alice.encrypt_application(b"read me once")
    (tmp_path / "message").write_bytes(message)
    _run(tmp_path / "bob.db", "receive_event", point, tmp_path / "message", tmp_path / "y")
    groups = GroupStore(SQLiteStore(tmp_path / "bob.db"))
    after = groups.load(bob.group.group_id)
    event = groups.store.get("inbox/x")
    if point in ("begin", "written"):  # neither: the message is received again
        assert event is None
        got = after.receive(message, also_write=lambda _: {"inbox/x": (b"event", None)})
        assert isinstance(got, ApplicationMessage) and got.data == b"read me once"
        event = groups.store.get("inbox/x")
    # Both: the event is stored and the message's key is spent.
    assert event is not None and event.value == b"event"
    reloaded = GroupStore(SQLiteStore(tmp_path / "bob.db")).load(bob.group.group_id)
    with pytest.raises(SecretTreeError):
        reloaded.receive(message)
    assert isinstance(reloaded.receive(alice.encrypt_application(b"next")), ApplicationMessage)
