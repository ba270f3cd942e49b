"""The DS's Prometheus metrics over a real server: counters move by what a scenario did,
labels are route templates, no secret reaches the metrics text, and /metrics is not public."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from ds_helpers import Cluster, Member
from prometheus_client.parser import text_string_to_metric_families

from mlspy.ds.app import create_app
from mlspy.ds.client import DSConflict
from mlspy.ds.config import ConfigError, load, metrics_token
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.metrics import Metrics
from mlspy.ds.server import InProcessServer, build_app
from mlspy.ds.service import DeliveryService

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> str:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(ds: Cluster) -> Samples:
    """Every node's samples, summed (with PostgreSQL the clients are spread over two nodes)."""
    out: Samples = {}
    for server in ds.servers:
        for key, value in parse(scrape(server.url)).items():
            out[key] = out.get(key, 0.0) + value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def gauge(url: str, name: str) -> float:
    return value(parse(scrape(url)), name)


def wait_for_gauge(ds: Cluster, name: str, expected: float) -> None:
    deadline = time.time() + 10
    while sum(gauge(s.url, name) for s in ds.servers) != expected:
        assert time.time() < deadline, f"{name} never became {expected}"
        time.sleep(0.05)


def requests(before: Samples, after: Samples, method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return moved(before, after, "mlspy_ds_http_requests_total", **labels)


async def _open_socket(ws_url: str, token: str) -> websockets.ClientConnection:
    """A WebSocket authenticated by its first message (never by the URL), once ready."""
    sock = await websockets.connect(f"{ws_url}/v1/ws")
    await sock.send(json.dumps({"token": token}))
    assert json.loads(await sock.recv())["ready"] is True
    return sock


def test_a_scenario_moves_the_counters_by_what_it_did(ds: Cluster) -> None:
    base = ds.servers[0].url
    before = total(ds)

    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    alice.create()
    alice.add(bob)  # commit 1, accepted
    assert bob.sync() == ["joined"]
    assert alice.group is not None and bob.group is not None
    gid = alice.group.group_id
    out = bob.group.commit()  # commit 2 (bob's) wins the epoch ...
    bob.client.submit(gid, out.commit)
    bob.group.merge_pending_commit()
    losing = alice.group.commit()  # ... and alice's for the same epoch loses: 409
    with pytest.raises(DSConflict):
        alice.client.submit(gid, losing.commit)
    alice.group.clear_pending_commit()

    # bob's commit waits in alice's queue, and nothing else anywhere.
    depth = parse(scrape(base))
    assert value(depth, "mlspy_ds_queue_messages") == 1
    assert value(depth, "mlspy_ds_queue_clients") == 1
    assert value(depth, "mlspy_ds_queue_depth_age_seconds") == 0
    alice.sync()  # fetch + ack
    assert value(parse(scrape(base)), "mlspy_ds_queue_messages") == 0

    async def push() -> None:
        assert bob.client.token is not None
        sock = await _open_socket(ds.ws_url, bob.client.token)
        try:
            await asyncio.to_thread(wait_for_gauge, ds, "mlspy_ds_websockets_open", 1)
            await asyncio.to_thread(alice.send, b"over the socket")  # application, accepted
            item = json.loads(await asyncio.wait_for(sock.recv(), timeout=10))
            await sock.send(json.dumps({"ack": [item["seq"]]}))
            await asyncio.sleep(0.2)
        finally:
            await sock.close()

    asyncio.run(push())
    wait_for_gauge(ds, "mlspy_ds_websockets_open", 0)

    headers = {"authorization": f"Bearer {alice.client.token}"}
    secret_path = "/v1/no-such-route/" + "ab" * 16
    assert httpx.get(base + secret_path, headers=headers).status_code == 404
    missing = f"{base}/v1/groups/{'cd' * 16}/group_info"
    assert httpx.get(missing, headers=headers).status_code == 404
    after = total(ds)

    # Authentication: two registrations and two logins, each after a challenge.
    assert requests(before, after, "POST", "/v1/auth/challenge", "2xx") == 4
    assert requests(before, after, "POST", "/v1/auth/register", "2xx") == 2
    assert requests(before, after, "POST", "/v1/auth/token", "2xx") == 2
    assert requests(before, after, "POST", "/v1/key_packages", "2xx") == 2
    assert requests(before, after, "POST", "/v1/groups", "2xx") == 1
    assert requests(before, after, "POST", "/v1/key_packages/claim", "2xx") == 1
    # alice's add, bob's commit and alice's message; the losing commit is a 409.
    route = "/v1/groups/{group_id}/messages"
    assert requests(before, after, "POST", route, "2xx") == 3
    assert requests(before, after, "POST", route, "4xx") == 1
    assert requests(before, after, "GET", "/v1/queue", "2xx") == 2  # bob's sync, alice's
    assert requests(before, after, "POST", "/v1/queue/ack", "2xx") == 2
    assert requests(before, after, "GET", "/v1/groups/{group_id}/group_info", "4xx") == 1
    assert requests(before, after, "GET", "unmatched", "4xx") == 1
    sub = "mlspy_ds_submissions_total"
    assert moved(before, after, sub, kind="commit", outcome="accepted") == 2
    assert moved(before, after, sub, kind="commit", outcome="conflict") == 1
    assert moved(before, after, sub, kind="application", outcome="accepted") == 1
    assert moved(before, after, "mlspy_ds_websocket_connections_total", outcome="accepted") >= 1
    # Latency histograms are per template too: one observation per request.
    count = "mlspy_ds_http_request_duration_seconds_count"
    assert moved(before, after, count, method="POST", route=route, status="2xx") == 3
    assert value(after, "mlspy_ds_http_requests_in_flight") == 0
    assert moved(before, after, "mlspy_ds_database_errors_total", status="500") == 0

    # Labels are templates: no raw path, group id, token or key reaches the metrics text.
    text = "".join(scrape(s.url) for s in ds.servers)
    routes = {dict(k[1]).get("route") for k in after} - {None}
    assert all(r == "unmatched" or r == "/metrics" or r.startswith("/v1/") for r in routes)
    assert not any(r and "{" not in r and r.count("/") > 3 for r in routes)
    for secret in (
        alice.client.token,
        bob.client.token,
        gid.hex(),
        "ab" * 16,
        "cd" * 16,
        base64.b64encode(alice.identity.signature_key).decode(),
        alice.identity.signature_key.hex(),
    ):
        assert secret and secret not in text


def test_refused_requests_are_counted_by_reason(ds: Cluster) -> None:
    node = ds.servers[0]
    alice = Member.new(node.url, "alice")
    before = parse(scrape(node.url))
    # 413: a body announced larger than the server reads, refused before it is sent.
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/key_packages HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {alice.client.token}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n"
        )
        head = raw.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:100]
    # 429: recovery attempts are limited per address (20 an hour).
    wrong = {k: "AAAA" for k in ("identity", "credential", "signature_key", "challenge")}
    wrong |= {"signature": "AAAA", "recovery_hash": "AAAA", "recovery_secret": "guess"}
    statuses = [
        httpx.post(f"{node.url}/v1/auth/recover", json=wrong).status_code for _ in range(25)
    ]
    assert 429 in statuses
    after = parse(scrape(node.url))
    refused = "mlspy_ds_refused_requests_total"
    assert moved(before, after, refused, reason="too_large", route="/v1/key_packages") == 1
    assert moved(before, after, refused, reason="rate_limited", route="/v1/auth/recover") == (
        statuses.count(429)
    )


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[tuple[InProcessServer, DeliveryService]]:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    with InProcessServer(create_app(service)) as server:
        yield server, service


