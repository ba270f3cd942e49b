"""A generator process of ``mlspy bench-ds``: open-loop senders and WebSocket receivers.

Theory of operation. The parent starts one or more of these processes (``--procs``) and talks
to each over a pipe. At start a process opens one ``/v1/ws`` WebSocket per receiver it owns
(authenticated by the first message, as browsers do) and answers ``ready`` once the setup's
backlog has drained. Then, per rate point:

1. ``run``: the senders it owns submit their pre-encrypted messages at fixed times (the
   schedule never waits for an answer, so requests pile up in flight when the DS falls
   behind); it answers with one record per message — its scheduled time, how late the
   generator started it, whether it is a commit, and the DS's sequence number or the error.
   One exception to "never waits": a sender's messages due after one of its commits are
   held until the DS answered the commit, since they are encrypted in the commit's new
   epoch and the DS refuses (409) an application message of an epoch it has not reached —
   a real client cannot send in the new epoch before its commit is accepted either. They
   keep their scheduled times, so the wait counts in their latency.
2. ``expect``: the parent hands it, per group, the sequence numbers the DS acknowledged and
   their scheduled times; it waits until every receiver has them all (or a deadline) and
   answers with the latencies (scheduled send → receipt) and counts of lost and repeated
   deliveries, application messages and commits apart (each receiver tells them by the
   content type in the clear in each MLS message's header), with each commit's latest
   receipt over its receivers.

Receivers note every item's arrival time by sequence number, whatever its order relative to
the sender's answer: the two are joined only in step 2. They acknowledge on the socket (acks
of items that arrive together go in one frame) and reconnect when the socket drops (the DS
was killed), after which the DS sends again what was not acknowledged: repeats are counted,
not delivered twice.

Times are ``time.monotonic()``: one clock (CLOCK_MONOTONIC) for all processes of a machine.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from array import array
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from mlspy.bench.ds_socket_submit import SocketGone, SocketLane
from mlspy.bench.http1 import Connection as HTTPConnection
from mlspy.bench.http1 import HTTPError
from mlspy.codec import Reader
from mlspy.errors import DecodeError
from mlspy.messages import ContentType, SenderType, WireFormat

# Outcome of a submission that got no sequence number.
TIMEOUT, TRANSPORT, REFUSED = -1, -2, -3
RECONNECT_PAUSE = 0.2
QUIET = 0.5  # the setup's backlog has drained when no item arrived for this long
WS_MAX_SIZE = 64 << 20  # setup items carry whole commits and Welcomes
# Base64 characters of an item's data enough for its MLS header (a multiple of 4): the
# header is a few dozen bytes, a commit of a large group a hundred kilobytes.
HEADER_CHARS = 512
# A commit is awaited this many times ``timeout``: given up (unsent, or its answer not
# awaited), it would leave its sender an epoch ahead of the DS and every later message of
# its group refused (409), so a slow commit shows as a late one (counted apart, its
# deliveries still measured) rather than as a cascade of refusals.
COMMIT_PATIENCE = 6.0


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
    # "ws": senders submit on a WebSocket each, as the SDK does; "http": POST requests
    submit: str = "ws"


@dataclass(frozen=True)
class Run:
    """One rate point: sender ``j``'s ``k``-th body is due at ``start + j·step + k·interval``."""

    start: float
    step: float
    interval: float
    window: tuple[float, float]  # the measured part (after the warm-up)
    bodies: dict[int, list[bytes]]  # sender index -> JSON request bodies, in order
    # sender index -> the positions ``k`` in its bodies that are commits
    commits: dict[int, frozenset[int]] = field(default_factory=dict)


@dataclass
class Sent:
    # (group, scheduled time, seq or TIMEOUT/TRANSPORT/REFUSED, a commit?)
    records: list[tuple[int, float, int, bool]] = field(default_factory=list)
    # How late the generator put each submission up for sending (s): its own lateness.
    lags: array[float] = field(default_factory=lambda: array("d"))
    # Failures: HTTP status or error, prefixed "commit " for commits.
    kinds: Counter[str] = field(default_factory=Counter)
    cpu: tuple[float, float] = (0.0, 0.0)  # CPU seconds, wall seconds in the window
    late_commits: int = 0  # accepted, but answered more than ``timeout`` after their time


@dataclass(frozen=True)
class Expect:
    groups: dict[int, dict[int, float]]  # group -> acknowledged seq -> scheduled time
    window: tuple[float, float]
    deadline: float
    commits: frozenset[int] = frozenset()  # which of the acknowledged seqs are commits


