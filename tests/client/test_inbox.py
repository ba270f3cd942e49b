"""The client's inbox: events stored with the change that made them, handed out in order,
kept until acknowledged, numbered with ids that are never reused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspy.client.events import (
    KINDS,
    DeviceAdded,
    DeviceRemoved,
    EpochChanged,
    Event,
    Joined,
    JoinRequest,
    KeysUpdated,
    MemberAdded,
    MemberLeft,
    MemberRemoved,
    Message,
    Removed,
    decode,
    encode,
)
from mlspy.client.inbox import Inbox, Staged
from mlspy.errors import DecodeError, StorageError
from mlspy.storage import MemoryStore, SQLiteStore, Store

# A store, and the same store as a restarted process sees it.
Opener = Callable[[Path], tuple[Store, Callable[[], Store]]]


def _memory(_: Path) -> tuple[Store, Callable[[], Store]]:
    store = MemoryStore()
    return store, lambda: store


def _sqlite(tmp: Path) -> tuple[Store, Callable[[], Store]]:
    return SQLiteStore(tmp / "client.db"), lambda: SQLiteStore(tmp / "client.db")


STORES: list[Opener] = [_memory, _sqlite]
IDS = ["memory", "sqlite"]


def _event(text: str) -> Message:
    return Message(b"group", 3, sender="alice", device="", data=text.encode())


def _t(event: Event) -> str:
    assert isinstance(event, Message)
    return event.text


def _publish(inbox: Inbox, store: Store, *texts: str) -> list[Event]:
    """Store events in one batch, then hand them out (what a state change does)."""
    staged = Staged(inbox)
    store.write(staged.writes([_event(t) for t in texts]))
    staged.done()
    return inbox.unacknowledged()[-len(texts) :]


def _drain(inbox: Inbox) -> list[tuple[int, str]]:
    out = []
    while (event := inbox.get_nowait()) is not None:
        out.append((event.id, _t(event)))
    return out


def test_event_round_trip() -> None:
    events: list[Event] = [
        Message(
            b"\x00group\xff",
            2**40 + 1,
            sender="Zoë 🦊",
            device="laptop",
            data="grüße, 世界 — ✓\n".encode(),
            id=12345678901,
        ),
        Joined(b"g", 0, members=("alice", "Bjørn", "", "卡罗尔"), by="bob"),
        MemberAdded(b"g", 1, user="carol", devices=("", "phone"), by="alice"),
        MemberRemoved(b"g", 2, user="carol", by="alice"),
        MemberLeft(b"g", 2, user="carol", by="bob"),
        DeviceAdded(b"g", 3, user="alice", device="desk", by="alice"),
        DeviceRemoved(b"g", 3, user="alice", device="tablet", by="alice"),
        KeysUpdated(b"g", 4, user="bob", device=""),
        EpochChanged(b"g", 5, members=("alice",), by="alice", device="phone"),
        Removed(b"g", 6, by="alice"),
        JoinRequest(b"g", 6, user="dave"),
    ]
    assert {e.kind for e in events} == set(KINDS)  # every kind, once
    for event in events:
        data = encode(event)
        assert decode(data) == event and type(decode(data)) is type(event)
    assert "grüße, 世界 — ✓\n".encode().hex().encode() in encode(events[0])
    with pytest.raises(DecodeError):
        decode(encode(events[0]) + b"x")
    with pytest.raises(DecodeError):
        decode(b'{"kind": "message", "group_id": "00", "epoch": 1}')  # fields missing
    with pytest.raises(DecodeError):
        decode(b'{"kind": "nonsense", "group_id": "00", "epoch": 1}')


@pytest.mark.parametrize("open_store", STORES, ids=IDS)
def test_ids_increase_and_are_never_reused(tmp_path: Path, open_store: Opener) -> None:
    store, reopen = open_store(tmp_path)
    inbox = Inbox(store)
    writes, numbered = inbox.stage([_event("a"), _event("b")])
    assert [e.id for e in numbered] == [1, 2]
    assert [_t(e) for e in numbered] == ["a", "b"]
    store.write(writes)
    inbox.published(numbered)
    assert [(e.id, _t(e)) for e in _publish(inbox, store, "c")] == [(3, "c")]
    assert _drain(inbox) == [(1, "a"), (2, "b"), (3, "c")]
    for event_id in (1, 2, 3):
        inbox.ack(event_id)
    assert inbox.unacknowledged() == []
    assert store.keys("inbox/") == []
    # The inbox is empty, yet a restarted client goes on from the next id.
    restarted = Inbox(reopen())
    assert _drain(restarted) == []
    _, numbered = restarted.stage([_event("d")])
    assert [e.id for e in numbered] == [4]


@pytest.mark.parametrize("open_store", STORES, ids=IDS)
def test_failed_batch_publishes_nothing_and_its_ids_are_used_again(
    tmp_path: Path, open_store: Opener
) -> None:
    store, reopen = open_store(tmp_path)
    inbox = Inbox(store)
    _publish(inbox, store, "first")
    failed = Staged(inbox)
    # The change's own write expects a version the store does not hold: the batch is refused.
    writes = failed.writes([_event("lost"), _event("lost too")], {"group/x": (b"state", 7)})
    assert len([k for k in writes if k.startswith("inbox/")]) == 2 and "group/x" in writes
    with pytest.raises(StorageError):
        store.write(writes)
    assert [_t(e) for e in inbox.unacknowledged()] == ["first"]
    assert store.get("group/x") is None
    assert _drain(inbox) == [(1, "first")]
    # The next batch gets the ids the failed one did not use.
    assert [(e.id, _t(e)) for e in _publish(inbox, store, "kept")] == [(2, "kept")]
    assert _drain(inbox) == [(2, "kept")]
    assert [(e.id, _t(e)) for e in Inbox(reopen()).unacknowledged()] == [(1, "first"), (2, "kept")]


@pytest.mark.parametrize("open_store", STORES, ids=IDS)
def test_put_back_hands_out_an_unacknowledged_event_first(
    tmp_path: Path, open_store: Opener
) -> None:
    store, _ = open_store(tmp_path)
    inbox = Inbox(store)
    _publish(inbox, store, "one", "two")
    first = inbox.get_nowait()
    assert first is not None and (first.id, _t(first)) == (1, "one")
    inbox.put_back(first)
    again = inbox.get_nowait()
    assert again == first
    inbox.ack(again)
    inbox.put_back(again)  # acknowledged: never handed out again
    assert _drain(inbox) == [(2, "two")]
    assert [_t(e) for e in inbox.unacknowledged()] == ["two"]


@pytest.mark.parametrize("open_store", STORES, ids=IDS)
def test_restart_hands_out_exactly_the_unacknowledged_events(
    tmp_path: Path, open_store: Opener
) -> None:
    store, reopen = open_store(tmp_path)
    inbox = Inbox(store)
    # More than nine events: their order must not be the order of their ids as text.
    _publish(inbox, store, *(f"m{i}" for i in range(1, 13)))

    async def take(n: int) -> list[Event]:
        return [await asyncio.wait_for(inbox.get(), 5) for _ in range(n)]

    handed = asyncio.run(take(3))
    assert [(e.id, _t(e)) for e in handed] == [(1, "m1"), (2, "m2"), (3, "m3")]
    inbox.ack(handed[0])
    inbox.ack(handed[2].id)
    # m2 was handed out but not acknowledged; m4 to m12 were never handed out.
    expected = [(2, "m2")] + [(i, f"m{i}") for i in range(4, 13)]
    assert [(e.id, _t(e)) for e in inbox.unacknowledged()] == expected
    restarted = Inbox(reopen())
    assert [(e.id, _t(e)) for e in restarted.unacknowledged()] == expected

    async def take_all() -> list[Event]:
        return [await asyncio.wait_for(restarted.get(), 5) for _ in expected]

    assert [(e.id, _t(e)) for e in asyncio.run(take_all())] == expected
    assert restarted.get_nowait() is None
    # The restarted inbox numbers new events after the last one ever stored.
    _, numbered = restarted.stage([_event("new")])
    assert [e.id for e in numbered] == [13]


@pytest.mark.parametrize("open_store", STORES, ids=IDS)
def test_get_waits_for_a_published_event(tmp_path: Path, open_store: Opener) -> None:
    store, _ = open_store(tmp_path)
    inbox = Inbox(store)

    async def scenario() -> Event:
        waiting = asyncio.create_task(inbox.get())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        staged = Staged(inbox)
        store.write(staged.writes([_event("late")]))
        assert not waiting.done()  # stored, but not yet published
        staged.done()
        return await asyncio.wait_for(waiting, 5)

    event = asyncio.run(scenario())
    assert (event.id, _t(event), event.kind, event.group_id) == (1, "late", "message", b"group")


@pytest.mark.parametrize("open_store", STORES, ids=IDS)
def test_unacknowledged(tmp_path: Path, open_store: Opener) -> None:
    store, _ = open_store(tmp_path)
    inbox = Inbox(store)
    assert inbox.unacknowledged() == []
    _publish(inbox, store, "a")
    _publish(inbox, store, "b", "c")
    assert inbox.get_nowait() is not None  # handed out: still unacknowledged
    assert [(e.id, _t(e)) for e in inbox.unacknowledged()] == [(1, "a"), (2, "b"), (3, "c")]
    inbox.ack(2)
    assert [(e.id, _t(e)) for e in inbox.unacknowledged()] == [(1, "a"), (3, "c")]
    inbox.ack(2)  # acknowledging twice is harmless
    inbox.ack(1)
    inbox.ack(3)
    assert inbox.unacknowledged() == []


def test_an_event_put_back_then_acknowledged_is_not_handed_out_again() -> None:
    store = MemoryStore()
    inbox = Inbox(store)
    _publish(inbox, store, "once")
    event = inbox.get_nowait()
    assert event is not None
    inbox.put_back(event)  # e.g. the application left ``Client.events()`` without acking
    inbox.ack(event)  # ... and acknowledged the event afterwards
    assert inbox.unacknowledged() == []
    assert inbox.get_nowait() is None


def test_an_event_put_back_twice_is_handed_out_once() -> None:
    store = MemoryStore()
    inbox = Inbox(store)
    _publish(inbox, store, "once")
    event = inbox.get_nowait()
    assert event is not None
    inbox.put_back(event)
    inbox.put_back(event)
    assert inbox.get_nowait() == event
    assert inbox.get_nowait() is None


def test_an_inbox_serves_one_event_loop_then_another() -> None:
    store = MemoryStore()
    inbox = Inbox(store)

    async def wait_for_one(text: str) -> str:
        async def later() -> None:
            await asyncio.sleep(0.01)
            _publish(inbox, store, text)

        task = asyncio.create_task(later())
        event = await asyncio.wait_for(inbox.get(), 5)
        await task
        return _t(event)

    assert asyncio.run(wait_for_one("first")) == "first"
    assert asyncio.run(wait_for_one("second")) == "second"
