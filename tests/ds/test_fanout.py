"""Issue 19: the fan-out of a DS node alone on its SQLite file (``push.Fanout``). A committed
message is written straight to its recipients' live sockets; a socket that is still reading
its backlog, or whose client is slow to read, reads its queue instead. What a user relies on
does not change: every message arrives once per socket, in the order the DS accepted them,
nothing rolled back is ever sent, and a slow reader loses nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.ds.ds_helpers import Member, open_push, pair

from mlspy.ds.app import create_app
from mlspy.ds.db import BODY_RAN, SQLiteDatabase
from mlspy.ds.errors import Unavailable
from mlspy.ds.limits import Limits
from mlspy.ds.push import FETCH_LIMIT, ExposeProtocol, RawOut
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import ApplicationMessage


@pytest.fixture()
def node(tmp_path: Path) -> Any:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    # Alice sends more than the per-client request rate lets a user send at once.
    limits = Limits(requests_per_second=10_000.0, request_burst=10_000)
    with InProcessServer(create_app(service, limits=limits)) as server:
        yield server
    service.db.close()


async def _read_until(
    sock: Any, want: int, ack: bool = True, timeout: float = 60
) -> list[dict[str, Any]]:
    """Queue items from ``sock`` until ``want`` arrived, acknowledging each frame's."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(got) < want:
            data = json.loads(await sock.recv())
            if "seq" not in data:
                continue
            got.append(data)
            if ack:
                await sock.send(json.dumps({"ack": [data["seq"]]}))
    return got


def _sent(alice: Member, prefix: str, count: int) -> list[bytes]:
    """``count`` messages sent by ``alice`` before anyone reads."""
    texts = [f"{prefix} {i}".encode() for i in range(count)]
    for text in texts:
        alice.send(text)
    return texts


def _assert_once_in_order(bob: Member, items: list[dict[str, Any]], texts: list[bytes]) -> None:
    """Each item once, in the order the DS accepted them, and they are ``texts``."""
    seqs = [it["seq"] for it in items]
    assert seqs == sorted(set(seqs)), "each once, in the order accepted"
    assert _texts(bob, items) == texts


def _texts(bob: Member, items: list[dict[str, Any]]) -> list[bytes]:
    assert bob.group is not None
    out = []
    for it in items:
        event = bob.group.process(base64.b64decode(it["data"]))
        assert isinstance(event, ApplicationMessage)
        out.append(event.data)
    return out


def test_a_backlog_past_a_page_then_new_messages_arrive_once_and_in_order(node: Any) -> None:
    """Bob comes back to more than two pages of messages; while he reads them, Alice keeps
    talking. He gets every one once, in the order accepted: the new ones are not written
    ahead of the backlog."""
    alice, bob = pair(node.url)
    backlog = _sent(alice, "old", 2 * FETCH_LIMIT + 100)
    fresh = [f"new {i}".encode() for i in range(60)]

    async def go() -> list[dict[str, Any]]:
        sock = await open_push(node.ws_url, bob.client.token)
        try:
            first = await _read_until(sock, 50)

            def talk() -> None:
                for text in fresh:
                    alice.send(text)

            talker = threading.Thread(target=talk)
            talker.start()
            rest = await _read_until(sock, len(backlog) + len(fresh) - 50)
            talker.join()
            return first + rest
        finally:
            await sock.close()

    items = asyncio.run(go())
    _assert_once_in_order(bob, items, backlog + fresh)


def test_a_client_that_never_acknowledges_still_gets_everything(node: Any) -> None:
    """Found by review: a socket with a full page unacknowledged read the same page again on
    every new message and sent nothing past it. It reads on after what it sent instead, as a
    socket did before the fan-out: the whole backlog, then what comes after."""
    alice, bob = pair(node.url)
    backlog = _sent(alice, "old", FETCH_LIMIT + 100)
    fresh = [f"new {i}".encode() for i in range(5)]

    async def go() -> list[dict[str, Any]]:
        sock = await open_push(node.ws_url, bob.client.token)
        try:
            first = await _read_until(sock, len(backlog), ack=False)
            await asyncio.to_thread(lambda: [alice.send(t) for t in fresh])
            return first + await _read_until(sock, len(fresh), ack=False)
        finally:
            await sock.close()

    items = asyncio.run(go())
    _assert_once_in_order(bob, items, backlog + fresh)


