"""Abuse costs the abuser, and secrets stay out of URLs and logs (issue 18), each over a real
DS on loopback. Each attack was run against the DS before its defence and succeeded: a
token in the WebSocket URL was accepted (and logged), one token held any number of
sockets, a socket outlived its revoked token, a flood of challenges from one address was
answered until the per-address limit of the whole service (200/s), a client could push
megabytes a second, half a request body held a request open forever."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from ds_helpers import Member, open_push

from mlspy.ds import push
from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.limits import Limits
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService


class _Local:
    def __init__(self, server: InProcessServer, service: DeliveryService) -> None:
        self.url = server.url
        self.ws_url = server.ws_url
        self.port = server.port
        self.service = service


@pytest.fixture
def limits() -> Limits:
    return Limits()


@pytest.fixture
def local(tmp_path: Path, limits: Limits) -> Iterator[_Local]:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"), registration="open")
    with InProcessServer(create_app(service, limits=limits)) as server:
        yield _Local(server, service)


def _closed_with(coro: Any) -> int:
    with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
        asyncio.run(coro)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


# --- Secrets out of URLs ------------------------------------------------------------------


def test_a_token_in_the_websocket_url_is_refused(local: _Local) -> None:
    alice = Member.new(local.url, "alice")

    async def connect() -> None:
        async with websockets.connect(f"{local.ws_url}/v1/ws?token={alice.client.token}") as s:
            await s.recv()

    assert _closed_with(connect()) == 4400


def test_a_websocket_authenticates_by_header_or_first_message(local: _Local) -> None:
    alice, bob = Member.new(local.url, "alice"), Member.new(local.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()

    async def by_header() -> dict[str, Any]:
        headers = {"Authorization": f"bearer {bob.client.token}"}
        async with websockets.connect(f"{local.ws_url}/v1/ws", additional_headers=headers) as sock:
            assert json.loads(await sock.recv())["ready"] is True
            await asyncio.to_thread(alice.send, b"one")
            return json.loads(await asyncio.wait_for(sock.recv(), 10))  # type: ignore[no-any-return]

    async def by_message() -> dict[str, Any]:
        async with await open_push(local.ws_url, bob.client.token) as sock:
            return json.loads(await asyncio.wait_for(sock.recv(), 10))  # type: ignore[no-any-return]

    first = asyncio.run(by_header())
    assert first["kind"] == "message"
    again = asyncio.run(by_message())  # not acknowledged: sent again on the next socket
    assert again["seq"] == first["seq"]


@pytest.mark.parametrize("limits", [Limits(token_recheck=0.3)])
def test_a_socket_ends_when_its_token_is_revoked(local: _Local) -> None:
    """Logout (and the operator's revocation) end the token at once for HTTP and within
    ``token_recheck`` for open sockets; the user's other token keeps working."""
    alice = Member.new(local.url, "alice")
    other = alice.client.token
    alice.client.login()  # a second token of the same device
    revoked = alice.client.token

    async def listen() -> None:
        async with await open_push(local.ws_url, revoked) as sock:
            response = await asyncio.to_thread(
                httpx.post,
                f"{local.url}/v1/auth/logout",
                headers={"authorization": f"Bearer {revoked}"},
                json={},
            )
            assert response.json() == {"revoked": 1}
            await asyncio.wait_for(sock.recv(), 10)

    assert _closed_with(listen()) == 4401
    assert (
        httpx.get(
            f"{local.url}/v1/devices", headers={"authorization": f"Bearer {revoked}"}
        ).status_code
        == 401
    )
    assert (
        httpx.get(
            f"{local.url}/v1/devices", headers={"authorization": f"Bearer {other}"}
        ).status_code
        == 200
    )


# --- Sockets ------------------------------------------------------------------------------


@pytest.mark.parametrize("limits", [Limits(max_sockets_per_client=3)])
def test_one_client_cannot_open_more_sockets_than_its_cap(local: _Local) -> None:
    """The attack: one token opens hundreds of sockets, each woken on every message. Now the
    fourth is closed with 4429, and another user's socket works meanwhile."""
    alice, bob = Member.new(local.url, "alice"), Member.new(local.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()

    async def attack() -> tuple[int, dict[str, Any]]:
        held = [await open_push(local.ws_url, alice.client.token) for _ in range(3)]
        try:
            extra = await websockets.connect(f"{local.ws_url}/v1/ws")
            await extra.send(json.dumps({"token": alice.client.token}))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                await asyncio.wait_for(extra.recv(), 10)
            assert info.value.rcvd is not None
            async with await open_push(local.ws_url, bob.client.token) as sock:
                await asyncio.to_thread(alice.send, b"for bob")
                got = json.loads(await asyncio.wait_for(sock.recv(), 10))
            return info.value.rcvd.code, got
        finally:
            for s in held:
                await s.close()

    code, got = asyncio.run(attack())
    assert code == 4429 and got["kind"] == "message"

    async def after_closing() -> None:  # closed sockets free their places
        for _ in range(3):
            s = await open_push(local.ws_url, alice.client.token)
            await s.close()

    asyncio.run(after_closing())


def test_a_socket_that_never_authenticates_is_closed(
    local: _Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: open sockets and say nothing, holding server resources. Now a socket
    without a token in ``AUTH_TIMEOUT`` is closed with 4401."""
    monkeypatch.setattr(push, "AUTH_TIMEOUT", 0.5)

    async def idle() -> float:
        started = time.monotonic()
        async with websockets.connect(f"{local.ws_url}/v1/ws") as sock:
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                await asyncio.wait_for(sock.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401
        return time.monotonic() - started

    assert asyncio.run(idle()) < 5


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00binary", 1003),
        ("{not json", 4400),
        ('{"ack": "all"}', 4400),
        ('{"ack": [true]}', 4400),
    ],
)
def test_a_malformed_websocket_message_closes_with_a_code(
    local: _Local, frame: Any, code: int
) -> None:
    alice = Member.new(local.url, "alice")

    async def send_it() -> None:
        async with await open_push(local.ws_url, alice.client.token) as sock:
            await sock.send(frame)
            await asyncio.wait_for(sock.recv(), 10)

    assert _closed_with(send_it()) == code
    assert httpx.get(f"{local.url}/readyz").status_code == 200


# --- Rates --------------------------------------------------------------------------------


@pytest.mark.parametrize("limits", [Limits(anonymous_per_second=1.0, anonymous_burst=20)])
def test_an_anonymous_flood_is_refused_per_address_before_any_work(local: _Local) -> None:
    started = time.monotonic()
    statuses = [httpx.post(f"{local.url}/v1/auth/challenge").status_code for _ in range(60)]
    elapsed = time.monotonic() - started
    assert statuses[:20] == [200] * 20
    # The burst, then one a second: the rest refused.
    assert statuses.count(200) <= 20 + elapsed + 1 and statuses.count(429) >= 30
    refused = httpx.post(f"{local.url}/v1/auth/challenge")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "slow down" in refused.json()["error"]


@pytest.mark.parametrize("limits", [Limits(bytes_per_second=100_000, byte_burst=400_000)])
def test_a_client_pushing_bytes_too_fast_is_slowed_and_others_are_not(local: _Local) -> None:
    """The attack: one user sent 100 messages of 1 MB in 12 s. Now past its byte budget a
    client gets 429 with Retry-After; another client's requests go through meanwhile."""
    alice, bob = Member.new(local.url, "alice"), Member.new(local.url, "bob")
    alice.create()
    gid = alice.group.group_id.hex()  # type: ignore[union-attr]
    blob = base64.b64encode(b"\x00" * 200_000).decode()  # ~270 KB of JSON per request
    statuses = []
    # The burst is at least one largest request (3 x max_message: 12 MiB), then 100 kB/s.
    for _ in range(60):
        r = httpx.post(
            f"{local.url}/v1/groups/{gid}/messages",
            headers={"authorization": f"Bearer {alice.client.token}"},
            json={"message": blob},
            timeout=30,
        )
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1 and "bytes" in r.json()["error"]
    assert 429 in statuses and statuses[0] == 400  # 400: the bytes are not an MLS message
    assert bob.client.fetch() == []


@pytest.mark.parametrize("limits", [Limits(request_timeout=1.0)])
def test_half_a_request_body_times_out_and_is_not_an_error(
    local: _Local, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack: announce a body, send half, hold the request open. Now the DS answers 408
    after ``request_timeout``; a client that disconnects mid-body is not logged as an error."""
    alice = Member.new(local.url, "alice")
    head = (
        f"POST /v1/key_packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.client.token}"
        "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", local.port), timeout=10) as s:
            s.sendall(head + b'{"key_packages": [')
            started = time.monotonic()
            answer = s.recv(4096)
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert 0.5 < waited < 5
        with socket.create_connection(("127.0.0.1", local.port), timeout=10) as s:
            s.sendall(head + b'{"key_packages": [')
        time.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# --- Logs -----------------------------------------------------------------------------------


def test_no_secret_reaches_any_log_line(tmp_path: Path) -> None:
    """A full scenario with every logger at DEBUG and uvicorn's access log on: no token,
    challenge, signature, invite or pairing code appears in any log line."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    keep = Keep(level=logging.DEBUG)
    keep.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"), registration="invite")
    invite, _ = service.create_invite()
    server = InProcessServer(create_app(service), log_level="debug")
    # The server's loggers (uvicorn's do not propagate; the test's own HTTP and WebSocket
    # clients log what they send, so the root logger is not the place).
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn.access", "mlspy")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(keep)
        logger.setLevel(logging.DEBUG)
    try:
        with server:
            secrets = _scenario(server, invite)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(keep)
            logger.setLevel(level)
    text = "\n".join(records)
    assert "/v1/queue" in text and "/v1/ws" in text  # the access log was captured
    for secret in secrets:
        assert secret not in text, secret


def _scenario(server: InProcessServer, invite: str) -> list[str]:
    from mlspy.ds.client import DSClient
    from mlspy.group import SigningIdentity

    alice_id = SigningIdentity.generate(b"alice")
    alice = DSClient(server.url, alice_id)
    alice.register(invite_code=invite)
    alice.login()
    code = alice._call("POST", "/v1/invites")["code"]
    bob = Member.new.__func__  # type: ignore[attr-defined]
    bob_id = SigningIdentity.generate(b"bob")
    bob_client = DSClient(server.url, bob_id)
    bob_client.register(invite_code=code)
    bob_client.login()
    pairing = alice._call("POST", "/v1/devices/pairing")["code"]
    challenge = alice._call("POST", "/v1/auth/challenge")["challenge"]

    async def socket_round() -> None:
        async with await open_push(server.ws_url, bob_client.token) as sock:
            await sock.send(json.dumps({"ack": []}))
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            async with websockets.connect(f"{server.ws_url}/v1/ws?token={bob_client.token}") as s:
                await s.recv()

    asyncio.run(socket_round())
    bob_client.fetch()
    del bob
    assert alice.token and bob_client.token
    return [alice.token, bob_client.token, invite, code, pairing, challenge]
