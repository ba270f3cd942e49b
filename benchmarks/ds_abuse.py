"""A bystander's latency while one abuser floods the Delivery Service, over loopback.

    .venv/bin/python benchmarks/ds_abuse.py [--duration 10] [--only sockets,challenges]
        [--url http://127.0.0.1:8080]

Each scenario starts a fresh DS (``mlspy serve --registration open`` on SQLite, its own
process) unless ``--url`` names a running one (it must allow open registration). Two ordinary
users, the bystanders, share a group: ten times a second one sends a real MLS application
message and the other fetches until it arrives and acknowledges it (send → receive), and the
sender makes one authenticated GET (the KeyPackage count). Meanwhile an attacker, in its own
process (asyncio, httpx, websockets), runs one flood:

- ``baseline``: no attacker.
- ``sockets``: one token opens hundreds of WebSockets (the token in the URL, or as the first
  message ``{"token": ...}`` where the server refuses URL tokens) while a second attacker
  client sends to a group they share, so every socket is woken on every message.
- ``challenges``: anonymous ``POST /v1/auth/challenge`` from one address, many at a time.
- ``requests``: one client's authenticated GETs, many at a time.
- ``large``: one user submits 1 MB application messages, a few at a time.
- ``slowloris``: hundreds of connections that send nothing, half a request head, or a head
  and half a body, trickling a few bytes every 2 s; they are held for ``--hold`` seconds
  (35 by default, past the server's request timeouts) and the row says when the server
  closed them.

One table row per scenario: the bystander's p50/p99/max in milliseconds, how many of its
operations failed, and what the attacker got (accepted, 429, 413, closed, …). Numbers are
loopback numbers on a shared machine: read them as ratios to the baseline row.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mlspy.ds.client import DSClient, DSRequestError
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import Add, MLSMessage, Proposal

SCENARIOS = ("baseline", "sockets", "challenges", "requests", "large", "slowloris")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DSProcess:
    """``mlspy serve`` on a fresh SQLite database, as operators run it."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / f"ds-{self.port}.sqlite"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DSProcess:
        code = "from mlspy.cli import main; main()"
        args = ["serve", "--port", str(self.port), "--database", str(self.db)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args, "--registration", "open"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError("the DS did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- users ------------------------------------------------------------------------------


def _patient(fn: Callable[[], Any]) -> Any:
    """Call through 429s and 503s (an earlier flood may have used up this address's
    allowance): wait as told, up to 60 s."""
    deadline = time.time() + 60
    while True:
        try:
            return fn()
        except DSRequestError as exc:
            if exc.status not in (429, 503) or time.time() > deadline:
                raise
            time.sleep(min(5.0, float(exc.body.get("retry_after", 0.5) or 0.5)))


@dataclass
class User:
    name: bytes
    identity: SigningIdentity
    ds: DSClient
    bundles: list[Any] = field(default_factory=list)
    group: Group | None = None


def new_user(url: str, label: str) -> User:
    name = f"{label}-{uuid.uuid4().hex[:8]}".encode()
    identity = SigningIdentity.generate(name)
    ds = DSClient(url, identity)
    _patient(ds.register)
    _patient(ds.login)
    user = User(name, identity, ds, [create_key_package(identity)])
    _patient(lambda: ds.upload_key_packages(user.bundles))
    return user


def pair(url: str, label: str) -> tuple[User, User]:
    """Two users in one group: the first created it and added the second, who joined."""
    a, b = new_user(url, f"{label}-a"), new_user(url, f"{label}-b")
    a.group = Group.create(a.identity)
    a.ds.create_group(a.group.group_info())
    kp = MLSMessage.decode(_patient(lambda: a.ds.claim_key_package(b.name))).key_package
    assert kp is not None
    out = a.group.commit([Proposal(Add(kp))])
    a.ds.submit(a.group.group_id, out.commit, welcome=out.welcome)
    a.group.merge_pending_commit()
    items = b.ds.fetch()
    b.group = Group.join(items[0]["data"], b.bundles)
    b.ds.ack([i["seq"] for i in items])
    return a, b


# --- the bystander ----------------------------------------------------------------------


@dataclass
class Bystander:
    roundtrips: list[float] = field(default_factory=list)
    gets: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)


def _failure(exc: Exception) -> str:
    if isinstance(exc, DSRequestError):
        return str(exc.status)
    return type(exc).__name__


def watch(alice: User, bob: User, duration: float, rate: float = 10.0) -> Bystander:
    """Send → receive and one GET, ``rate`` times a second, for ``duration`` seconds."""
    out = Bystander()
    assert alice.group is not None
    gid, last = alice.group.group_id, 0
    end = time.perf_counter() + duration
    while (now := time.perf_counter()) < end:
        try:
            data = alice.group.encrypt_application(b"hello bob")
            seq = alice.ds.submit(gid, data)
            while True:  # usually one fetch: the message is queued when submit returns
                items = bob.ds.fetch(last)
                if items:
                    last = max(i["seq"] for i in items)
                    bob.ds.ack([i["seq"] for i in items])
                if any(i["seq"] == seq for i in items):
                    break
                if time.perf_counter() - now > 30:
                    raise TimeoutError("the message never arrived")
                time.sleep(0.001)
            out.roundtrips.append(time.perf_counter() - now)
        except Exception as exc:
            out.failures[f"send:{_failure(exc)}"] += 1
        start = time.perf_counter()
        try:
            alice.ds.count_key_packages()
            out.gets.append(time.perf_counter() - start)
        except Exception as exc:
            out.failures[f"get:{_failure(exc)}"] += 1
        time.sleep(max(0.0, now + 1 / rate - time.perf_counter()))
    return out


# --- attackers (each in its own process) ------------------------------------------------


@dataclass
class Attack:
    url: str
    ready: Any  # multiprocessing.Event: set once the attacker is set up
    stop: Any  # multiprocessing.Event: the window is over
    sockets: int
    connections: int
    workers: int
    # slowloris: hold the connections at least this long (past the server's timeouts),
    # even after the bystander's window.
    slow_hold: float = 0.0
    tally: Counter[str] = field(default_factory=Counter)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    def running(self) -> bool:
        return not self.stop.is_set()


def _status_loop(attack: Attack, send: Callable[[httpx.AsyncClient], Any]) -> Any:
    """``workers`` coroutines repeating one request until the window ends; tallies statuses."""

    async def worker(http: httpx.AsyncClient) -> None:
        while attack.running():
            try:
                response = await send(http)
                attack.tally[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                attack.tally[type(exc).__name__] += 1
                await asyncio.sleep(0.01)

    async def run() -> None:
        limits = httpx.Limits(max_connections=attack.workers)
        async with httpx.AsyncClient(base_url=attack.url, limits=limits, timeout=30) as http:
            attack.ready.set()
            await asyncio.gather(*(worker(http) for _ in range(attack.workers)))

    return run()


async def _raw_worker(attack: Attack, request: bytes) -> None:
    """One keep-alive connection sending ``request`` again and again, reading each answer
    (status line, headers, Content-Length body): far more requests a second than an HTTP
    library manages from one Python process. Reconnects when the server closes."""
    host, port = attack.url.removeprefix("http://").split(":")
    while attack.running():
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            attack.tally[type(exc).__name__] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while attack.running():
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1].decode()
                attack.tally[status] += 1
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if b"connection: close" in head.lower():
                    break
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            attack.tally[f"closed ({type(exc).__name__})"] += 1
        finally:
            writer.close()


def _raw_flood(attack: Attack, request: bytes) -> Any:
    async def run() -> None:
        attack.ready.set()
        await asyncio.gather(*(_raw_worker(attack, request) for _ in range(attack.workers)))

    return run()


def attack_challenges(attack: Attack) -> Any:
    request = b"POST /v1/auth/challenge HTTP/1.1\r\nHost: ds\r\nContent-Length: 0\r\n\r\n"
    return _raw_flood(attack, request)


def attack_requests(attack: Attack) -> Any:
    user = new_user(attack.url, "flooder")
    request = (
        b"GET /v1/key_packages/count HTTP/1.1\r\nHost: ds\r\n"
        + f"Authorization: Bearer {user.ds.token}\r\n\r\n".encode()
    )
    return _raw_flood(attack, request)


def attack_large(attack: Attack) -> Any:
    sender, _receiver = pair(attack.url, "hoarder")
    assert sender.group is not None
    group = sender.group
    path = f"/v1/groups/{group.group_id.hex()}/messages"
    bodies = [
        json.dumps(
            {"message": base64.b64encode(group.encrypt_application(os.urandom(10**6))).decode()}
        )
        for _ in range(4)
    ]
    headers = {"authorization": f"Bearer {sender.ds.token}", "content-type": "application/json"}
    turn = iter(range(1 << 62))

    def send(http: httpx.AsyncClient) -> Any:
        body = bodies[next(turn) % len(bodies)]
        attack.tally["bytes sent"] += len(body)
        return http.post(path, content=body, headers=headers)

    attack.workers = 4
    return _status_loop(attack, send)


async def _open_socket(attack: Attack, token: str, way: str) -> Any:
    """A WebSocket authenticated the old way (``?token=`` in the URL) or by a first message
    ``{"token": ...}`` (the way that keeps tokens out of URLs and logs)."""
    import websockets

    if way == "url":
        return await websockets.connect(f"{attack.ws_url}/v1/ws?token={token}", open_timeout=30)
    sock = await websockets.connect(f"{attack.ws_url}/v1/ws", open_timeout=30)
    await sock.send(json.dumps({"token": token}))
    return sock


async def _authentication_way(attack: Attack, token: str) -> str | None:
    """Which way the server authenticates sockets: the holder has a message queued, so an
    authenticated socket is pushed it at once; a refused one is closed or stays silent."""
    for way in ("url", "first message"):
        try:
            sock = await _open_socket(attack, token, way)
            try:
                await asyncio.wait_for(sock.recv(), timeout=3)
                return way
            finally:
                await sock.close()
        except Exception:
            continue
    return None


def attack_sockets(attack: Attack) -> Any:
    sender, holder = pair(attack.url, "hog")
    assert sender.group is not None and holder.ds.token is not None
    token = holder.ds.token
    sender.ds.submit(sender.group.group_id, sender.group.encrypt_application(b"probe"))

    async def hold(way: str) -> None:
        try:
            sock = await _open_socket(attack, token, way)
        except Exception as exc:
            attack.tally[f"open failed ({type(exc).__name__})"] += 1
            return
        attack.tally["opened"] += 1
        try:
            while attack.running():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sock.recv(), timeout=0.5)
                    attack.tally["frames received"] += 1
            attack.tally["held to the end"] += 1
        except Exception:
            code = sock.close_code
            attack.tally[f"closed {code}" if code is not None else "dropped"] += 1
        finally:
            with contextlib.suppress(Exception):
                await sock.close()

    def send_loop() -> None:
        assert sender.group is not None
        gid = sender.group.group_id
        while attack.running():
            try:
                sender.ds.submit(gid, sender.group.encrypt_application(b"wake up"))
                attack.tally["sends accepted"] += 1
            except Exception as exc:
                attack.tally[f"sends {_failure(exc)}"] += 1
                time.sleep(0.05)

    async def run() -> None:
        way = await _authentication_way(attack, token)
        attack.tally[f"auth: {way or 'none worked'}"] += 1
        tasks = []
        for _ in range(attack.sockets):
            tasks.append(asyncio.create_task(hold(way or "first message")))
            await asyncio.sleep(0.002)
        attack.ready.set()
        sender_thread = threading.Thread(target=send_loop)
        sender_thread.start()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(sender_thread.join)

    return run()


