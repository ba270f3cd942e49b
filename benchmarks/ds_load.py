"""Load and fault benchmark of the Delivery Service, over loopback, with a real DS process.

    .venv/bin/python benchmarks/ds_load.py [--clients 200] [--groups 20] [--seconds 10] [--kill]

N clients in M groups register, join their groups through the DS (KeyPackage claims, commits,
Welcomes), then one sender per group sends real MLS application messages as fast as it can for
a fixed time while receivers fetch and acknowledge their queues. Prints accepted messages/s,
fan-out deliveries/s and p50/p99 latency from send to delivery. ``--kill`` SIGKILLs the DS in
the middle of the run, restarts it on the same database, and checks that every message the DS
acknowledged reaches every other member of its group exactly once (duplicates from re-fetches
after the crash are counted and removed by sequence number). Exit status 1 if anything is lost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlspy.ds.client import DSClient, DSRequestError
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import Add, MLSMessage, Proposal


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DSProcess:
    def __init__(self, port: int, db: Path) -> None:
        self.port, self.db = port, db
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        code = "from mlspy.cli import main; main()"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "serve",
                "--port",
                str(self.port),
                "--database",
                str(self.db),
                "--registration",  # loopback load test: clients register freely
                "open",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the DS did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@dataclass
class Client:
    name: str
    identity: SigningIdentity
    ds: DSClient
    group: Group | None = None
    last_seq: int = 0
    delivered: list[int] = field(default_factory=list)


def _retry(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Call through a DS restart: retry connection errors for up to 30 s."""
    deadline = time.time() + 30
    while True:
        try:
            return fn(*args, **kwargs)
        except (httpx.TransportError, DSRequestError) as exc:
            if isinstance(exc, DSRequestError) and exc.status < 500:
                raise
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def setup(url: str, n_clients: int, n_groups: int) -> list[list[Client]]:
    clients = []
    for i in range(n_clients):
        identity = SigningIdentity.generate(b"load-%d" % i)
        ds = DSClient(url, identity)
        ds.register()
        ds.login()
        bundle = create_key_package(identity)
        ds.upload_key_packages([bundle])
        c = Client(f"load-{i}", identity, ds)
        c.bundle = bundle  # type: ignore[attr-defined]
        clients.append(c)
    per = n_clients // n_groups
    groups = []
    for g in range(n_groups):
        members = clients[g * per : (g + 1) * per]
        creator = members[0]
        creator.group = Group.create(creator.identity)
        creator.ds.create_group(creator.group.group_info())
        kps = [
            MLSMessage.decode(creator.ds.claim_key_package(m.name.encode())).key_package
            for m in members[1:]
        ]
        out = creator.group.commit([Proposal(Add(kp)) for kp in kps if kp is not None])
        creator.ds.submit(creator.group.group_id, out.commit, welcome=out.welcome)
        creator.group.merge_pending_commit()
        for m in members[1:]:
            items = m.ds.fetch()
            m.group = Group.join(items[0]["data"], m.bundle)  # type: ignore[attr-defined]
            m.last_seq = items[-1]["seq"]
            m.ds.ack([i["seq"] for i in items])
        groups.append(members)
    return groups


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mlspy-load-"))
    ds = DSProcess(_free_port(), tmp / "ds.sqlite")
    ds.start()
    try:
        t0 = time.time()
        groups = setup(ds.url, args.clients, args.groups)
        print(f"setup: {args.clients} clients in {args.groups} groups in {time.time() - t0:.1f}s")
        accepted: dict[int, tuple[int, str]] = {}  # seq -> (group index, sender)
        latencies: list[float] = []
        lock = threading.Lock()
        stop = threading.Event()

        def sender(gi: int) -> None:
            rng = random.Random(gi)
            members = groups[gi]
            while not stop.is_set():
                m = rng.choice(members)
                assert m.group is not None
                data = m.group.encrypt_application(os.urandom(100), struct.pack("!d", time.time()))
                try:
                    seq = _retry(m.ds.submit, m.group.group_id, data)
                except Exception:
                    continue  # not acknowledged: not counted
                with lock:
                    accepted[seq] = (gi, m.name)

        def receiver(clients: list[Client]) -> None:
            while not stop.is_set() or any(_pending(c) for c in clients):
                idle = True
                for c in clients:
                    try:
                        items = c.ds.fetch(c.last_seq)
                    except (httpx.TransportError, DSRequestError):
                        time.sleep(0.05)
                        continue
                    now = time.time()
                    for item in items:
                        msg = MLSMessage.decode(item["data"])
                        pm = msg.private_message
                        if pm is not None and len(pm.authenticated_data) == 8:
                            sent = struct.unpack("!d", pm.authenticated_data)[0]
                            with lock:
                                latencies.append(now - sent)
                        c.delivered.append(item["seq"])
                        c.last_seq = max(c.last_seq, item["seq"])
                    if items:
                        idle = False
                        with contextlib.suppress(httpx.TransportError, DSRequestError):
                            c.ds.ack([i["seq"] for i in items])
                if idle:
                    time.sleep(0.01)
                if stop.is_set() and time.time() > drain_deadline[0]:
                    return

        def _pending(c: Client) -> bool:
            with lock:
                gi = next(i for i, g in enumerate(groups) if c in g)
                expected = {s for s, (g, who) in accepted.items() if g == gi and who != c.name}
            return not expected <= set(c.delivered)

        drain_deadline = [float("inf")]
        everyone = [c for g in groups for c in g]
        n_receivers = 4
        threads = [threading.Thread(target=sender, args=(gi,)) for gi in range(args.groups)]
        threads += [
            threading.Thread(target=receiver, args=(everyone[i::n_receivers],))
            for i in range(n_receivers)
        ]
        start = time.time()
        for t in threads:
            t.start()
        killed_at = None
        if args.kill:
            time.sleep(args.seconds / 2)
            ds.kill()
            killed_at = time.time() - start
            ds.start()
            time.sleep(args.seconds / 2)
        else:
            time.sleep(args.seconds)
        stop.set()
        duration = time.time() - start
        drain_deadline[0] = time.time() + 60
        for t in threads:
            t.join()

        lost = duplicates = 0
        for gi, members in enumerate(groups):
            for c in members:
                expected = {s for s, (g, who) in accepted.items() if g == gi and who != c.name}
                got = c.delivered
                duplicates += len(got) - len(set(got))
                lost += len(expected - set(got))
        deliveries = sum(len(set(c.delivered)) for c in everyone)
        lat = sorted(latencies)
        print(f"{'accepted messages/s':28}{len(accepted) / duration:10.1f}")
        print(f"{'fan-out deliveries/s':28}{deliveries / duration:10.1f}")
        if lat:
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"{'p50 latency (ms)':28}{statistics.median(lat) * 1000:10.1f}")
            print(f"{'p99 latency (ms)':28}{p99 * 1000:10.1f}")
        print(f"{'accepted messages':28}{len(accepted):10d}")
        print(f"{'deliveries':28}{deliveries:10d}")
        if killed_at is not None:
            print(f"{'DS killed (SIGKILL) at':28}{killed_at:9.1f}s")
            print(f"{'redelivered after restart':28}{duplicates:10d}")
        print(f"{'lost':28}{lost:10d}")
        return 1 if lost else 0
    finally:
        ds.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--kill", action="store_true", help="SIGKILL and restart the DS midway")
    args = parser.parse_args()
    if args.clients < 2 * args.groups:
        parser.error("need at least two clients per group")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
