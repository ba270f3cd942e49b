"""A generator process of ``mlspy bench-ds``: open-loop senders and WebSocket receivers.

Theory of operation. The parent starts one or more of these processes (``--procs``) and talks
to each over a pipe. At start a process opens one ``/v1/ws`` WebSocket per receiver it owns
(authenticated by the first message, as browsers do) and answers ``ready`` once the setup's
backlog has drained. Then, per rate point:

1. ``run``: the senders it owns submit their pre-encrypted messages at fixed times (the
   schedule never waits for an answer, so requests pile up in flight when the DS falls
   behind); it answers with one record per message — its scheduled time, how late the
   generator started it, and the DS's sequence number or the error.
2. ``expect``: the parent hands it, per group, the sequence numbers the DS acknowledged and
   their scheduled times; it waits until every receiver has them all (or a deadline) and
   answers with the latencies (scheduled send → receipt) and counts of lost and repeated
   deliveries.

Receivers note every item's arrival time by sequence number, whatever its order relative to
the sender's answer: the two are joined only in step 2. They acknowledge on the socket (acks
of items that arrive together go in one frame) and reconnect when the socket drops (the DS
was killed), after which the DS sends again what was not acknowledged: repeats are counted,
not delivered twice.

Times are ``time.monotonic()``: one clock (CLOCK_MONOTONIC) for all processes of a machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from array import array
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from mlspy.bench.http1 import Connection as HTTPConnection
from mlspy.bench.http1 import HTTPError

# Outcome of a submission that got no sequence number.
TIMEOUT, TRANSPORT, REFUSED = -1, -2, -3
RECONNECT_PAUSE = 0.2
QUIET = 0.5  # the setup's backlog has drained when no item arrived for this long
WS_MAX_SIZE = 64 << 20  # setup items carry whole commits and Welcomes


@dataclass(frozen=True)
class SenderSpec:
    index: int  # among all senders: its place in the schedule
    group: int
    url: str
    token: str
    group_id: bytes


@dataclass(frozen=True)
class ReceiverSpec:
    group: int
    ws_url: str
    token: str


@dataclass(frozen=True)
class WorkerSpec:
    senders: list[SenderSpec]
    receivers: list[ReceiverSpec]
    timeout: float  # seconds after its scheduled time a submission counts as timed out
    connections: int  # HTTP connections of this process to each DS node


@dataclass(frozen=True)
class Run:
    """One rate point: sender ``j``'s ``k``-th body is due at ``start + j·step + k·interval``."""

    start: float
    step: float
    interval: float
    window: tuple[float, float]  # the measured part (after the warm-up)
    bodies: dict[int, list[bytes]]  # sender index -> JSON request bodies, in order


@dataclass
class Sent:
    # (group, scheduled time, seq or TIMEOUT/TRANSPORT/REFUSED)
    records: list[tuple[int, float, int]] = field(default_factory=list)
    # How late the generator put each submission up for sending (s): its own lateness.
    lags: array[float] = field(default_factory=lambda: array("d"))
    kinds: Counter[str] = field(default_factory=Counter)  # failures: HTTP status or error
    cpu: tuple[float, float] = (0.0, 0.0)  # CPU seconds, wall seconds in the window


@dataclass(frozen=True)
class Expect:
    groups: dict[int, dict[int, float]]  # group -> acknowledged seq -> scheduled time
    window: tuple[float, float]
    deadline: float


@dataclass
class Received:
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    delivered_in_window: int = 0  # first receipts that happened within the window
    expected: int = 0  # deliveries owed: acknowledged messages x receivers of their group
    lost: int = 0
    duplicates: int = 0
    reconnects: int = 0


class Receiver:
    """One member's WebSocket: arrival time of every item by sequence number."""

    def __init__(self, spec: ReceiverSpec, worker: Worker) -> None:
        self.spec = spec
        self.worker = worker
        self.first: dict[int, float] = {}
        self.repeats: Counter[int] = Counter()
        self.missing: set[int] = set()
        self.complete = asyncio.Event()
        self.connected = asyncio.Event()
        self.reconnects = 0

    async def run(self) -> None:
        while True:
            try:
                async with connect(
                    f"{self.spec.ws_url}/v1/ws", max_size=WS_MAX_SIZE, open_timeout=30
                ) as sock:
                    await sock.send(json.dumps({"token": self.spec.token}))
                    ready = json.loads(await sock.recv())
                    if not (isinstance(ready, dict) and ready.get("ready") is True):
                        raise RuntimeError(f"the DS refused the socket: {ready}")
                    self.connected.set()
                    await self._receive(sock)
            except Exception:
                pass  # dropped (the DS was killed or restarted), or refused while it starts
            self.reconnects += 1
            await asyncio.sleep(RECONNECT_PAUSE)

    async def _receive(self, sock: ClientConnection) -> None:
        acks: list[int] = []
        wake = asyncio.Event()

        async def acknowledge() -> None:
            while True:
                await wake.wait()
                wake.clear()
                batch = acks[:]
                acks.clear()
                await sock.send(json.dumps({"ack": batch}))

        acker = asyncio.create_task(acknowledge())
        try:
            async for text in sock:
                now = time.monotonic()
                seq = int(json.loads(text)["seq"])
                self.note(seq, now)
                acks.append(seq)
                wake.set()
        finally:
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acker

    def note(self, seq: int, now: float) -> None:
        self.worker.last_item = now
        if seq in self.first:
            self.repeats[seq] += 1
            return
        self.first[seq] = now
        if seq in self.missing:
            self.missing.discard(seq)
            if not self.missing:
                self.complete.set()