def attack_slowloris(attack: Attack) -> Any:
    user = new_user(attack.url, "slow")
    host, port = attack.url.removeprefix("http://").split(":")
    heads = {
        "idle": b"",
        "half head": b"POST /v1/queue/ack HTTP/1.1\r\nHost: x\r\n",
        "half body": (
            b"POST /v1/key_packages HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {user.ds.token}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            + b'{"key_packages": ['
        ),
    }

    closed_after: dict[str, list[float]] = {kind: [] for kind in heads}
    until = time.monotonic() + attack.slow_hold

    async def hold(kind: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            attack.tally["connect failed"] += 1
            return
        opened = time.monotonic()
        writer.write(heads[kind])
        trickle = b"X-a: b\r\n" if kind == "half head" else b" "
        closed = False
        try:
            while attack.running() or time.monotonic() < until:
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(4096), timeout=2.0) == b"":
                        closed = True
                        break
                if kind != "idle":
                    writer.write(trickle)
                    await writer.drain()
        except OSError:
            closed = True
        if closed:
            closed_after[kind].append(time.monotonic() - opened)
        else:
            attack.tally[f"{kind}: held to the end"] += 1
        writer.close()

    async def run() -> None:
        tasks = []
        for i in range(attack.connections):
            tasks.append(asyncio.create_task(hold(list(heads)[i % 3])))
            await asyncio.sleep(0.001)
        attack.ready.set()
        await asyncio.gather(*tasks)
        for kind, times in closed_after.items():
            if times:
                after = f"closed by server after {statistics.median(times):.0f} s"
                attack.tally[f"{kind}: {after}"] += len(times)

    return run()