def test_a_scrape_does_not_wait_for_a_busy_database(
    sqlite_server: tuple[InProcessServer, DeliveryService],
) -> None:
    """The queue-depth query waits at most a second; then the last value is reported with
    its age, and the miss is counted."""
    server, service = sqlite_server
    first = parse(scrape(server.url))
    assert value(first, "mlspy_ds_queue_depth_age_seconds") == 0
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with service.db.transaction():  # SQLite: the one writer, until released
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(5)
        start = time.monotonic()
        busy = parse(scrape(server.url))
        assert time.monotonic() - start < 5
    finally:
        release.set()
        holder.join()
    assert value(busy, "mlspy_ds_queue_depth_age_seconds") > 0
    assert value(busy, "mlspy_ds_queue_depth_failures_total") == 1
    assert value(busy, "mlspy_ds_queue_messages") == 0  # the last value read
    deadline = time.time() + 10
    while value(parse(scrape(server.url)), "mlspy_ds_queue_depth_age_seconds") != 0:
        assert time.time() < deadline, "the queue depth was never read again"
        time.sleep(0.1)


def test_metrics_are_for_loopback_only_by_default(
    sqlite_server: tuple[InProcessServer, DeliveryService],
) -> None:
    server, _ = sqlite_server
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    # Behind a reverse proxy on the same host, uvicorn takes the client's address from
    # X-Forwarded-For (it trusts the header from loopback): that client is not local.
    proxied = httpx.get(f"{server.url}/metrics", headers={"x-forwarded-for": "203.0.113.7"})
    assert proxied.status_code == 403
    assert proxied.json() == {"error": "metrics are served to loopback clients only"}
    assert httpx.post(f"{server.url}/metrics").status_code == 405


def test_a_metrics_token_is_needed_by_everyone_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSPY_METRICS_TOKEN", "metrics-s3cret-value")
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    with InProcessServer(create_app(service)) as server:
        url = f"{server.url}/metrics"
        refused = httpx.get(url)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
        text = scrape(server.url, authorization="bearer metrics-s3cret-value")
        assert "mlspy_ds_http_requests_total" in text
        assert "metrics-s3cret-value" not in text


