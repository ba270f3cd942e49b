"""Issue 19: the SDK takes its messages and gives its acks over the DS's WebSocket, over a real
DS on loopback. Messages come with no HTTP fetch or ack; a socket that drops mid-batch (or
whose acks are lost) loses nothing and duplicates nothing, whether the rest comes back over
HTTP or on the next socket; an HTTP sync racing the socket processes each message once; the
socket survives an expired token (4401) and a database that is away (1013)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlspy.client import Client, Event, push
from mlspy.ds.app import create_app
from mlspy.ds.client import DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.errors import Unavailable
from mlspy.ds.limits import Limits
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import TOKEN_TTL, DeliveryService

FETCH = ("GET", "/v1/queue")
ACK = ("POST", "/v1/queue/ack")
SOCKET = ("WS", "/v1/ws")


class Counting:
    """The DS's app, counting the requests it gets by method and path (WebSockets as WS)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: Counter[tuple[str, str]] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen[(scope["method"], scope["path"])] += 1
        elif scope["type"] == "websocket":
            self.seen[("WS", scope["path"])] += 1
        await self.app(scope, receive, send)


class DS:
    def __init__(self, server: InProcessServer, counting: Counting, service: DeliveryService):
        self.url = server.url
        self.counting = counting
        self.service = service

    def queued(self) -> int:
        """Messages queued for anyone, not yet acknowledged."""
        with self.service.db.transaction() as tx:
            return int(tx.execute("SELECT COUNT(*) FROM queue")[0][0])


@pytest.fixture
def now() -> list[float]:
    import time

    return [time.time()]


@pytest.fixture
def ds(tmp_path: Path, now: list[float]) -> Iterator[DS]:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.db"), clock=lambda: now[0])
    counting = Counting(create_app(service, limits=Limits(token_recheck=0.2)))
    with InProcessServer(counting) as server:
        yield DS(server, counting, service)


async def _until(client: Client, kind: str, timeout: float = 10) -> Event:
    while True:
        event = await client.next_event(timeout)
        if event.kind == kind:
            return event


async def _eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.05)


async def _pair(url: str, **options: Any) -> tuple[Client, Client, bytes]:
    """alice and bob in a group, nothing left to receive, no processed mark left."""
    alice = Client(url, "alice", poll_interval=0.2, **options)
    bob = Client(url, "bob", poll_interval=0.2, **options)
    await alice.start()
    await bob.start()
    gid = await alice.create_group()
    await alice.invite(gid, "bob")
    await _until(bob, "joined")
    await bob.sync()
    assert bob.store.keys("processed/") == []
    return alice, bob, gid


async def _texts(client: Client, count: int) -> list[str]:
    return [(await _until(client, "message")).text for _ in range(count)]


def _count_handled(client: Client) -> list[int]:
    """The seqs ``client`` processes (``_handle``), in order."""
    seqs: list[int] = []
    real = client._handle

    async def handle(item: dict[str, Any]) -> bool:
        seqs.append(item["seq"])
        return await real(item)

    client._handle = handle  # type: ignore[method-assign]
    return seqs


