"""The stores and the persistence of groups: versions, atomic batches, concurrent handles,
KeyPackage consumption, encryption at rest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlspy.errors import StorageError
from mlspy.group import (
    ApplicationMessage,
    CommitOutput,
    Group,
    KeyPackageBundle,
    SigningIdentity,
    StagedCommit,
    create_key_package,
)
from mlspy.group.serialize import deserialize_state_parts
from mlspy.messages import Add, Proposal
from mlspy.storage import CHECK, GroupStore, MemoryStore, SQLiteStore, Store

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


def _group_of(size: int) -> tuple[Group, list[KeyPackageBundle], CommitOutput]:
    bundles = [create_key_package(SigningIdentity.generate(b"m%d" % i)) for i in range(size - 1)]
    alice = Group.create(SigningIdentity.generate(b"alice"))
    out = alice.commit([Proposal(Add(b.key_package)) for b in bundles])
    alice.merge_pending_commit()
    return alice, bundles, out


@pytest.mark.parametrize("make", STORES, ids=IDS)
def test_application_messages_write_only_the_ratchet_part(
    make: StoreFactory, tmp_path: Path
) -> None:
    groups = GroupStore(make(tmp_path))
    alice, bundles, out = _group_of(20)
    bob = groups.adopt(Group.join(out.welcome or b"", bundles[0]))
    gid = bob.group.group_id
    epoch_key, ratchet_key = f"group/{gid.hex()}", f"ratchets/{gid.hex()}"
    late = alice.encrypt_application(b"sent before the commit")
    commit = alice.commit([], force_path=True)
    alice.merge_pending_commit()
    staged = bob.process(commit.commit)
    assert isinstance(staged, StagedCommit)
    bob.merge_staged_commit(staged)
    epoch_part = groups.store.get(epoch_key)
    assert epoch_part is not None
    for i in range(3):  # both directions, and a late message of the previous epoch
        assert isinstance(bob.process(alice.encrypt_application(b"in %d" % i)), ApplicationMessage)
        received = alice.process(bob.encrypt_application(b"out %d" % i))
        assert isinstance(received, ApplicationMessage) and received.data == b"out %d" % i
    event = bob.process(late)
    assert isinstance(event, ApplicationMessage) and event.data == b"sent before the commit"
    now = groups.store.get(epoch_key)
    ratchets = groups.store.get(ratchet_key)
    assert now is not None and ratchets is not None
    assert now.version == epoch_part.version and now.value == epoch_part.value
    assert len(ratchets.value) * 4 < len(now.value)
    # The two parts restore exactly the live state.
    assert groups.load(gid).group.to_bytes() == bob.group.to_bytes()


def test_state_stored_whole_loads_and_is_then_written_in_parts(tmp_path: Path) -> None:
    groups = GroupStore(SQLiteStore(tmp_path / "s.db"))
    alice, bundles, out = _group_of(3)
    bob = Group.join(out.welcome or b"", bundles[0])
    gid = bob.group_id
    groups.store.write({f"group/{gid.hex()}": (bob.to_bytes(), None)})  # as mlspy 0.1 did
    stored = groups.load(gid)
    assert stored.group.to_bytes() == bob.to_bytes()
    event = stored.process(alice.encrypt_application(b"hello"))
    assert isinstance(event, ApplicationMessage)
    assert groups.store.keys("ratchets/") == [f"ratchets/{gid.hex()}"]
    assert groups.load(gid).group.to_bytes() == stored.group.to_bytes()
    groups.delete_group(gid)
    assert groups.store.keys("") == []


def test_mismatched_parts_are_storage_errors(tmp_path: Path) -> None:
    groups = GroupStore(MemoryStore())
    alice, bundles, out = _group_of(3)
    bob = groups.adopt(Group.join(out.welcome or b"", bundles[0]))
    other = groups.create_group(SigningIdentity.generate(b"carol"))
    gid = bob.group.group_id
    old_ratchets = groups.store.get(f"ratchets/{gid.hex()}")
    assert old_ratchets is not None
    commit = alice.commit([], force_path=True)
    alice.merge_pending_commit()
    staged = bob.process(commit.commit)
    assert isinstance(staged, StagedCommit)
    bob.merge_staged_commit(staged)
    epoch_part = groups.store.get(f"group/{gid.hex()}")
    foreign = groups.store.get(f"ratchets/{other.group.group_id.hex()}")
    assert epoch_part is not None and foreign is not None
    for ratchets, reason in (
        (old_ratchets.value, "no secret tree for epoch 2"),  # a part of an earlier state
        (foreign.value, "another group's ratchets"),
        (old_ratchets.value[:-3], "corrupt"),
        (b"MLSg" + old_ratchets.value[4:], "not a stored mlspy group state part"),
    ):
        with pytest.raises(StorageError, match=reason):
            deserialize_state_parts(epoch_part.value, ratchets)
    groups.store.write({f"ratchets/{gid.hex()}": (None, bob._ratchet_version)})
    with pytest.raises(StorageError, match="no ratchet part"):
        groups.load(gid)


@pytest.mark.parametrize("make", STORES, ids=IDS)
def test_check_entries_require_a_version_and_write_nothing(
    make: StoreFactory, tmp_path: Path
) -> None:
    store = make(tmp_path)
    v = store.write({"a": (b"1", None), "b": (b"2", None)})
    with pytest.raises(StorageError, match="concurrent update of 'a'"):
        store.write({"a": (CHECK, v["a"] + 1), "b": (b"2'", v["b"])})
    out = store.write({"a": (CHECK, v["a"]), "b": (b"2'", v["b"])})
    a, b = store.get("a"), store.get("b")
    assert a is not None and (a.value, a.version) == (b"1", v["a"]) and out["a"] == v["a"]
    assert b is not None and b.value == b"2'" and b.version == out["b"] > v["b"]


@pytest.mark.parametrize("make", STORES, ids=IDS)
def test_a_key_written_again_after_deletion_never_reuses_a_version(
    make: StoreFactory, tmp_path: Path
) -> None:
    store = make(tmp_path)
    first = store.write({"k": (b"old", None)})["k"]
    store.write({"k": (None, first)})
    second = store.write({"k": (b"new", None)})["k"]
    assert second != first
    with pytest.raises(StorageError, match="concurrent update"):
        store.write({"k": (b"stale", first)})


def test_sqlite_store_of_an_older_layout_continues_its_versions(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")
    db.execute(
        "CREATE TABLE blobs (key TEXT PRIMARY KEY, version INTEGER NOT NULL, "
        "value BLOB NOT NULL) WITHOUT ROWID"
    )
    db.execute("INSERT INTO blobs VALUES ('k', 7, x'00')")
    db.commit()
    db.close()
    store = SQLiteStore(tmp_path / "old.db")
    assert store.write({"other": (b"x", None)})["other"] == 8
    assert store.write({"k": (b"y", 7)})["k"] == 9


def test_stale_handle_after_the_group_was_deleted_and_stored_again(tmp_path: Path) -> None:
    """A handle kept across delete_group and a rejoin of the same group id must not write
    its ratchets over the new state (which would then no longer load)."""
    groups = GroupStore(SQLiteStore(tmp_path / "s.db"))
    handle = groups.create_group(SigningIdentity.generate(b"alice"))
    gid = handle.group.group_id
    stale = groups.load(gid)
    newer = groups.load(gid)
    newer.commit()
    newer.merge_pending_commit()
    groups.delete_group(gid)
    groups.adopt(newer.group)  # rejoined: stored again from scratch
    with pytest.raises(StorageError, match="concurrent update"):
        stale.encrypt_application(b"from a stale handle")
    assert groups.load(gid).group.epoch == 1


def test_whole_state_beside_a_stray_ratchet_part_never_reuses_a_generation(
    tmp_path: Path,
) -> None:
    """A state stored whole (by an older mlspy) next to a leftover ratchet part: the first
    write stores both parts, so a reload continues the sending ratchet instead of rewinding."""
    groups = GroupStore(SQLiteStore(tmp_path / "s.db"))
    alice, bundles, out = _group_of(2)
    bob = Group.join(out.welcome or b"", bundles[0])
    stored = groups.adopt(alice)
    gid = alice.group_id
    groups.store.write({f"group/{gid.hex()}": (alice.to_bytes(), stored.version)})
    handle = groups.load(gid)
    first = handle.encrypt_application(b"one")
    second = groups.load(gid).encrypt_application(b"two")
    for message, text in ((first, b"one"), (second, b"two")):
        event = bob.process(message)  # a reused generation would be refused here
        assert isinstance(event, ApplicationMessage) and event.data == text


def test_opening_a_store_does_not_wait_for_another_writer(tmp_path: Path) -> None:
    import sqlite3

    SQLiteStore(tmp_path / "s.db").write({"k": (b"v", None)})
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        store = SQLiteStore(tmp_path / "s.db")
        got = store.get("k")
        assert got is not None and got.value == b"v"
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_the_wal_keeps_no_old_page_images_after_a_write(tmp_path: Path) -> None:
    """Old page images in the WAL hold what a write just replaced (consumed keys, §9.2):
    every write ends with a truncating checkpoint, retried after a reader held one off."""
    import sqlite3

    store = SQLiteStore(tmp_path / "s.db")
    wal = tmp_path / "s.db-wal"
    v = store.write({"k": (b"secret-1" * 100, None)})["k"]
    assert wal.stat().st_size == 0
    reader = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM blobs").fetchall()  # holds a read snapshot
    v = store.write({"k": (b"secret-2" * 100, v)})["k"]
    assert wal.stat().st_size > 0  # the checkpoint could not finish
    reader.execute("COMMIT")
    reader.close()
    store.write({"k": (b"secret-3" * 100, v)})
    assert wal.stat().st_size == 0
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("s.db"))
    assert b"secret-1" not in raw and b"secret-2" not in raw
