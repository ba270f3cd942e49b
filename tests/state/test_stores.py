"""The stores and the persistence of groups: versions, atomic batches, concurrent handles,
KeyPackage consumption, encryption at rest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlspy.errors import StorageError
from mlspy.group import ApplicationMessage, SigningIdentity, StagedCommit, create_key_package
from mlspy.messages import Add, Proposal
from mlspy.storage import GroupStore, MemoryStore, SQLiteStore, Store

StoreFactory = Callable[[Path], Store]
STORES: list[StoreFactory] = [
    lambda _: MemoryStore(),
    lambda p: SQLiteStore(p / "state.db"),
    lambda p: SQLiteStore(p / "state.db", encryption_key=b"k" * 32),
]
IDS = ["memory", "sqlite", "sqlite-encrypted"]


@pytest.mark.parametrize("make", STORES, ids=IDS)
def test_versions_and_atomic_batches(make: StoreFactory, tmp_path: Path) -> None:
    store = make(tmp_path)
    assert store.write({"a": (b"1", None), "b": (b"2", None)}) == {"a": 1, "b": 1}
    got = store.get("a")
    assert got is not None and (got.value, got.version) == (b"1", 1)
    # A batch with one stale expectation writes nothing.
    with pytest.raises(StorageError, match="concurrent update of 'b'"):
        store.write({"a": (b"1'", 1), "b": (b"2'", None)})
    got = store.get("a")
    assert got is not None and got.value == b"1"
    store.write({"a": (None, 1)})
    assert store.get("a") is None
    assert store.keys("") == ["b"]


def test_encryption_at_rest(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", encryption_key=b"k" * 32)
    store.write({"group/x": (b"secret state", None)})
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("s.db"))
    assert b"secret state" not in raw
    with pytest.raises(StorageError, match="decrypt"):
        SQLiteStore(tmp_path / "s.db", encryption_key=b"x" * 32).get("group/x")
    assert SQLiteStore(tmp_path / "s.db", encryption_key=b"k" * 32).get("group/x") is not None


@pytest.mark.parametrize("make", STORES, ids=IDS)
def test_group_life_in_a_store(make: StoreFactory, tmp_path: Path) -> None:
    alice_store = GroupStore(make(tmp_path))
    bob_store = GroupStore(MemoryStore())
    bob = SigningIdentity.generate(b"bob")
    kp, last_resort = create_key_package(bob), create_key_package(bob, last_resort=True)
    bob_store.add_key_package(kp)
    bob_store.add_key_package(last_resort)
    alice = alice_store.create_group(SigningIdentity.generate(b"alice"))
    out = alice.commit([Proposal(Add(kp.key_package))])
    alice.merge_pending_commit()
    joined = bob_store.join(out.welcome or b"")
    # The consumed KeyPackage is gone from the store; the last-resort one stays.
    assert [b.ref() for b in bob_store.key_packages()] == [last_resort.ref()]
    message = alice.encrypt_application(b"durable before it leaves")
    event = joined.process(message)
    assert isinstance(event, ApplicationMessage)
    # Reload both from their stores: the state continues.
    alice2 = alice_store.load(alice.group.group_id)
    bob2 = bob_store.load(joined.group.group_id)
    out = bob2.commit()
    staged = alice2.process(out.commit)
    assert isinstance(staged, StagedCommit)
    alice2.merge_staged_commit(staged)
    bob2.merge_pending_commit()
    assert alice2.group.epoch_authenticator == bob2.group.epoch_authenticator


def test_concurrent_handles_are_detected(tmp_path: Path) -> None:
    groups = GroupStore(SQLiteStore(tmp_path / "s.db"))
    stored = groups.create_group(SigningIdentity.generate(b"alice"))
    first = groups.load(stored.group.group_id)
    second = groups.load(stored.group.group_id)
    first.encrypt_application(b"one")
    with pytest.raises(StorageError, match="concurrent update"):
        second.encrypt_application(b"two")
    # The losing handle was reloaded from the store and can go on.
    assert second.version == first.version
    second.encrypt_application(b"three")