# A submission waiting for a connection: sender, body, scheduled time, results.
Job = tuple[SenderSpec, bytes, float, Sent]


class Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.last_item = time.monotonic()
        self.receivers = [Receiver(r, self) for r in spec.receivers]
        self.queues: dict[str, asyncio.Queue[Job]] = {}
        self.requests = {
            s.index: (
                f"/v1/groups/{s.group_id.hex()}/messages",
                {"authorization": f"Bearer {s.token}", "content-type": "application/json"},
            )
            for s in spec.senders
        }

    async def main(self) -> None:
        tasks = [asyncio.create_task(r.run()) for r in self.receivers]
        # Per DS node, ``connections`` connections each take the next submission due: many
        # requests in flight, and a queue (counted in the latency) once they are all busy.
        for url in {s.url for s in self.spec.senders}:
            queue = self.queues[url] = asyncio.Queue()
            tasks += [
                asyncio.create_task(self._lane(url, queue)) for _ in range(self.spec.connections)
            ]
        try:
            await asyncio.gather(*(r.connected.wait() for r in self.receivers))
            while time.monotonic() - self.last_item < QUIET:
                await asyncio.sleep(QUIET / 5)
            self.conn.send(("ready", None))
            loop = asyncio.get_running_loop()
            while True:
                command, arg = await loop.run_in_executor(None, self.conn.recv)
                if command == "run":
                    self.conn.send(("sent", await self.send(arg)))
                elif command == "expect":
                    self.conn.send(("received", await self.expect(arg)))
                else:
                    return
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def send(self, run: Run) -> Sent:
        sent = Sent()
        senders = {s.index: s for s in self.spec.senders}
        schedule = sorted(
            (run.start + j * run.step + k * run.interval, j, k)
            for j, bodies in run.bodies.items()
            for k in range(len(bodies))
        )
        cpu = asyncio.create_task(_cpu_in(run.window))
        for due, j, k in schedule:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.lags.append(time.monotonic() - due)
            self.queues[senders[j].url].put_nowait((senders[j], run.bodies[j][k], due, sent))
        for queue in self.queues.values():
            await queue.join()
        sent.cpu = await cpu
        return sent

    async def _lane(self, url: str, queue: asyncio.Queue[Job]) -> None:
        connection = HTTPConnection(url)
        while True:
            job = await queue.get()
            try:
                await self._submit(connection, *job)
            finally:
                queue.task_done()

    async def _submit(
        self, connection: HTTPConnection, sender: SenderSpec, body: bytes, due: float, sent: Sent
    ) -> None:
        path, headers = self.requests[sender.index]
        # The timeout runs from the scheduled time: a submission still queued by then is
        # given up unsent, so a point ends at most ``timeout`` after its last due time.
        left = due + self.spec.timeout - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(left):
                status, content = await connection.post(path, headers, body)
        except TimeoutError:
            outcome = TIMEOUT
        except HTTPError as exc:
            outcome = TRANSPORT
            sent.kinds[str(exc)] += 1
        else:
            if 200 <= status < 300:
                outcome = _seq_of(content)
                if outcome < 0:
                    sent.kinds[f"{status} without a seq"] += 1
            else:
                outcome = REFUSED
                sent.kinds[str(status)] += 1
        sent.records.append((sender.group, due, outcome))

    async def expect(self, expect: Expect) -> Received:
        for r in self.receivers:
            r.missing = set(expect.groups.get(r.spec.group, {})) - r.first.keys()
            if r.missing:
                r.complete.clear()
            else:
                r.complete.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, expect.deadline - time.monotonic())):
                await asyncio.gather(*(r.complete.wait() for r in self.receivers))
        return self._tally(expect)

    def _tally(self, expect: Expect) -> Received:
        out = Received()
        start, end = expect.window
        for r in self.receivers:
            owed = expect.groups.get(r.spec.group, {})
            out.expected += len(owed)
            for seq, due in owed.items():
                got = r.first.get(seq)
                if got is None:
                    out.lost += 1
                    continue
                if start <= due < end:
                    out.latencies_ms.append((got - due) * 1000)
                if start <= got < end:
                    out.delivered_in_window += 1
                out.duplicates += r.repeats.get(seq, 0)
            out.reconnects += r.reconnects
            # Forget this point (and the setup's items): a late repeat of one of its
            # messages is not one of the next point's.
            r.first.clear()
            r.repeats.clear()
            r.missing = set()
            r.reconnects = 0
        return out


def _seq_of(content: bytes) -> int:
    """The ``seq`` of a submission's answer, or REFUSED if it has none."""
    try:
        seq = json.loads(content)["seq"]
    except (ValueError, KeyError, TypeError):
        return REFUSED
    return seq if isinstance(seq, int) and seq >= 0 else REFUSED


async def _cpu_in(window: tuple[float, float]) -> tuple[float, float]:
    """This process's CPU seconds and the wall seconds between the window's ends."""
    await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
    return time.process_time() - cpu0, time.monotonic() - wall0


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # uvicorn[standard] brings it: a cheaper event loop for the generator
    except ImportError:
        asyncio.run(coroutine)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine)


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a generator process (``multiprocessing``, spawned)."""
    with contextlib.suppress(EOFError, KeyboardInterrupt):  # the parent went away
        _run(Worker(spec, conn).main())