def test_a_live_socket_gets_each_message_once_in_order(node: Any) -> None:
    """Bob is caught up; Alice's messages (several per COMMIT under load) reach him as
    they commit, each once, in order; an HTTP fetch afterwards finds nothing unacknowledged
    once he acknowledged them on the socket."""
    alice, bob = pair(node.url)
    texts = [f"live {i}".encode() for i in range(300)]

    async def go() -> list[dict[str, Any]]:
        sock = await open_push(node.ws_url, bob.client.token)
        try:
            await asyncio.sleep(0.2)  # its first read is done: it is live

            def talk() -> None:
                for text in texts:
                    alice.send(text)

            talkers = threading.Thread(target=talk)
            talkers.start()
            got = await _read_until(sock, len(texts))
            talkers.join()
            await asyncio.sleep(0.3)  # the acks are written
            return got
        finally:
            await sock.close()

    items = asyncio.run(go())
    _assert_once_in_order(bob, items, texts)
    assert bob.client.fetch(0) == []


def test_a_slow_reader_loses_nothing(node: Any) -> None:
    """Bob does not read his socket while Alice sends megabytes: the server stops writing
    to him (flow control) and he reads the rest from his queue when he reads again — all of
    it, in order."""
    alice, bob = pair(node.url)
    texts = [bytes([65 + i % 26]) * 60_000 for i in range(120)]  # ~7 MB in all

    async def go() -> list[dict[str, Any]]:
        sock = await open_push(node.ws_url, bob.client.token)
        try:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(lambda: [alice.send(t) for t in texts])
            return await _read_until(sock, len(texts))
        finally:
            await sock.close()

    items = asyncio.run(go())
    _assert_once_in_order(bob, items, texts)


