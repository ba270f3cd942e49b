"""The crash loop: an SDK client (bob, in a subprocess with a SQLite store) is killed with
SIGKILL at every store-write point — ``begin``, ``written`` and ``committed`` of the 1st,
2nd, … write — of every SDK operation, over a real DS on loopback, and restarted each time.
Receiving is enumerated on both delivery paths: an HTTP fetch (``sync``) and the WebSocket
(``push``: the messages and the acks on the socket).
Its peers (alice, carol) run in this process and are never killed.

Asserted at the end (issue 16): every message whose ``send()`` returned reached the other
member's application exactly once (an event delivered again after a crash keeps its id); no
(epoch, leaf, generation) carried two different messages; bob and alice end every group they
share in the same epoch with the same epoch authenticator."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from crash_harness import Actor, Observed, config, event_record, findings

from mlspy.client import Client
from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.storage import SQLiteStore

POINTS = ("begin", "written", "committed")

pytestmark = pytest.mark.slow


class World:
    """alice and carol in this process, bob in a subprocess, one group (g1) they chat in."""

    def __init__(self, url: str, tmp: Path, mode: str = "public") -> None:
        self.url, self.tmp = url, tmp
        self.records: list[dict[str, Any]] = []  # alice's application log
        options: dict[str, Any] = {"poll_interval": 0.1, "config": config(mode)}
        self.alice = Observed(url, "alice", store=SQLiteStore(tmp / "alice.db"), **options)
        self.alice.note = self.records.append
        self.carol = Client(url, "carol", store=SQLiteStore(tmp / "carol.db"), **options)
        self.bob = Actor("bob", url, tmp / "bob", mode=mode)
        self.g1 = b""
        self.counter = itertools.count()
        self.operations: dict[str, int] = {}

    async def start(self) -> None:
        await self.alice.start()
        await self.carol.start()
        self._consumers = [
            asyncio.create_task(self._consume(self.alice, self.records.append)),
            asyncio.create_task(self._consume(self.carol, lambda r: None)),
        ]
        assert (await self.run_bob("sync"))[0] == "ok"
        self.g1 = await self.alice.create_group()
        await self.alice.invite(self.g1, "bob")
        assert (await self.run_bob("sync"))[0] == "ok"

    async def _consume(self, client: Client, note: Callable[[dict[str, Any]], None]) -> None:
        async for event in client.events():
            note(event_record(event))

    async def run_bob(self, op: str, *args: Any, **kill: Any) -> tuple[str, dict[str, Any]]:
        return await asyncio.to_thread(self.bob.run, op, *args, kill=kill or None)

    async def alice_says(self) -> None:
        text = f"alice-{next(self.counter)}"
        await self.alice.send(self.g1, text)
        self.records.append({"t": "sent", "gid": self.g1.hex(), "text": text})

    async def settle(self) -> None:
        """bob catches up (unkilled) and alice has seen what he did."""
        fate, out = await self.run_bob("sync")
        assert fate == "ok", out
        await self.alice.sync()
        await self.carol.sync()

    async def new_group_with_bob(self, *, joined: bool) -> bytes:
        gid = await self.alice.create_group()
        await self.alice.invite(gid, "bob")
        if joined:
            await self.settle()
        return gid

    async def enumerate(
        self, name: str, op: str, setup: Callable[[], Awaitable[list[Any]]]
    ) -> None:
        """Run ``op`` killed at each write point in turn, until it completes unkilled."""
        for k in itertools.count(1):
            killed = False
            for point in POINTS:
                args = await setup()
                fate, out = await self.run_bob(op, *args, write=k, point=point)
                assert fate != "error", (name, k, point, out)
                killed |= fate == "killed"
                await self.settle()
            if not killed:
                self.operations[name] = k - 1
                return
            assert k < 30, f"{name}: more than 30 writes?"


async def _scenario(url: str, tmp: Path, mode: str) -> None:
    w = World(url, tmp, mode)
    await w.start()
    g1 = w.g1.hex()

    async def message_for_bob() -> list[Any]:
        await w.alice_says()
        return []

    async def bob_says() -> list[Any]:
        return [g1, f"bob-{next(w.counter)}"]

    async def commit_for_bob() -> list[Any]:
        await w.alice.update(w.g1)
        return []

    async def carol_out() -> list[Any]:
        if "carol" in w.alice.members(w.g1):
            await w.alice.remove(w.g1, "carol")
        return [g1, "carol"]

    async def carol_in() -> list[Any]:
        if "carol" not in w.alice.members(w.g1):
            await w.alice.invite(w.g1, "carol")
        return [g1, "carol"]

    async def welcome_for_bob() -> list[Any]:
        await w.new_group_with_bob(joined=False)
        return []

    async def removal_for_bob() -> list[Any]:
        gid = await w.new_group_with_bob(joined=True)
        await w.alice.remove(gid, "bob")
        return []

    async def group_to_leave() -> list[Any]:
        return [(await w.new_group_with_bob(joined=True)).hex()]

    async def open_group() -> list[Any]:
        return [(await w.alice.create_group(external_joins=True)).hex()]

    async def nothing() -> list[Any]:
        return []

    await w.enumerate("receive a message", "sync", message_for_bob)
    await w.enumerate("receive a message on the WebSocket", "push", message_for_bob)
    await w.enumerate("send", "send", bob_says)
    await w.enumerate("receive a commit", "sync", commit_for_bob)
    await w.enumerate("receive a commit on the WebSocket", "push", commit_for_bob)
    await w.enumerate("update", "update", lambda: asyncio.sleep(0, [g1]))
    await w.enumerate("invite", "invite", carol_out)
    await w.enumerate("remove", "remove", carol_in)
    await w.enumerate("join by Welcome", "sync", welcome_for_bob)
    await w.enumerate("join by Welcome on the WebSocket", "push", welcome_for_bob)
    await w.enumerate("removed by a commit", "sync", removal_for_bob)
    await w.enumerate("removed by a commit on the WebSocket", "push", removal_for_bob)
    await w.enumerate("leave", "leave", group_to_leave)
    await w.enumerate("join by external commit", "join_external", open_group)
    await w.enumerate("create a group", "create", nothing)
    await w.enumerate("KeyPackages and last-resort rotation", "replenish", nothing)
    # Some traffic after all that, then everyone catches up.
    for _ in range(3):
        await w.alice_says()
        await w.run_bob("send", g1, f"bob-{next(w.counter)}")
    await w.alice.sync()
    fate, final = await w.run_bob("sync")
    assert fate == "ok", final
    await w.alice.sync()
    await asyncio.sleep(0.3)  # alice's consumer takes what the last sync stored

    with SQLiteDatabase(tmp / "ds.db").transaction() as tx:  # the mode the DS runs the group in
        rows = tx.execute("SELECT mode FROM groups WHERE group_id = ?", (w.g1,))
    assert str(rows[0][0]).startswith(mode)
    # Every write point of every operation was hit (each op writes at least once).
    assert all(n >= 1 for n in w.operations.values()), w.operations
    bob_records = w.bob.records()
    found = findings(
        {"alice": w.records, "bob": bob_records}, {"alice": w.records, "bob": bob_records}, g1
    )
    assert found.lost == [], found.lost
    assert found.duplicated == [], found.duplicated
    assert found.reused == [], found.reused
    assert found.observed >= found.sent  # every message's key position was looked at
    assert found.delivered == found.sent > 0
    # The same epoch, the same authenticator, in every group both are in.
    shared = set(final["groups"]) & {gid.hex() for gid in w.alice.group_ids()}
    assert g1 in shared
    for gid in shared:
        group = w.alice.group(bytes.fromhex(gid)).group
        assert final["groups"][gid] == [group.epoch, group.epoch_authenticator.hex()], gid
    # carol, never killed, agrees too wherever she is (she was invited and removed often).
    for gid in {g.hex() for g in w.carol.group_ids()} & shared:
        ours = w.carol.group(bytes.fromhex(gid)).group
        assert final["groups"][gid] == [ours.epoch, ours.epoch_authenticator.hex()], gid
    for task in w._consumers:
        task.cancel()
    await w.alice.stop()
    await w.carol.stop()
    w.bob.close()
    print(
        f"{mode}: writes per operation {w.operations}; bob runs {w.bob.runs}, kills {w.bob.kills}"
    )


@pytest.mark.parametrize("mode", ["public", "private"])
def test_every_write_point_of_every_sdk_operation(tmp_path: Path, mode: str) -> None:
    """Both handshake modes: PublicMessage commits, and PrivateMessage ones (where a commit's
    key is spent by processing it, so processing and merging must be one write)."""
    service = DeliveryService(
        SQLiteDatabase(tmp_path / "ds.db"), claims_per_target=100_000, claims_per_owner=100_000
    )
    with InProcessServer(create_app(service)) as server, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_scenario(server.url, tmp_path, mode))


def _world_test(tmp_path: Path, body: Callable[[World], Awaitable[None]]) -> None:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.db"))
    with InProcessServer(create_app(service)) as server:

        async def run() -> None:
            w = World(server.url, tmp_path)
            await w.start()
            try:
                await body(w)
            finally:
                for task in w._consumers:
                    task.cancel()
                await w.alice.stop()
                await w.carol.stop()
                w.bob.close()

        asyncio.run(run())


def _texts(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(r["id"], r["text"]) for r in records if r["t"] == "event" and r["kind"] == "message"]


@pytest.mark.parametrize("point", POINTS)
def test_a_message_whose_key_is_spent_still_reaches_the_application(
    tmp_path: Path, point: str
) -> None:
    """Issue 16, first loss: killed around the write that spends the message's key. The key,
    the event and the processed mark are one write: before it the message comes again, after
    it the event is in the inbox; either way the application gets it once."""

    async def body(w: World) -> None:
        await w.alice_says()
        fate, _ = await w.run_bob("sync", write=1, point=point)
        assert fate == "killed"
        assert (await w.run_bob("sync"))[0] == "ok"
        assert [t for _, t in _texts(w.bob.records())] == ["alice-0"]

    _world_test(tmp_path, body)


def test_an_event_the_application_did_not_acknowledge_comes_again_with_its_id(
    tmp_path: Path,
) -> None:
    """Issue 16, second loss: killed after the message was processed and acknowledged to the
    DS, while the application held its event (before acknowledging it): the restarted client
    delivers the same event (same id) again; once acknowledged, never again."""

    async def body(w: World) -> None:
        await w.alice_says()
        # Writes of the receive: 1 processes it, 2 drops the processed mark after the DS's
        # acknowledgement, 3 is the application's acknowledgement of the event.
        fate, _ = await w.run_bob("sync", write=3, point="begin")
        assert fate == "killed"
        first = _texts(w.bob.records())
        assert [t for _, t in first] == ["alice-0"]  # the application saw it, then died
        assert (await w.run_bob("sync"))[0] == "ok"
        again = _texts(w.bob.records())
        assert again == first * 2  # the same event, the same id
        assert (await w.run_bob("sync"))[0] == "ok"
        assert _texts(w.bob.records()) == again  # acknowledged: never again

    _world_test(tmp_path, body)


def test_the_checks_catch_a_sender_that_reuses_a_key(tmp_path: Path) -> None:
    """The loop's checks can fail: a sender whose ratchet never reaches its store (so each
    restart sends with generation 0 again) is caught reusing a key, and its second message is
    lost (every receiver has spent that key)."""

    async def body(w: World) -> None:
        g1 = w.g1.hex()
        for text in ("one", "two"):
            fate, out = await asyncio.to_thread(w.bob.run, "send", g1, text, forgetful=True)
            assert fate == "ok", out
        await w.alice.sync()
        await asyncio.sleep(0.3)
        found = findings({"bob": w.bob.records()}, {"alice": w.records}, g1)
        assert len(found.reused) == 1
        assert found.lost == ["bob->alice: two"]

    _world_test(tmp_path, body)


def test_a_second_device_killed_at_every_write_point(tmp_path: Path) -> None:
    """Exactly-once for a user with two devices: alice's laptop (a subprocess, enrolled with a
    pairing code from her phone, added to the group by the phone) is killed at every write
    point of receiving and of sending; every message of the phone reaches the laptop's
    application once and every message the laptop sent reaches the phone's, no key is used
    twice, and both end in the same epoch."""

    async def body(w: World) -> None:
        code = await w.alice.pairing_code()
        laptop = Actor("alice", w.url, w.tmp / "laptop", device="laptop", pairing=code)
        try:
            assert (await asyncio.to_thread(laptop.run, "sync"))[0] == "ok"  # registers
            await w.alice.sync()  # the phone adds its new device to g1
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                fate, out = await asyncio.to_thread(laptop.run, "sync")
                assert fate == "ok", out
                if w.g1.hex() in out["groups"]:
                    break
                assert asyncio.get_running_loop().time() < deadline, "never added"
                await w.alice.sync()
            g1 = w.g1.hex()
            for op in ("sync", "send"):
                for k in itertools.count(1):
                    killed = False
                    for point in POINTS:
                        if op == "sync":
                            await w.alice_says()
                            args: list[Any] = []
                        else:
                            args = [g1, f"laptop-{next(w.counter)}"]
                        kill = {"write": k, "point": point}
                        fate, out = await asyncio.to_thread(laptop.run, op, *args, kill=kill)
                        assert fate != "error", out
                        killed |= fate == "killed"
                        fate, out = await asyncio.to_thread(laptop.run, "sync")
                        assert fate == "ok", out
                        await w.alice.sync()
                    if not killed:
                        break
            await asyncio.sleep(0.3)
            laptop_records = laptop.records()
            found = findings(
                {"phone": w.records, "laptop": laptop_records},
                {"phone": w.records, "laptop": laptop_records},
                g1,
            )
            assert found.lost == [] and found.duplicated == [] and found.reused == []
            assert found.delivered == found.sent > 0
            assert laptop.kills > 0
            phone = w.alice.group(w.g1).group
            assert out["groups"][g1] == [phone.epoch, phone.epoch_authenticator.hex()]
        finally:
            laptop.close()

    _world_test(tmp_path, body)