def test_serve_settings_choose_who_reads_the_metrics(tmp_path: Path) -> None:
    """What `mlspy serve` builds from its settings: a token file (compose's secret) makes
    the token needed by every client; metrics_public opens it to all; neither: loopback."""
    (tmp_path / "token").write_text("file-token-value\n")
    forwarded = {"x-forwarded-for": "203.0.113.7"}  # a client that is not local
    cases = [
        ({"MLSPY_METRICS_TOKEN_FILE": str(tmp_path / "token")}, 401, "file-token-value"),
        ({"MLSPY_METRICS_PUBLIC": "true"}, 200, None),
        ({}, 403, None),
    ]
    for env, outsider, token in cases:
        settings, _ = load(environ={"MLSPY_DATABASE": str(tmp_path / "ds.sqlite"), **env})
        service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
        with InProcessServer(build_app(service, settings)) as server:
            url = f"{server.url}/metrics"
            assert httpx.get(url, headers=forwarded).status_code == outsider, env
            if token is not None:
                assert httpx.get(url).status_code == 401  # loopback needs it too
                headers = {"authorization": f"Bearer {token}", **forwarded}
                assert httpx.get(url, headers=headers).status_code == 200
    (tmp_path / "empty").write_text("\n")
    settings, _ = load(environ={"MLSPY_METRICS_TOKEN_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match=r"metrics_token_file: .* is empty"):
        metrics_token(settings)


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    with InProcessServer(create_app(service, metrics=False)) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 404
        assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_broken_database_is_counted_and_the_scrape_still_answers(
    sqlite_server: tuple[InProcessServer, DeliveryService],
) -> None:
    """With the database gone, requests end in 500 (503 once the DS says "unavailable"):
    counted as database errors; the scrape answers with the last queue depth."""
    server, service = sqlite_server
    alice = Member.new(server.url, "alice")
    before = parse(scrape(server.url))
    service.db.close()
    response = httpx.get(
        f"{server.url}/v1/key_packages/count",
        headers={"authorization": f"Bearer {alice.client.token}"},
    )
    assert response.status_code in (500, 503)
    after = parse(scrape(server.url))
    status = str(response.status_code)
    assert moved(before, after, "mlspy_ds_database_errors_total", status=status) == 1
    labels = {"method": "GET", "route": "/v1/key_packages/count", "status": "5xx"}
    assert moved(before, after, "mlspy_ds_http_requests_total", **labels) == 1
    assert value(after, "mlspy_ds_queue_depth_failures_total") == 1
    assert value(after, "mlspy_ds_queue_depth_age_seconds") > 0


def test_a_refused_websocket_is_counted_and_not_left_open(
    sqlite_server: tuple[InProcessServer, DeliveryService],
) -> None:
    server, _ = sqlite_server
    before = parse(scrape(server.url))

    async def intrude() -> int | None:
        async with websockets.connect(f"{server.ws_url}/v1/ws") as sock:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await sock.send(json.dumps({"token": "not-a-token"}))
                await asyncio.wait_for(sock.recv(), timeout=10)
            return sock.close_code

    assert asyncio.run(intrude()) == 4401
    deadline = time.time() + 10
    while gauge(server.url, "mlspy_ds_websockets_open") != 0:
        assert time.time() < deadline
        time.sleep(0.05)
    after = parse(scrape(server.url))
    closed = moved(before, after, "mlspy_ds_websocket_server_closes_total", code="4401")
    refused = moved(before, after, "mlspy_ds_websocket_connections_total", outcome="refused")
    assert closed + refused == 1
    assert "not-a-token" not in scrape(server.url)


def test_public_metrics_are_served_to_anyone(tmp_path: Path) -> None:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    app = create_app(service, metrics=Metrics(service.db, public=True))
    with InProcessServer(app) as server:
        text = scrape(server.url, **{"x-forwarded-for": "203.0.113.7"})
        assert "mlspy_ds_queue_messages" in text


def test_the_middleware_also_wraps_the_app_from_outside(tmp_path: Path) -> None:
    """``Metrics.wrap``: outside Starlette's own error middleware, the templates still come
    through and a 404 is still 'unmatched'."""
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    metrics = Metrics(service.db)
    with InProcessServer(metrics.wrap(create_app(service, metrics=False))) as server:
        httpx.post(f"{server.url}/v1/auth/challenge").raise_for_status()
        assert httpx.get(f"{server.url}/v1/groups/00/nothing").status_code == 404
        after = parse(scrape(server.url))
    labels = {"method": "POST", "route": "/v1/auth/challenge", "status": "2xx"}
    assert value(after, "mlspy_ds_http_requests_total", **labels) == 1
    labels = {"method": "GET", "route": "unmatched", "status": "4xx"}
    assert value(after, "mlspy_ds_http_requests_total", **labels) == 1