@dataclass
class Received:
    # Every delivery of the messages scheduled in the window: application messages...
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    # ... and commits, as the receivers told them apart.
    commit_latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    # Per commit scheduled in the window: its latest delivery to this process's receivers
    # (ms); a commit some receiver here never got is in ``commits_incomplete`` instead.
    commit_last_ms: dict[int, float] = field(default_factory=dict)
    commits_incomplete: set[int] = field(default_factory=set)
    delivered_in_window: int = 0  # first receipts that happened within the window
    expected: int = 0  # deliveries owed: acknowledged messages x receivers of their group
    lost: int = 0
    commits_lost: int = 0  # of ``lost``, deliveries of commits
    # Receipts whose ``kind`` (commit or not) is not what the sender submitted.
    misfiled: int = 0
    duplicates: int = 0
    reconnects: int = 0


class Receiver:
    """One member's WebSocket: arrival time of every item by sequence number."""

    def __init__(self, spec: ReceiverSpec, worker: Worker) -> None:
        self.spec = spec
        self.worker = worker
        self.first: dict[int, float] = {}
        self.commits: set[int] = set()  # seqs the DS delivered as commits
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
                item = json.loads(text)
                seq = int(item["seq"])
                self.note(seq, now, is_commit(item.get("data", "")))
                acks.append(seq)
                wake.set()
        finally:
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acker

    def note(self, seq: int, now: float, commit: bool = False) -> None:
        self.worker.last_item = now
        if seq in self.first:
            self.repeats[seq] += 1
            return
        self.first[seq] = now
        if commit:
            self.commits.add(seq)
        if seq in self.missing:
            self.missing.discard(seq)
            if not self.missing:
                self.complete.set()


# A submission waiting for a connection: sender, body, scheduled time, results, a commit?
Job = tuple[SenderSpec, bytes, float, Sent, bool]


class Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.last_item = time.monotonic()
        self.receivers = [Receiver(r, self) for r in spec.receivers]
        self.queues: dict[str, asyncio.Queue[Job]] = {}
        # With ``submit="ws"``: each sender's socket, and the submissions awaiting answers.
        self.lanes = (
            {s.index: SocketLane(_ws(s.url), s.token, s.group_id) for s in spec.senders}
            if spec.submit == "ws"
            else {}
        )
        self.inflight: set[asyncio.Task[None]] = set()
        # Sender index -> its submissions due since its commit in flight, in order; a
        # sender is here exactly while one of its commits awaits the DS's answer.
        self.held: dict[int, deque[Job]] = {}
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
        # With WebSocket submissions, one socket per sender instead.
        tasks += [asyncio.create_task(lane.run()) for lane in self.lanes.values()]
        for url in {s.url for s in self.spec.senders} if not self.lanes else ():
            queue = self.queues[url] = asyncio.Queue()
            tasks += [
                asyncio.create_task(self._lane(url, queue)) for _ in range(self.spec.connections)
            ]
        try:
            await asyncio.gather(*(r.connected.wait() for r in self.receivers))
            await asyncio.gather(*(lane.connected.wait() for lane in self.lanes.values()))
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
        no_commits: frozenset[int] = frozenset()
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
            commit = k in run.commits.get(j, no_commits)
            self._put((senders[j], run.bodies[j][k], due, sent, commit))
        for queue in self.queues.values():
            await queue.join()
        while self.inflight:  # a commit's answer releases what it held: wait for those too
            await asyncio.gather(*self.inflight, return_exceptions=True)
        sent.cpu = await cpu
        return sent

    def _put(self, job: Job) -> None:
        """Queue a submission for a connection, unless its sender awaits a commit's answer."""
        sender, commit = job[0], job[4]
        waiting = self.held.get(sender.index)
        if waiting is not None:
            waiting.append(job)
            return
        if commit:
            self.held[sender.index] = deque()
        self._dispatch(job)

    def _dispatch(self, job: Job) -> None:
        if self.lanes:
            task = asyncio.create_task(self._submit_on_socket(*job))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        else:
            self.queues[job[0].url].put_nowait(job)

    def _release(self, sender: SenderSpec) -> None:
        """The DS answered ``sender``'s commit (whatever the answer: a refused commit leaves
        the rest to be refused, and counted): queue what it held, up to its next commit."""
        waiting = self.held.pop(sender.index)
        while waiting:
            job = waiting.popleft()
            self._dispatch(job)
            if job[4]:
                self.held[sender.index] = waiting
                return

    async def _lane(self, url: str, queue: asyncio.Queue[Job]) -> None:
        connection = HTTPConnection(url)
        while True:
            job = await queue.get()
            try:
                await self._submit(connection, *job)
            finally:
                if job[4]:
                    # Before ``task_done``: what it releases is queued before ``send``'s
                    # ``join`` can see the queue empty.
                    self._release(job[0])
                queue.task_done()

    async def _submit(
        self,
        connection: HTTPConnection,
        sender: SenderSpec,
        body: bytes,
        due: float,
        sent: Sent,
        commit: bool,
    ) -> None:
        path, headers = self.requests[sender.index]
        # The timeout runs from the scheduled time: a submission still queued by then is
        # given up unsent, so a point ends at most ``timeout`` after its last due time
        # (``COMMIT_PATIENCE`` times that for a commit).
        patience = COMMIT_PATIENCE if commit else 1.0
        left = due + self.spec.timeout * patience - time.monotonic()
        prefix = "commit " if commit else ""
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(left):
                status, content = await connection.post(path, headers, body)
        except TimeoutError:
            outcome = TIMEOUT
        except HTTPError as exc:
            outcome = TRANSPORT
            sent.kinds[f"{prefix}{exc}"] += 1
        else:
            outcome = self._outcome(status, content, due, sent, commit)
        sent.records.append((sender.group, due, outcome, commit))

    async def _submit_on_socket(
        self, sender: SenderSpec, body: bytes, due: float, sent: Sent, commit: bool
    ) -> None:
        """``_submit`` on the sender's WebSocket."""
        patience = COMMIT_PATIENCE if commit else 1.0
        left = due + self.spec.timeout * patience - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(left):
                status, content = await self.lanes[sender.index].submit(body)
        except TimeoutError:
            outcome = TIMEOUT
        except SocketGone:
            outcome = TRANSPORT
            sent.kinds[f"{'commit ' if commit else ''}socket closed"] += 1
        else:
            outcome = self._outcome(status, content, due, sent, commit)
        finally:
            if commit:
                self._release(sender)
        sent.records.append((sender.group, due, outcome, commit))

    def _outcome(self, status: int, content: bytes, due: float, sent: Sent, commit: bool) -> int:
        """The seq of an answer, or REFUSED (counted by status)."""
        prefix = "commit " if commit else ""
        if 200 <= status < 300:
            outcome = _seq_of(content)
            if outcome < 0:
                sent.kinds[f"{prefix}{status} without a seq"] += 1
            elif commit and time.monotonic() > due + self.spec.timeout:
                sent.late_commits += 1
            return outcome
        sent.kinds[f"{prefix}{status}"] += 1
        return REFUSED

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
                sent_commit = seq in expect.commits
                measured = start <= due < end
                if got is None:
                    out.lost += 1
                    if sent_commit:
                        out.commits_lost += 1
                        if measured:
                            out.commits_incomplete.add(seq)
                    continue
                # Filed as the receiver saw it; a disagreement with the sender is counted.
                commit = seq in r.commits
                if commit != sent_commit:
                    out.misfiled += 1
                if measured:
                    latency = (got - due) * 1000
                    if commit:
                        out.commit_latencies_ms.append(latency)
                        last = out.commit_last_ms.get(seq, latency)
                        out.commit_last_ms[seq] = max(last, latency)
                    else:
                        out.latencies_ms.append(latency)
                if start <= got < end:
                    out.delivered_in_window += 1
                out.duplicates += r.repeats.get(seq, 0)
            out.reconnects += r.reconnects
            # Forget this point (and the setup's items): a late repeat of one of its
            # messages is not one of the next point's.
            r.first.clear()
            r.commits.clear()
            r.repeats.clear()
            r.missing = set()
            r.reconnects = 0
        for seq in out.commits_incomplete:
            out.commit_last_ms.pop(seq, None)
        return out


def is_commit(data: str) -> bool:
    """Whether a queue item's data (base64 of an MLSMessage) is a commit. The DS calls every
    MLS message "message"; the content type is in the clear in both PublicMessages and
    PrivateMessages (RFC 9420 §6.2, §6.3), after a few header fields: read from a prefix,
    without decoding (or base64-decoding) the whole of a large commit."""
    with contextlib.suppress(DecodeError, binascii.Error, ValueError):
        return _content_type(base64.b64decode(data[:HEADER_CHARS])) == ContentType.commit
    if len(data) <= HEADER_CHARS:
        return False  # not a message of a group: not a commit
    # A header longer than the prefix (a long group id or authenticated data).
    with contextlib.suppress(DecodeError, binascii.Error, ValueError):
        return _content_type(base64.b64decode(data)) == ContentType.commit
    return False


def _content_type(head: bytes) -> int:
    r = Reader(head)
    r.uint16()  # version
    wire = r.uint16()
    r.opaque()  # group_id
    r.uint64()  # epoch
    if wire == WireFormat.mls_public_message:
        sender = r.uint8()
        if sender in (SenderType.member, SenderType.external):
            r.uint32()  # leaf index, or external sender index
        r.opaque()  # authenticated_data
    elif wire != WireFormat.mls_private_message:
        return 0  # a Welcome, GroupInfo, KeyPackage: no content
    return r.uint8()


def _ws(url: str) -> str:
    return url.replace("http", "ws", 1)


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
