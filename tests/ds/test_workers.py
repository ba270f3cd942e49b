"""``mlspy serve --workers 2``: two processes on one port and one SQLite file behave as one
server — a message accepted by either reaches a WebSocket held by either, a token ended on
one is refused by the other, and a worker killed with SIGKILL is replaced without losing
anything acknowledged."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from pathlib import Path

import httpx
from ds_helpers import Member, open_push
from test_server_ops import _start_serve

from mlspy.ds.token_cache import DEFAULT_TTL


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def wait_for(check: object, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


async def receive(ws_url: str, token: str, want: int, limit: float = 5.0) -> list[int]:
    """Seqs pushed on one socket (acknowledged on it) until ``want`` arrived."""
    got: list[int] = []
    sock = await open_push(ws_url, token)
    try:
        async with asyncio.timeout(limit):
            while len(got) < want:
                item = json.loads(await sock.recv())
                got.append(int(item["seq"]))
                assert base64.b64decode(item["data"])  # the message itself, not a wake-up
                await sock.send(json.dumps({"ack": [item["seq"]]}))
    finally:
        await sock.close()
    return got


def test_two_workers_are_one_server(tmp_path: Path) -> None:
    proc, port = _start_serve(tmp_path, "--workers", "2")
    url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    try:
        wait_for(lambda: len(children(proc.pid)) == 2)
        alice, bob = Member.new(url, "alice"), Member.new(url, "bob")
        alice.create()
        alice.add(bob)
        bob.sync()

        async def scenario() -> tuple[list[int], list[int]]:
            listening = asyncio.create_task(receive(ws_url, bob.client.token or "", 20))
            await asyncio.sleep(0.5)
            sent = []
            for i in range(20):
                # A new connection each time: the kernel spreads them over both workers.
                alice.client.http.close()
                alice.client.http = httpx.Client(base_url=url, timeout=30)
                sent.append(await asyncio.to_thread(alice.send, f"m{i}".encode()))
            return sent, await listening

        sent, got = asyncio.run(scenario())
        assert sorted(got) == sorted(sent)

        # One worker killed: the supervisor starts another; nothing acknowledged is lost.
        before = children(proc.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid))
        more = [alice.send(f"after {i}".encode()) for i in range(5)]
        assert sorted(asyncio.run(receive(ws_url, bob.client.token or "", 5))) == more

        # Logout on whichever worker answers: the other hears of it over the wake bus
        # at once (without it, only after the token cache's DEFAULT_TTL).
        headers = {"authorization": f"Bearer {bob.client.token}"}
        assert httpx.post(f"{url}/v1/auth/logout", json={}, headers=headers).status_code == 200
        deadline = time.monotonic() + min(1.0, DEFAULT_TTL / 2)
        refused = 0
        while refused < 20:  # 20 fresh connections in a row, spread over both workers
            with httpx.Client(base_url=url) as fresh:
                status = fresh.get("/v1/queue", headers=headers).status_code
            if status == 401:
                refused += 1
            else:
                refused = 0
                assert time.monotonic() < deadline, "a worker kept the ended token"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except Exception:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert not any(children_alive(p) for p in before)


def children_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