ATTACKS: dict[str, Callable[[Attack], Any]] = {
    "sockets": attack_sockets,
    "challenges": attack_challenges,
    "requests": attack_requests,
    "large": attack_large,
    "slowloris": attack_slowloris,
}


def attacker_main(name: str, attack: Attack, results: Any) -> None:
    """The attacker's process: set up, flood until told to stop, report the tally."""
    try:
        asyncio.run(ATTACKS[name](attack))
    except Exception as exc:
        attack.tally[f"attacker failed: {type(exc).__name__}: {exc}"[:120]] += 1
    finally:
        attack.ready.set()
        results.put(dict(attack.tally))


# --- running a scenario -----------------------------------------------------------------


@dataclass
class Row:
    name: str
    watched: Bystander
    attacker: dict[str, int]


def run_scenario(name: str, url: str, args: argparse.Namespace) -> Row:
    alice, bob = pair(url, "bystander")
    if name == "baseline":
        return Row(name, watch(alice, bob, args.duration), {})
    mp = multiprocessing.get_context("spawn")
    attack = Attack(
        url, mp.Event(), mp.Event(), args.sockets, args.connections, args.workers, args.hold
    )
    results = mp.Queue()
    proc = mp.Process(target=attacker_main, args=(name, attack, results))
    proc.start()
    attack.ready.wait(120)
    time.sleep(0.5)  # let the flood reach its pace
    watched = watch(alice, bob, args.duration)
    attack.stop.set()
    tally: dict[str, int] = results.get(timeout=120)
    proc.join(30)
    if proc.is_alive():
        proc.kill()
    return Row(name, watched, tally)