def test_messages_and_acks_travel_on_the_websocket(ds: DS) -> None:
    """Twenty messages reach bob's application and leave his queue at the DS without one HTTP
    fetch or ack (the code before issue 19 fetched over HTTP at every push). The marks of
    what was acknowledged on the socket are kept until an HTTP ack confirms it (the socket
    never does): the next sync."""

    async def scenario() -> None:
        alice, bob, gid = await _pair(ds.url)
        before = Counter(ds.counting.seen)
        for i in range(20):
            await alice.send(gid, f"m{i}")
        assert await _texts(bob, 20) == [f"m{i}" for i in range(20)]
        await _eventually(lambda: ds.queued() == 0)  # the acks on the socket took effect
        used = ds.counting.seen - before
        assert used[FETCH] == used[ACK] == 0, used
        assert used[SOCKET] == 0  # the same socket throughout
        assert len(bob.store.keys("processed/")) == 20
        await bob.sync()
        assert bob.store.keys("processed/") == []
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_what_a_client_sends_goes_on_its_websocket(ds: DS) -> None:
    """Messages and commits go on the open socket: no HTTP POST of a message, and the others
    receive them in order; a submission too large for a frame still goes over HTTP."""

    def posts(seen: Counter[tuple[str, str]]) -> int:  # POST /v1/groups/{id}/messages
        return sum(n for (m, p), n in seen.items() if m == "POST" and p.endswith("/messages"))

    async def scenario() -> None:
        alice, bob, gid = await _pair(ds.url)
        await _eventually(lambda: alice._socket is not None and alice._socket.max_frame is not None)
        before = Counter(ds.counting.seen)
        for i in range(10):
            await alice.send(gid, f"m{i}")
        await alice.update(gid)  # a commit with a path and a GroupInfo
        await alice.send(gid, "after the commit")
        assert await _texts(bob, 11) == [*(f"m{i}" for i in range(10)), "after the commit"]
        assert posts(ds.counting.seen - before) == 0
        assert alice.group(gid).group.epoch == bob.group(gid).group.epoch
        # A frame the DS would not take (as if its max_frame were tiny) goes over HTTP.
        assert alice._socket is not None
        alice._socket.max_frame = 10
        before = Counter(ds.counting.seen)
        await alice.send(gid, "too big for the socket")
        assert await _texts(bob, 1) == ["too big for the socket"]
        assert posts(ds.counting.seen - before) == 1
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_send_on_a_socket_known_dead_or_answering_503_goes_over_http(ds: DS) -> None:
    """A socket whose reader has ended takes no submission (HTTP does, rather than retries
    burnt on it); a 503 answer (the DS's database away) is retried over HTTP, which waits
    for Retry-After."""

    def posts(seen: Counter[tuple[str, str]]) -> int:
        return sum(n for (m, p), n in seen.items() if m == "POST" and p.endswith("/messages"))

    async def scenario() -> None:
        alice, bob, gid = await _pair(ds.url)
        await _eventually(lambda: alice._socket is not None and alice._socket.max_frame is not None)
        sock = alice._socket
        assert sock is not None and sock._reader is not None
        sock._reader.cancel()  # as if the connection had just broken
        await asyncio.wait({sock._reader})
        before = Counter(ds.counting.seen)
        await alice.send(gid, "over http")
        assert posts(ds.counting.seen - before) == 1
        assert await _texts(bob, 1) == ["over http"]

        await _eventually(lambda: alice._socket is not None and alice._socket is not sock)
        fresh = alice._socket
        assert fresh is not None

        async def away(group_id: bytes, body: dict[str, Any]) -> int | None:
            raise DSRequestError(503, {"error": "database away", "retry_after": 1})

        fresh.submit = away  # type: ignore[method-assign]
        before = Counter(ds.counting.seen)
        await alice.send(gid, "after a 503")
        assert posts(ds.counting.seen - before) == 1
        assert await _texts(bob, 1) == ["after a 503"]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_marks_of_socket_acks_are_confirmed_in_batches(
    ds: DS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marks of messages acknowledged on the socket do not pile up: once
    ``CONFIRM_EVERY`` have gathered, one HTTP ack confirms them all and they are dropped —
    one HTTP request per that many messages, no fetch."""
    from mlspy.client import sdk

    monkeypatch.setattr(sdk, "CONFIRM_EVERY", 5)

    async def scenario() -> None:
        alice, bob, gid = await _pair(ds.url)
        before = Counter(ds.counting.seen)
        for i in range(12):
            await alice.send(gid, f"m{i}")
        assert await _texts(bob, 12) == [f"m{i}" for i in range(12)]
        await _eventually(lambda: ds.queued() == 0)
        await _eventually(lambda: len(bob.store.keys("processed/")) < 5)
        used = ds.counting.seen - before
        assert used[FETCH] == 0 and 1 <= used[ACK] <= 2, used
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("comeback", ["http", "socket"])
@pytest.mark.parametrize("drop", ["mid-batch", "ack-lost"])
def test_a_socket_that_drops_loses_nothing_and_duplicates_nothing(
    ds: DS, drop: str, comeback: str
) -> None:
    """bob's socket drops while he processes a batch of ten: either processing stops at the
    4th message (those before it are marked processed, not acknowledged), or the batch is
    processed but its ack frame is lost. The rest comes back over HTTP (the catch-up when the
    socket is down) or, with HTTP fetches failing, on the next socket, which sends again all
    that was not acknowledged. Every message reaches the application once, in order, and
    none is processed twice."""

    async def scenario() -> None:
        sockets: list[push.PushSocket] = []
        enter = push.PushSocket.__aenter__

        async def record(self: push.PushSocket) -> push.PushSocket:
            sockets.append(await enter(self))
            return self

        push.PushSocket.__aenter__ = record  # type: ignore[method-assign]
        alice, bob, gid = await _pair(ds.url)
        try:
            token = bob.ds.token
            handled: list[int] = []
            real = bob._handle
            fetch = bob.ds.fetch

            async def dropping(item: dict[str, Any]) -> bool:
                handled.append(item["seq"])
                if len(handled) == 4:
                    conn = [s for s in sockets if s.token == token][-1]._conn
                    assert conn is not None
                    conn.transport.abort()  # the connection is gone
                    if drop == "mid-batch":
                        raise ConnectionResetError("dropped mid-batch")
                return await real(item)

            bob._handle = dropping  # type: ignore[method-assign]
            if comeback == "socket":

                def failing(after: int = 0) -> list[dict[str, Any]]:
                    raise httpx.ConnectError("no HTTP for now")

                bob.ds.fetch = failing  # type: ignore[method-assign]
            # A batch: bob's socket receives the ten while he cannot process them.
            async with bob._lock:
                for i in range(10):
                    await alice.send(gid, f"m{i}")
                await asyncio.sleep(0.5)
            assert await _texts(bob, 10) == [f"m{i}" for i in range(10)]
            await _eventually(lambda: ds.queued() == 0)
            await _eventually(lambda: len([s for s in sockets if s.token == token]) >= 2)
            # Each message processed once (the 4th attempt, cut short, aside).
            assert len(handled) == (11 if drop == "mid-batch" else 10), handled
            assert len(set(handled)) == 10
            bob.ds.fetch = fetch  # type: ignore[method-assign]
            await bob.sync()
            assert bob.store.keys("processed/") == []
            assert [e for e in bob.inbox.unacknowledged() if e.kind == "message"] == []
        finally:
            push.PushSocket.__aenter__ = enter  # type: ignore[method-assign]
            await alice.stop()
            await bob.stop()

    asyncio.run(scenario())


def test_an_http_sync_racing_the_socket_processes_each_message_once(ds: DS) -> None:
    """bob's socket has received ten messages but not processed them when the application
    calls ``sync()``: the HTTP fetch processes and acknowledges them. The socket's copies,
    sent before that ack, come after it: they are recognized and skipped — not processed a
    second time (for an application message that would only be logged as a duplicate; for a
    rollback notice it would undo twice)."""

    async def scenario() -> None:
        alice, bob, gid = await _pair(ds.url)
        handled = _count_handled(bob)
        gate = asyncio.Event()
        waiting = asyncio.Event()
        real = bob._receive_pushed

        async def held(sock: push.PushSocket, items: list[dict[str, Any]]) -> None:
            waiting.set()
            await gate.wait()
            await real(sock, items)

        bob._receive_pushed = held  # type: ignore[method-assign]
        for i in range(10):
            await alice.send(gid, f"m{i}")
        await waiting.wait()
        await asyncio.sleep(0.3)  # the rest arrives on the socket too
        await bob.sync()
        assert len(handled) == 10
        gate.set()
        assert await _texts(bob, 10) == [f"m{i}" for i in range(10)]
        await alice.send(gid, "after")
        assert await _texts(bob, 1) == ["after"]
        assert len(handled) == 11, handled
        assert [e for e in bob.inbox.unacknowledged() if e.kind == "message"] == []
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_an_expired_token_closes_the_socket_and_the_client_logs_in_again(
    ds: DS, now: list[float]
) -> None:
    """The DS checks a socket's token again every ``token_recheck`` seconds and closes it with
    4401 once expired: bob logs in again by himself (nothing else of his talks to the DS),
    reconnects at once, and receives on the new socket."""

    async def scenario() -> None:
        alice, bob, gid = await _pair(ds.url)
        old = bob.ds.token
        before = Counter(ds.counting.seen)
        now[0] += TOKEN_TTL + 1
        await _eventually(lambda: bob.ds.token != old)
        await _eventually(lambda: (ds.counting.seen - before)[SOCKET] >= 1)
        await alice.send(gid, "an hour later")
        assert await _texts(bob, 1) == ["an hour later"]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_database_away_closes_the_socket_and_the_client_backs_off(ds: DS) -> None:
    """While the DS's database is away, its socket closes with 1013 and every new one is
    refused: bob tries again with growing pauses (not every poll interval), and once the
    database is back he receives on a socket again."""

    async def scenario() -> None:
        alice, bob, gid = await _pair(ds.url)
        bob.ds.RETRIES_503 = 0  # type: ignore[misc]  # the HTTP fallback fails at once
        authenticate = ds.service.authenticate

        def away(token: str) -> Any:
            raise Unavailable("the database is away")

        before = Counter(ds.counting.seen)
        ds.service.authenticate = away  # type: ignore[method-assign]
        # Tokens looked up before are cached (``ds/token_cache.py``) and the test's clock
        # stands still: drop them, as they would expire, so the next check asks the database.
        ds.service.token_cache.invalidate()
        await asyncio.sleep(3.0)
        attempts = (ds.counting.seen - before)[SOCKET]
        # A fixed pause of one poll interval (0.2 s) would make 15 attempts in 3 s.
        assert 1 <= attempts <= 7, attempts
        ds.service.authenticate = authenticate  # type: ignore[method-assign]
        # Back: bob reconnects (within the longest pause so far) and receives on it.
        await _eventually(lambda: bob._socket is not None, timeout=10)
        settled = Counter(ds.counting.seen)
        await alice.send(gid, "back")
        assert await _texts(bob, 1) == ["back"]
        used = ds.counting.seen - settled
        assert used[FETCH] == 0, used
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_receive_loop_without_a_socket_polls_over_http(ds: DS) -> None:
    """When the WebSocket cannot be opened at all, messages still come, over HTTP."""

    async def scenario() -> None:
        alice, bob, gid = await _pair(ds.url)
        await bob.stop()
        bob = Client(ds.url, "bob", store=bob.store, poll_interval=0.2)
        real = push.ws_url
        push.ws_url = lambda server: "ws://127.0.0.1:9/v1/ws"  # nothing listens there
        try:
            await bob.start()
            await alice.send(gid, "by HTTP")
            assert await _texts(bob, 1) == ["by HTTP"]
        finally:
            push.ws_url = real  # type: ignore[assignment]
            await alice.stop()
            await bob.stop()

    asyncio.run(scenario())


def test_a_cancel_is_not_lost_when_an_item_arrives_with_it() -> None:
    """The intermittent hang of the SDK tests: ``stop()`` cancels the receive loop while it
    waits for the socket; when an item arrived in the same instant, Python 3.11's
    ``asyncio.wait_for`` returned the item and dropped the cancel (gh-86296), so the loop went
    on and ``stop()`` waited for it forever. The wait is cancelled for good now."""

    async def scenario() -> None:
        sock = push.PushSocket("ws://127.0.0.1:9/v1/ws", None, verify=True)
        waiting = asyncio.create_task(sock.batch(5))
        await asyncio.sleep(0.01)
        sock._queue.put_nowait({"seq": 1})
        waiting.cancel()  # in the same loop iteration as the item
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())


def test_stop_ends_a_receive_loop_that_lost_a_cancel() -> None:
    """Wherever a cancel gets lost (a library's ``wait_for``), ``stop()`` cancels again until
    the receive loop has ended."""

    async def scenario() -> None:
        client = Client("http://127.0.0.1:9", "alice")
        cancels = 0

        async def loses_the_first_cancel() -> None:
            nonlocal cancels
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    cancels += 1
                    if cancels > 1:
                        raise

        client._task = asyncio.create_task(loses_the_first_cancel())
        await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await client.stop()
        assert cancels == 2

    asyncio.run(scenario())
