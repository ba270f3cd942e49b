"""Issue 19: submissions on the WebSocket (``{"submit": …}``), over a real DS on loopback
(SQLite, and two nodes on PostgreSQL). They are judged by the HTTP route's rules: what a
member submits on its socket reaches the others, in the order sent; a lost commit gets the
same 409 and ``epoch``; an outsider is refused as over HTTP; bad frames get a 400 answer or
close the socket; the per-client rate and the per-socket backlog bound what one client costs;
and the metrics count them."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.ds.ds_helpers import Cluster, Member, open_push, pair

from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.limits import Limits
from mlspy.ds.push import MAX_PENDING_SUBMITS
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _frame(ident: int, group_id: bytes, message: bytes, **extra: Any) -> str:
    body = {"id": ident, "group_id": group_id.hex(), "message": _b64(message), **extra}
    return json.dumps({"submit": body})


async def _answers(sock: Any, count: int) -> dict[int, dict[str, Any]]:
    """The next ``count`` answers on ``sock`` by id (queue items in between are skipped)."""
    got: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(10):
        while len(got) < count:
            data = json.loads(await sock.recv())
            if "answer" in data:
                got[data["answer"]] = data
    return got


def test_messages_submitted_on_the_socket_reach_the_group_in_order(ds: Cluster) -> None:
    alice, bob = pair(ds.url)
    assert alice.group is not None
    texts = [f"message {i}".encode() for i in range(20)]
    frames = [
        _frame(i, alice.group.group_id, alice.group.encrypt_application(t))
        for i, t in enumerate(texts)
    ]

    async def go() -> dict[int, dict[str, Any]]:
        sock = await open_push(ds.ws_url, alice.client.token)
        try:
            for f in frames:  # pipelined: none waits for an answer
                await sock.send(f)
            return await _answers(sock, len(frames))
        finally:
            await sock.close()

    answers = asyncio.run(go())
    assert all(a["status"] == 200 for a in answers.values()), answers
    seqs = [answers[i]["seq"] for i in range(len(frames))]
    assert seqs == sorted(seqs), "accepted in the order sent"
    bob.sync()
    assert bob.received == texts


def test_a_lost_commit_is_refused_as_over_http(ds: Cluster) -> None:
    alice, bob = pair(ds.url)
    assert alice.group is not None and bob.group is not None
    winner = bob.group.commit([])
    bob.client.submit(bob.group.group_id, winner.commit, group_info=winner.group_info)
    loser = alice.group.commit([])

    async def go() -> dict[str, Any]:
        sock = await open_push(ds.ws_url, alice.client.token)
        try:
            await sock.send(
                _frame(7, alice.group.group_id, loser.commit, group_info=_b64(loser.group_info))
            )
            return (await _answers(sock, 1))[7]
        finally:
            await sock.close()

    answer = asyncio.run(go())
    assert answer["status"] == 409 and answer["epoch"] == 2, answer
    assert "error" in answer


def test_an_outsider_cannot_post_into_a_group_on_the_socket(ds: Cluster) -> None:
    alice, bob = pair(ds.url)
    assert alice.group is not None
    mallory = Member.new(ds.url, "mallory")
    mallory.create()
    assert mallory.group is not None
    # Mallory's own application message, stamped with the victim group's id.
    forged = alice.group.group_id
    message = mallory.group.encrypt_application(b"hello from outside")

    async def go() -> dict[str, Any]:
        sock = await open_push(ds.ws_url, mallory.client.token)
        try:
            await sock.send(_frame(1, forged, message))
            return (await _answers(sock, 1))[1]
        finally:
            await sock.close()

    answer = asyncio.run(go())
    assert answer["status"] in (400, 403), answer
    bob.sync()
    assert bob.received == []


def test_malformed_submissions_are_answered_or_close_the_socket(ds: Cluster) -> None:
    alice, _ = pair(ds.url)
    assert alice.group is not None
    gid = alice.group.group_id.hex()

    async def go() -> tuple[dict[int, dict[str, Any]], int | None]:
        sock = await open_push(ds.ws_url, alice.client.token)
        await sock.send(json.dumps({"submit": {"id": 1, "group_id": gid}}))  # no message
        await sock.send(json.dumps({"submit": {"id": 2, "group_id": gid, "message": "!!"}}))
        await sock.send(json.dumps({"submit": {"id": 3, "group_id": "zz", "message": "AAE="}}))
        await sock.send(_frame(4, bytes(16), b"\x00\x01garbage"))
        answers = await _answers(sock, 4)
        await sock.send(json.dumps({"submit": {"group_id": gid, "message": "AAE="}}))  # no id
        async with asyncio.timeout(10):
            with pytest.raises(Exception):  # noqa: B017 - websockets' ConnectionClosed
                while True:
                    await sock.recv()
        return answers, sock.close_code

    answers, code = asyncio.run(go())
    assert [answers[i]["status"] for i in (1, 2, 3, 4)] == [400, 400, 400, 400], answers
    assert all(isinstance(answers[i]["error"], str) for i in answers)
    assert code == 4400
    # The socket of a client that sent garbage closes; the client and the group go on.
    alice.send(b"still here")


def test_the_client_rate_and_the_socket_backlog_are_bounded(ds: Cluster) -> None:
    alice, _ = pair(ds.url)
    assert alice.group is not None
    message = alice.group.encrypt_application(b"x")
    count = 3 * MAX_PENDING_SUBMITS

    async def go() -> list[int]:
        sock = await open_push(ds.ws_url, alice.client.token)
        try:
            # The same message each time: only the first is stored (the rest are refused
            # for their generation), but every frame is work the DS must bound.
            await asyncio.gather(
                *(sock.send(_frame(i, alice.group.group_id, message)) for i in range(count))
            )
            answers = await _answers(sock, count)
            return [answers[i]["status"] for i in range(count)]
        finally:
            await sock.close()

    statuses = asyncio.run(go())
    assert 429 in statuses, "neither the rate nor the backlog bound refused anything"
    assert statuses.count(200) + statuses.count(400) + statuses.count(429) == count


@pytest.mark.parametrize("ds", ["sqlite"], indirect=True)
def test_socket_submissions_are_counted_in_the_metrics(ds: Cluster) -> None:
    alice, _ = pair(ds.url)
    assert alice.group is not None
    message = alice.group.encrypt_application(b"counted")

    async def go() -> None:
        sock = await open_push(ds.ws_url, alice.client.token)
        try:
            await sock.send(_frame(1, alice.group.group_id, message))
            assert (await _answers(sock, 1))[1]["status"] == 200
        finally:
            await sock.close()

    asyncio.run(go())
    text = httpx.get(f"{ds.url}/metrics").text
    line = 'mlspy_ds_submissions_total{kind="application",outcome="accepted"}'
    assert any(row.startswith(line) and float(row.split()[-1]) >= 1 for row in text.splitlines())


def test_ready_says_how_large_a_frame_may_be(ds: Cluster) -> None:
    member = Member.new(ds.url, "carol")

    async def go() -> dict[str, Any]:
        import websockets

        sock = await websockets.connect(f"{ds.ws_url}/v1/ws")
        try:
            await sock.send(json.dumps({"token": member.client.token}))
            return dict(json.loads(await sock.recv()))
        finally:
            await sock.close()

    ready = asyncio.run(go())
    assert ready["ready"] is True and ready["max_frame"] == 1 << 20


def test_a_flood_of_bad_submissions_is_charged_and_disconnected(tmp_path: Path) -> None:
    """The attack: garbage ``{"submit": …}`` frames, each answered 400, were never charged to
    the client's rates, so one client could keep the DS decoding forever. Now every frame is
    charged as it arrives; past the rate the socket is closed (4429), and others go on."""
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    app = create_app(service, limits=Limits(requests_per_second=5, request_burst=40))
    with InProcessServer(app) as server:
        alice, bob = pair(server.url)
        assert alice.group is not None
        gid = alice.group.group_id.hex()

        async def flood() -> tuple[int, int | None]:
            sock = await open_push(server.ws_url, alice.client.token)
            answered = 0
            with pytest.raises(Exception):  # noqa: B017 - websockets' ConnectionClosed
                for i in range(200):
                    frame = {"submit": {"id": i, "group_id": gid, "message": "!!"}}
                    await sock.send(json.dumps(frame))
                async with asyncio.timeout(10):
                    while True:
                        if "answer" in json.loads(await sock.recv()):
                            answered += 1
            return answered, sock.close_code

        answered, code = asyncio.run(flood())
        assert code == 4429 and answered <= 40
        bob.send(b"bob is not slowed down")
        time.sleep(1)  # alice's own budget refills (5 a second)
        alice.sync()
        assert alice.received == [b"bob is not slowed down"]