def _ms(values: list[float]) -> str:
    if not values:
        return f"{'-':>7} {'-':>7} {'-':>7}"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{statistics.median(ordered) * 1000:7.1f} {p99 * 1000:7.1f} {ordered[-1] * 1000:7.1f}"


def print_table(rows: list[Row]) -> None:
    print(
        f"{'scenario':<11}| {'send→receive ms':^23} | {'GET ms':^23} | {'n':>4} "
        f"{'fail':>4} | attacker got"
    )
    print(f"{'':<11}| {'p50':>7} {'p99':>7} {'max':>7} | {'p50':>7} {'p99':>7} {'max':>7} |")
    for r in rows:
        w = r.watched
        fails = sum(w.failures.values())
        got = ", ".join(f"{k} {v}" for k, v in sorted(r.attacker.items())) or "-"
        print(
            f"{r.name:<11}| {_ms(w.roundtrips)} | {_ms(w.gets)} | {len(w.roundtrips):>4} "
            f"{fails:>4} | {got}"
        )
        if w.failures:
            print(f"{'':<11}  bystander failures: {dict(w.failures)}")


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--only", default="", help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--url", help="a running DS (open registration) instead of a fresh one")
    parser.add_argument("--sockets", type=int, default=300, help="WebSockets of one token")
    parser.add_argument("--connections", type=int, default=300, help="slowloris connections")
    parser.add_argument("--workers", type=int, default=64, help="concurrent flood requests")
    parser.add_argument(
        "--hold",
        type=float,
        default=35.0,
        help="slowloris: seconds to hold the connections (past the server's timeouts)",
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    print(f"{len(names)} scenario(s) of {args.duration:g} s; {_load()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlspy-abuse-") as tmp:
        for name in names:
            if args.url:
                rows.append(run_scenario(name, args.url, args))
            else:
                with DSProcess(Path(tmp)) as ds:
                    rows.append(run_scenario(name, ds.url, args))
            print(f"  {name} done; {_load()}", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