def test_a_live_socket_is_written_by_the_fan_out(
    node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``mlspy serve``'s uvicorn the frames of a live socket go the raw way (the
    server's protocol is lent): a server update that renamed it would silently bring every
    delivery back to reads."""
    writes: list[int] = []
    real = RawOut.write

    def counted(self: RawOut, data: bytes) -> None:
        writes.append(len(data))
        real(self, data)

    monkeypatch.setattr(RawOut, "write", counted)
    alice, bob = pair(node.url)

    async def go() -> None:
        sock = await open_push(node.ws_url, bob.client.token)
        try:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(alice.send, b"raw")
            await _read_until(sock, 1)
        finally:
            await sock.close()

    asyncio.run(go())
    assert writes


def test_two_sockets_of_one_client_each_get_everything(node: Any) -> None:
    alice, bob = pair(node.url)
    texts = [f"both {i}".encode() for i in range(40)]

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        one = await open_push(node.ws_url, bob.client.token)
        two = await open_push(node.ws_url, bob.client.token)
        try:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(lambda: [alice.send(t) for t in texts])
            a = await _read_until(one, len(texts), ack=False)
            b = await _read_until(two, len(texts), ack=False)
            return a, b
        finally:
            await one.close()
            await two.close()

    a, b = asyncio.run(go())
    assert [i["seq"] for i in a] == [i["seq"] for i in b]
    assert len({i["seq"] for i in a}) == len(texts)


# --- The database's side: what is published, and when -------------------------------


def test_a_rolled_back_body_publishes_nothing(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "p.sqlite")
    seen: list[object] = []
    db.on_publish = seen.extend
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.publish("never")
        raise RuntimeError("the body fails")
    with db.transaction() as tx:
        tx.publish("kept")
    assert seen == ["kept"]
    db.close()


def test_a_failed_commit_publishes_nothing(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "p.sqlite")
    seen: list[object] = []
    db.on_publish = seen.extend
    real = db._db

    class FailingCommit:
        """The writer connection, but its COMMIT fails (a full disk)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                full = sqlite3.OperationalError("database or disk is full")
                full.sqlite_errorcode = 13  # SQLITE_FULL
                raise full
            return real.execute(sql, *args)

    db._db = FailingCommit()  # type: ignore[assignment]
    with pytest.raises(Unavailable), db.transaction() as tx:  # a full disk: 503
        tx.publish("lost with the commit")
    db._db = real
    assert seen == []
    db.close()


def test_only_a_body_that_published_lets_the_next_submission_start(tmp_path: Path) -> None:
    """``BODY_RAN`` (a socket's next submission may start) fires for the transaction that
    queued the message — not for a read that is a transaction on a database in memory (found
    by review: the next submission could have overtaken this one), nor for a failed body."""
    calls: list[str] = []
    for db in (SQLiteDatabase(tmp_path / "r.sqlite"), SQLiteDatabase(":memory:")):
        token = BODY_RAN.set(lambda: calls.append("ran"))
        try:
            db.query("SELECT 1")
            with db.transaction() as tx:
                tx.execute("SELECT 1")
            with pytest.raises(RuntimeError), db.transaction() as tx:
                tx.publish("rolled back")
                raise RuntimeError("refused")
            assert calls == []
            with db.transaction() as tx:
                tx.publish("queued")
            assert calls == ["ran"]
        finally:
            BODY_RAN.reset(token)
            calls.clear()
            db.close()


def test_batches_are_published_whole_and_in_commit_order(tmp_path: Path) -> None:
    """Eight threads commit 50 transactions each; what is published, batch after batch, is
    every seq once, ascending (the order their bodies ran and committed)."""
    db = SQLiteDatabase(tmp_path / "p.sqlite")
    db._db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER)")
    seen: list[object] = []
    batches: list[int] = []

    def on_publish(batch: list[object]) -> None:
        batches.append(len(batch))
        seen.extend(batch)

    db.on_publish = on_publish

    def work() -> None:
        for _ in range(50):
            with db.transaction() as tx:
                tx.publish(tx.insert_returning_seq("INSERT INTO t (v) VALUES (?)", (1,)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == list(range(1, 401))
    assert sum(batches) == 400
    db.close()


# --- Who gets the raw write path ----------------------------------------------------


def test_the_protocol_is_lent_only_by_a_server_that_has_one() -> None:
    """ExposeProtocol puts uvicorn's websockets-sansio protocol in a WebSocket's scope when
    ``send`` is its bound ``asgi_send``; any other ``send`` (another server or protocol class,
    a test client) leaves the scope alone, and such sockets are served by reading their
    queue."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)

    class WebSocketsSansIOProtocol:  # uvicorn's class name, as it is checked
        transport = writable = close_sent = disconnected = handshake_complete = None

        async def asgi_send(self, message: Any) -> None:
            del message

    async def plain_send(message: Any) -> None:
        del message

    class WSProtocol(WebSocketsSansIOProtocol):  # wsproto's: not lent
        pass

    async def go() -> None:
        wrapped = ExposeProtocol(app)
        await wrapped({"type": "websocket"}, None, WSProtocol().asgi_send)
        await wrapped({"type": "websocket"}, None, WebSocketsSansIOProtocol().asgi_send)
        await wrapped({"type": "websocket"}, None, plain_send)
        await wrapped({"type": "http"}, None, WebSocketsSansIOProtocol().asgi_send)

    asyncio.run(go())
    assert "mlspy.ws_protocol" not in scopes[0]
    assert isinstance(scopes[1].get("mlspy.ws_protocol"), WebSocketsSansIOProtocol)
    assert "mlspy.ws_protocol" not in scopes[2]
    assert "mlspy.ws_protocol" not in scopes[3]


def test_no_fanout_where_other_processes_write(tmp_path: Path) -> None:
    """Worker processes share the file (wake-ups between them): a node there reads its
    queue on every wake-up, as before; alone on its file it fans out."""
    alone = DeliveryService(SQLiteDatabase(tmp_path / "a.sqlite"))
    create_app(alone)
    assert alone.db.on_publish is not None  # type: ignore[attr-defined]
    shared = DeliveryService(SQLiteDatabase(tmp_path / "b.sqlite"))
    create_app(shared, wake_dir=str(tmp_path))
    assert shared.db.on_publish is None  # type: ignore[attr-defined]
    alone.db.close()
    shared.db.close()
