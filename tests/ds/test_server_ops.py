"""The server as ``mlspy serve`` runs it: deadlines for idle connections and half-sent requests,
logs (JSON lines with tracebacks, no secrets from query strings), loopback by default."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ds_helpers import Member

from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.limits import Limits
from mlspy.ds.logs import JsonFormatter, make_handler, redact
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService

SHORT = Limits(http_idle_timeout=0.5, request_timeout=1.0)


def closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (reading what it sends), at most ``limit``."""
    sock.settimeout(limit)
    start, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return float("inf"), data
    return time.monotonic() - start, data


@pytest.fixture
def short_server(tmp_path: Path) -> Iterator[InProcessServer]:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    with InProcessServer(create_app(service), limits=SHORT) as server:
        yield server


def test_a_connection_that_sends_nothing_is_closed(short_server: InProcessServer) -> None:
    with socket.create_connection(("127.0.0.1", short_server.port)) as sock:
        elapsed, data = closed_after(sock, 5)
    assert elapsed < 1.5 and data == b""


def test_an_idle_keep_alive_connection_is_closed(short_server: InProcessServer) -> None:
    with socket.create_connection(("127.0.0.1", short_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ds\r\n\r\n")
        sock.settimeout(5)
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        elapsed, _ = closed_after(sock, 5)
    assert elapsed < 1.5


def test_half_a_request_head_is_answered_408_and_closed(short_server: InProcessServer) -> None:
    with socket.create_connection(("127.0.0.1", short_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ds\r\n")  # no blank line: never ends
        elapsed, data = closed_after(sock, 5)
    assert 0.8 < elapsed < 2.5 and data.startswith(b"HTTP/1.1 408")


def test_a_head_sent_a_byte_at_a_time_cannot_hold_the_connection(
    short_server: InProcessServer,
) -> None:
    """Slowloris: every byte arrives before the idle timeout, the request never completes."""
    head = b"GET /healthz HTTP/1.1\r\nHost: ds\r\nX-Padding: " + b"a" * 100
    with socket.create_connection(("127.0.0.1", short_server.port)) as sock:
        start = time.monotonic()
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                if time.monotonic() - start > 5:
                    break
        except OSError:  # closed under us: what we want
            pass
        elapsed = time.monotonic() - start
        _, data = closed_after(sock, 5)
    assert elapsed < 2.5 and data.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("shape", ["many headers", "one huge header"])
def test_a_huge_request_head_is_refused_431(short_server: InProcessServer, shape: str) -> None:
    """uvicorn would buffer a head of any size (200 MB in half a second); we stop at
    MAX_HEAD."""
    from mlspy.ds.server import MAX_HEAD

    with socket.create_connection(("127.0.0.1", short_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ds\r\n")
        if shape == "one huge header":
            sock.sendall(b"X-Big: ")
        sent = 0
        try:
            while sent < 50 * MAX_HEAD:
                chunk = (
                    b"a" * 8000 if shape == "one huge header" else b"X-A: " + b"a" * 8000 + b"\r\n"
                )
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server hung up: what we want
            pass
        elapsed, data = closed_after(sock, 5)
    assert data.startswith(b"HTTP/1.1 431") and elapsed < 1.0


def test_a_large_body_is_not_a_large_head(short_server: InProcessServer) -> None:
    member = Member.new(short_server.url, "alice")
    body = b'{"key_packages": ["' + b"A" * (2 * 1024 * 1024) + b'"]}'
    response = httpx.post(
        short_server.url + "/v1/key_packages",
        content=body,
        headers={"authorization": f"Bearer {member.client.token}"},
    )
    assert response.status_code in (400, 413), response.text  # judged by the app, not 431


def test_half_a_body_ends_the_connection(short_server: InProcessServer) -> None:
    with socket.create_connection(("127.0.0.1", short_server.port)) as sock:
        sock.sendall(
            b"POST /v1/auth/challenge HTTP/1.1\r\nHost: ds\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"a":'
        )
        elapsed, _ = closed_after(sock, 5)
    assert elapsed < 2.5


def test_a_slow_but_whole_request_and_websockets_are_not_cut(
    short_server: InProcessServer,
) -> None:
    """The deadlines end stalled connections, not working ones: a request sent in parts
    within the deadline is answered, and a WebSocket outlives the HTTP timeouts."""
    with socket.create_connection(("127.0.0.1", short_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.6)  # past the idle timeout, within the request timeout
        sock.sendall(b"Host: ds\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    member = Member.new(short_server.url, "alice")
    import websockets.sync.client

    url = f"{short_server.ws_url}/v1/ws"
    with websockets.sync.client.connect(url) as ws:
        ws.send(json.dumps({"token": member.client.token}))
        assert json.loads(ws.recv(timeout=5))["ready"] is True
        time.sleep(2.0)  # longer than both HTTP deadlines
        member.create()
        assert member.group is not None
        other = Member.new(short_server.url, "bob")
        member.add(other)
        with websockets.sync.client.connect(url) as ws2:
            ws2.send(json.dumps({"token": other.client.token}))
            assert json.loads(ws2.recv(timeout=5))["ready"] is True
            assert json.loads(ws2.recv(timeout=5))["kind"] == "welcome"
        ws.ping().wait(5)


# --- Logs ----------------------------------------------------------------------------------


def test_redaction_of_query_secrets() -> None:
    line = '127.0.0.1:5 - "GET /v1/ws?token=abc.DEF-123&after=4&code=XY-12 HTTP/1.1" 101'
    assert redact(line) == (
        '127.0.0.1:5 - "GET /v1/ws?token=[redacted]&after=4&code=[redacted] HTTP/1.1" 101'
    )
    assert redact("/v1/queue?after=4&monkey=1") == "/v1/queue?after=4&monkey=1"


def test_json_log_lines_keep_the_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("mlspy.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise RuntimeError("database away")
        except RuntimeError:
            log.exception("GET /v1/queue failed")
    finally:
        log.removeHandler(handler)
    doc = json.loads(stream.getvalue())
    assert doc["message"] == "GET /v1/queue failed" and doc["level"] == "ERROR"
    assert "Traceback" in doc["exception"] and "RuntimeError: database away" in doc["exception"]


class _Broken(DeliveryService):
    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the disk is on fire")


def test_a_real_server_logs_unexpected_errors_with_traceback_and_no_token(
    tmp_path: Path,
) -> None:
    """Over loopback, with the access log on: a 500 is logged as one JSON line with its
    traceback, and a token in a query string never reaches the log."""
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        service = _Broken(SQLiteDatabase(tmp_path / "ds.sqlite"))
        with InProcessServer(create_app(service), access_log=True, log_level="info") as server:
            member = Member.new(server.url, "alice")
            token = member.client.token
            assert token
            response = httpx.get(
                f"{server.url}/v1/queue?token={token}&after=0",
                headers={"authorization": f"Bearer {token}"},
            )
            assert response.status_code == 500
            import websockets.sync.client

            with websockets.sync.client.connect(f"{server.ws_url}/v1/ws?token={token}"):
                time.sleep(0.2)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert token not in stream.getvalue()
    failed = [d for d in lines if d["message"].endswith("failed")]
    assert failed and "RuntimeError: the disk is on fire" in failed[0]["exception"]
    assert any("/v1/queue?token=[redacted]&after=0" in d["message"] for d in lines)
    assert any("/v1/ws?token=[redacted]" in d["message"] for d in lines)


# --- mlspy serve, as a process -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from mlspy.cli import main; main()",
            "serve",
            "--port",
            str(port),
            "--database",
            str(tmp_path / "ds.sqlite"),
            "--registration",
            "open",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"mlspy serve did not start: {proc.communicate()[1]}")


def test_mlspy_serve_applies_its_configured_timeouts_and_logs_no_token(tmp_path: Path) -> None:
    config = tmp_path / "mlspy.toml"
    config.write_text('[limits]\nrequest_timeout = 1.0\n[log]\nformat = "json"\n')
    proc, port = _start_serve(
        tmp_path,
        "--config",
        str(config),
        env={"MLSPY_LIMITS_HTTP_IDLE_TIMEOUT": "0.5"},
    )
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            elapsed, _ = closed_after(sock, 5)
        assert elapsed < 1.5
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ds\r\n")
            elapsed, data = closed_after(sock, 5)
        assert elapsed < 2.5 and data.startswith(b"HTTP/1.1 408")
        secret = "s3cr3t-T0KEN-value"
        httpx.get(f"http://127.0.0.1:{port}/healthz?token={secret}")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert secret not in err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("/healthz?token=[redacted]" in d["message"] for d in logged)
    assert "without TLS" not in err  # loopback: no warning


def test_serve_warns_on_a_public_address_without_tls(tmp_path: Path) -> None:
    proc, _ = _start_serve(tmp_path, "--host", "0.0.0.0", "--log-format", "text")
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert "listening on 0.0.0.0 without TLS" in err


def test_servers_listen_on_loopback_by_default() -> None:
    from click.testing import CliRunner

    from mlspy.cli import main

    for command in ("serve", "interop-server"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        assert "[default: 127.0.0.1]" in " ".join(text.split()), command
    result = CliRunner().invoke(main, ["serve", "--print-config"], env={"MLSPY_HOST": None})
    assert 'host = "127.0.0.1"' in result.output


def _interop_server(*args: str) -> tuple[str, str]:
    """Start `mlspy interop-server` on a free port, read its first line, stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from mlspy.cli import main; main()", "interop-server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    return line, err


def test_interop_server_listens_on_loopback_unless_told_and_warns() -> None:
    port = _free_port()
    line, err = _interop_server("--port", str(port))
    assert line.strip() == f"mlspy interop server listening on 127.0.0.1:{port}"
    assert "warning" not in err
    port = _free_port()
    line, err = _interop_server("--host", "0.0.0.0", "--port", str(port))
    assert line.strip().endswith(f"0.0.0.0:{port}")
    assert "can read private keys and group secrets" in err


def test_a_websocket_peer_that_stops_answering_is_dropped(tmp_path: Path) -> None:
    """ws_idle_timeout: the server pings a silent socket halfway and drops a peer whose pong
    does not come back (a raw socket that completes the handshake, then never reads)."""
    import base64

    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    limits = Limits(ws_idle_timeout=1.0)
    with InProcessServer(create_app(service), limits=limits) as server:
        member = Member.new(server.url, "alice")
        token = member.client.token
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                (
                    f"GET /v1/ws HTTP/1.1\r\nHost: ds\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
                ).encode()
            )
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 101")
            elapsed, data = closed_after(sock, 10)
    assert elapsed < 3.0
    assert b"\x89" in data  # a ping frame came first (opcode 0x9, FIN set)


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://mlspy:sekrit-pw@127.0.0.1:{_free_port()}/mlspy"
    command = [sys.executable, "-c", "from mlspy.cli import run; run()"]
    run = subprocess.run(
        [*command, "serve", "--port", str(_free_port()), "--database", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "sekrit-pw" not in run.stdout + run.stderr
    assert "cannot use PostgreSQL at 127.0.0.1" in run.stderr
    run = subprocess.run(
        [*command, "admin", "users", "--database", url], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1 and "sekrit-pw" not in run.stdout + run.stderr
    assert "127.0.0.1" in run.stderr
