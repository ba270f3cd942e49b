"""WebSocket push of queued messages (``/v1/ws``), and the cross-node wake-ups.

Authentication never puts the token in the URL (URLs end up in access logs and proxies'
logs): the client sends ``Authorization: Bearer <token>`` with the upgrade, or — browsers
cannot set headers — a first message ``{"token": "<token>"}`` within ``AUTH_TIMEOUT``
seconds. The server answers ``{"ready": true, "client_id": …}`` and then sends every queued
message in order (the JSON of ``api.QueueItem``); the client acknowledges with
``{"ack": [seq, …]}`` here or over HTTP.

A client may also submit on the socket what it would ``POST /v1/groups/{group_id}/messages``:
``{"submit": …}`` (``api.SocketSubmit``: that body with ``group_id`` and an ``id``), answered
by ``{"answer": id, "status": 200, "seq": …}`` or ``{"answer": id, "status": 4xx/5xx,
"error": …}`` with the details of the HTTP error (``epoch`` of a 409, ``retry_after``). The
same rules, rate and quotas apply; a socket's submissions are judged in the order sent (the
next once the one before has run in the database), so they are accepted in that order; at most
``MAX_PENDING_SUBMITS`` (and ``MAX_PENDING_BYTES``) wait or are judged at once, more are
answered 429. "ready" says how large a frame may be
(``max_frame``): a submission that does not fit goes over HTTP.

Close codes: 4400 a malformed or unexpected message (1003 a binary one), 4401 no, bad,
expired or revoked token (checked again at least every ``Limits.token_recheck`` seconds),
4429 too many sockets of this client or too many requests, 1009 a frame larger than
``max_frame``, 1013 the database is away for now (reconnect later).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.frames import Frame, Opcode

from mlspy.ds import api
from mlspy.ds.accounts import ClientInfo
from mlspy.ds.db import BODY_RAN
from mlspy.ds.errors import DSError, RateLimited, Unavailable
from mlspy.ds.queues import Published, QueuedMessage
from mlspy.ds.routing import encode
from mlspy.ds.service import DeliveryService
from mlspy.ds.threads import to_thread
from mlspy.ds.throttle import SocketCounts

AUTH_TIMEOUT = 10.0
RECHECK = 15.0
# Queue items read at once for one socket.
FETCH_LIMIT = 500
# How early a socket's token check may run (its timer can fire a little early).
EARLY = 0.01
# Submissions of one socket received and not yet answered; more are refused (429) at once.
MAX_PENDING_SUBMITS = 64
# Bytes the fan-out writes to one socket at once (asyncio's default high-water mark of a
# transport): past it the socket reads the rest of the batch from its queue.
WRITE_AT_ONCE = 64 << 10

log = logging.getLogger("mlspy.ds")

# Judges one submission made on a socket (``app.py``: the HTTP route's rules, token check,
# rate and quotas): the socket's token, the submission, the frame's size; its seq, or a
# DSError.
SocketSubmitter = Callable[[str, api.SocketSubmit, int], Awaitable[int]]
# Charges a submission frame as it arrives (the client id, the frame's size): RateLimited.
SocketAdmitter = Callable[[str, int], None]
# Bytes of one socket's submissions received and not yet judged; more are refused (429).
MAX_PENDING_BYTES = 8 << 20


class Wakeups:
    """WebSocket connections by client id, woken when their queue grows."""

    def __init__(self) -> None:
        self.events: dict[str, set[asyncio.Event]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def wake(self, client_ids: set[str]) -> None:
        loop = self.loop
        if loop is None:
            return
        for cid in client_ids:
            for event in self.events.get(cid, ()):
                loop.call_soon_threadsafe(event.set)


class _Socket:
    """What the fan-out knows of one open socket (the event loop's thread only)."""

    __slots__ = ("after", "client_id", "event", "live", "out", "sent")

    def __init__(self, client_id: str, event: asyncio.Event, out: RawOut | None) -> None:
        self.client_id = client_id
        self.event = event
        # Seqs sent on this socket and not yet acknowledged.
        self.sent: set[int] = set()
        # The highest seq sent on this socket, by a read or by the fan-out: where the next
        # read starts (SQLite gives seqs in commit order, and with a fan-out every row this
        # node queues comes to the socket in that order).
        self.after = 0
        # The socket has been sent everything queued for it so far, so a message just
        # committed may be written to it at once; otherwise it is woken to read its queue.
        self.live = False
        self.out = out


class RawOut:
    """Frames written straight to the transport of uvicorn's WebSocket protocol behind a
    socket, past the ASGI send chain (Starlette's socket, the middleware, uvicorn's
    ``asgi_send``), which does the same write after several calls; ``ready`` says whether
    a write may go now (open, not closing, and not paused by the transport's flow control,
    which ``asgi_send`` would wait for)."""

    __slots__ = ("_proto",)

    def __init__(self, proto: Any) -> None:
        self._proto = proto

    @staticmethod
    def of(socket: WebSocket) -> RawOut | None:
        """The socket's raw writer, if the server is uvicorn's websockets-sansio protocol
        (``ExposeProtocol`` put it in the scope); else None and frames go the ASGI way."""
        proto = socket.scope.get(_PROTOCOL)
        return RawOut(proto) if proto is not None else None

    def ready(self) -> bool:
        p = self._proto
        return bool(
            p.handshake_complete
            and not p.close_sent
            and not p.disconnected
            and p.writable.is_set()
            and not p.transport.is_closing()
        )

    def write(self, data: bytes) -> None:
        self._proto.transport.write(data)


# The scope key under which ``ExposeProtocol`` leaves uvicorn's protocol object.
_PROTOCOL = "mlspy.ws_protocol"


class ExposeProtocol:
    """ASGI middleware (the outermost of the app's): on a WebSocket of uvicorn's
    websockets-sansio implementation, whose ``send`` is the protocol's own bound
    ``asgi_send``, it puts the protocol in the scope for :class:`RawOut`. Any other server
    (or a test client) leaves the scope as it was."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            proto = getattr(send, "__self__", None)
            # Only the implementation ``mlspy serve`` runs and the tests cover (whose write
            # path and flags ``RawOut`` mirrors); another one keeps the ASGI path.
            if type(proto).__name__ == "WebSocketsSansIOProtocol" and all(
                hasattr(proto, a)
                for a in (
                    "transport",
                    "writable",
                    "close_sent",
                    "disconnected",
                    "handshake_complete",
                )
            ):
                scope = {**scope, _PROTOCOL: proto}
        await self.app(scope, receive, send)


class Fanout:
    """Hands each committed message to its recipients' sockets on this node, when the node
    is its database's only writer (SQLite, one process): every queue row then comes through
    ``publish`` (``queues.enqueue``), in commit order, so a socket that has read its queue
    once needs no other read. A message's frame is built once and written to every live
    socket of its recipients, the frames of one COMMIT in one write per socket. A socket
    that is not live (reading its backlog, or its client slow to read) is woken to read its
    queue instead, in order. Measured (issue 19): reading, encoding and sending through
    ASGI every delivery one by one was most of the server's time."""

    def __init__(self) -> None:
        self.sockets: dict[str, set[_Socket]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def publish(self, batch: list[object]) -> None:
        """``SQLiteDatabase.on_publish``: called by the writer after each COMMIT, in order."""
        loop = self.loop
        if loop is not None and self.sockets:
            loop.call_soon_threadsafe(self._deliver, batch)

    def _deliver(self, batch: list[object]) -> None:
        writes: dict[_Socket, list[bytes]] = {}
        sizes: dict[_Socket, int] = {}
        for p in batch:
            if not isinstance(p, Published):
                continue
            m = p.message
            frame: bytes | None = None
            for cid in p.recipients:
                for sock in self.sockets.get(cid, ()):
                    if m.seq <= sock.after:
                        continue  # a read sent it already
                    if sock.out is None or not sock.live or not sock.out.ready():
                        sock.live = False
                        sock.event.set()  # it reads its queue: the message is committed
                        continue
                    if frame is None:
                        frame = Frame(Opcode.TEXT, encode(item(m))).serialize(mask=False)
                    size = sizes.get(sock, 0)
                    if size and size + len(frame) > WRITE_AT_ONCE:
                        # No more at once than a paused transport would hold: the rest is
                        # read from the queue, after what was written.
                        sock.live = False
                        sock.event.set()
                        continue
                    sizes[sock] = size + len(frame)
                    sock.sent.add(m.seq)
                    sock.after = m.seq
                    writes.setdefault(sock, []).append(frame)
        for sock, frames in writes.items():
            assert sock.out is not None
            sock.out.write(b"".join(frames))


class AckBatcher:
    """The acks of every WebSocket of this node, written together: while one batch is being
    written (one transaction, one sync), the acks that arrive gather for the next. An ack
    frame's sender waits until its batch is durable, so acks of one socket stay in order and
    a refusal (the database away) reaches the right sockets."""

    def __init__(self, service: DeliveryService) -> None:
        self.service = service
        self._pending: dict[str, list[int]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None

    async def ack(self, client_id: str, seqs: list[int]) -> None:
        self._pending.setdefault(client_id, []).extend(seqs)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._pending:
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters = {}, []
            try:
                await to_thread(self.service.ack_many, batch)
            except Exception as exc:  # each waiter's socket decides what it means
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
            else:
                for w in waiters:
                    if not w.done():
                        w.set_result(None)


class FetchBatcher:
    """The queue reads of every socket of this node woken together, in one statement on a
    worker thread (PostgreSQL: ``DeliveryService.fetch_many``), where one read per socket
    costs a thread hand-off and a database round trip each — most of a delivery's cost
    there. Reads asked for while one batch runs gather for the next."""

    def __init__(self, service: DeliveryService) -> None:
        self.service = service
        self._pending: dict[str, tuple[int, list[asyncio.Future[list[QueuedMessage]]]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def fetch(self, client_id: str, after: int) -> list[QueuedMessage]:
        done: asyncio.Future[list[QueuedMessage]] = asyncio.get_running_loop().create_future()
        earlier = self._pending.get(client_id)
        if earlier is None:
            self._pending[client_id] = (after, [done])
        else:  # the same client's other socket: one read serves both
            self._pending[client_id] = (min(earlier[0], after), [*earlier[1], done])
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())
        return await done

    async def _read(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            afters = {cid: after for cid, (after, _) in batch.items()}
            try:
                found = await to_thread(self.service.fetch_many, afters, FETCH_LIMIT)
            except Exception as exc:  # each waiting socket decides what it means
                for _, waiters in batch.values():
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
            else:
                for cid, (_, waiters) in batch.items():
                    for w in waiters:
                        if not w.done():
                            w.set_result(found[cid])


def item(m: QueuedMessage) -> api.QueueItem:
    return api.QueueItem(
        seq=m.seq, kind=m.kind, group_id=m.group_id.hex(), epoch=m.epoch, data=m.data
    )


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def bearer(header: str) -> str | None:
    """The token of an ``Authorization`` header (the scheme is case-insensitive, RFC 9110
    §11.1)."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Push:
    """The ``/v1/ws`` endpoint of one DS node."""

    def __init__(
        self,
        service: DeliveryService,
        wakeups: Wakeups,
        sockets: SocketCounts,
        recheck: float = RECHECK,
        submit: SocketSubmitter | None = None,
        max_frame: int = 1 << 20,
        admit: SocketAdmitter | None = None,
        fanout: Fanout | None = None,
    ) -> None:
        self.fanout = fanout
        self.recheck = recheck
        self.submit = submit
        self.admit = admit
        self.max_frame = max_frame
        self.service = service
        self.acks = AckBatcher(service)
        self.fetches = FetchBatcher(service)
        self.wakeups = wakeups
        self.sockets = sockets

    async def endpoint(self, socket: WebSocket) -> None:
        self.wakeups.loop = asyncio.get_running_loop()
        if self.fanout is not None:
            self.fanout.loop = self.wakeups.loop
        await socket.accept()
        try:
            token, client = await self._authenticate(socket)
        except _Refused as refused:
            await _close(socket, refused.code, refused.reason)
            return
        except Unavailable as exc:
            await _close(socket, 1013, exc.message)
            return
        except WebSocketDisconnect:
            return
        if not self.sockets.acquire(client.id):
            await _close(
                socket,
                4429,
                f"too many WebSockets for this client (at most {self.sockets.cap}): "
                "close one, or share one socket between your tasks",
            )
            return
        try:
            hello: dict[str, object] = {"ready": True, "client_id": client.id}
            if self.submit is not None:
                hello["max_frame"] = self.max_frame
            await socket.send_text(json.dumps(hello))
            await self._serve(socket, token, client)
        except _Refused as refused:
            await _close(socket, refused.code, refused.reason)
        except Unavailable as exc:
            # The database is away: 1013 "try again later"; the client reconnects.
            await _close(socket, 1013, exc.message)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.sockets.release(client.id)

    async def _authenticate(self, socket: WebSocket) -> tuple[str, ClientInfo]:
        if "token" in socket.query_params:
            raise _Refused(
                4400,
                "do not put the token in the URL (it ends up in logs): send it as "
                'Authorization: Bearer, or as the first message {"token": ...}',
            )
        token = bearer(socket.headers.get("authorization", ""))
        if token is None:
            try:
                first = await asyncio.wait_for(socket.receive(), AUTH_TIMEOUT)
            except TimeoutError:
                raise _Refused(4401, 'no token: send {"token": ...} first') from None
            token = _token_of(first)
        return token, await self._check(token)

    async def _check(self, token: str) -> ClientInfo:
        try:
            cached = self.service.authenticate_cached(token)
            if cached is not None:
                return cached
            return await to_thread(self.service.authenticate, token)
        except Unavailable:
            raise
        except RateLimited as exc:
            raise _Refused(4429, exc.message) from None
        except DSError as exc:
            raise _Refused(4401, exc.message) from None

    async def _serve(self, socket: WebSocket, token: str, client: ClientInfo) -> None:
        event = asyncio.Event()
        self.wakeups.events.setdefault(client.id, set()).add(event)
        fan = self.fanout
        # This socket as the fan-out knows it (when there is one): registered before the
        # first read, so whatever commits after that read reaches it.
        mine = _Socket(client.id, event, RawOut.of(socket))
        if fan is not None:
            fan.sockets.setdefault(client.id, set()).add(mine)
        # Sent on this socket and not yet acknowledged here.
        sent = mine.sent
        # On SQLite seqs become visible in order (one writer at a time, seqs given inside
        # its transaction), so a read takes only what follows the last seq sent
        # (``mine.after``). On PostgreSQL, seqs of different groups can become visible out
        # of order: the queue is read whole each time and what was sent is skipped.
        in_order = self.service.db.dialect == "sqlite"
        full = asyncio.Event()  # the last read was a full page: an ack makes room for more
        read_task = asyncio.create_task(
            self._reader(socket, client, token, event, sent if in_order else None, full)
        )
        # The reader's end and the token's next check wake the loop as new messages do: the
        # wait is one Event.wait, where asyncio.wait with a timeout on every wake cost a
        # tenth of the event loop's time under load.
        read_task.add_done_callback(lambda _: event.set())
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.recheck
        timer = loop.call_at(next_check, event.set)
        try:
            while True:
                checked = False
                # (asyncio may run a timer up to its clock resolution early.)
                if loop.time() >= next_check - EARLY:
                    await self._check(token)  # expired or revoked: 4401
                    next_check = loop.time() + self.recheck
                    timer = loop.call_at(next_check, event.set)
                    checked = True
                elif loop.time() >= timer.when():  # it fired earlier still: arm it again
                    timer = loop.call_at(next_check, event.set)
                event.clear()  # before reading: a wakeup during the fetch is not lost
                items: list[QueuedMessage] = []
                # A live socket is sent what commits by the fan-out; it reads its queue
                # only at each token check (what another process queued).
                if not mine.live or checked:
                    # With a fan-out, a token check's read takes the queue whole: another
                    # process (an admin command) may have queued a seq below the last one
                    # the fan-out wrote. Not live meanwhile, so the fan-out writes nothing
                    # ahead of what this read sends.
                    whole = checked and fan is not None
                    mine.live = False
                    items = await self._read(
                        client,
                        0 if whole else mine.after,
                        in_order and not whole,
                        fan is not None,
                        sent,
                        full,
                    )
                    if items:
                        # One frame write per item, but one event-loop pass for the batch.
                        for m in items:
                            await socket.send_text(encode(item(m)).decode())
                            sent.add(m.seq)
                        if in_order:
                            mine.after = max(mine.after, max(m.seq for m in items))
                    if fan is not None and not full.is_set() and not event.is_set():
                        # Nothing committed for it since the read (the fan-out would have
                        # set the event): it has everything, from now on by the fan-out.
                        mine.live = True
                if read_task.done():
                    read_task.result()  # a refusal from the reader closes with its code
                    return
                if not items or not full.is_set():
                    # Sleep until new messages are queued, the client goes away, or it is
                    # time to check the token again. Not read again right after a send that
                    # left no page full: whatever was queued since the read set the event
                    # (cleared before it), so the wait ends at once (one read per wake).
                    await event.wait()
        finally:
            timer.cancel()
            read_task.cancel()
            self.wakeups.events.get(client.id, set()).discard(event)
            if fan is not None:
                mine.live = False
                fan.sockets.get(client.id, set()).discard(mine)
                if not fan.sockets.get(client.id, True):
                    del fan.sockets[client.id]

    async def _read(
        self,
        client: ClientInfo,
        after: int,
        in_order: bool,
        local: bool,
        sent: set[int],
        full: asyncio.Event,
    ) -> list[QueuedMessage]:
        """The client's queued messages not yet sent on this socket (``full`` set if the
        read was a whole page)."""
        if in_order or local:
            # SQLite: a read on this thread's own WAL connection never waits for the
            # writer and takes tens of microseconds — less than handing it to a worker
            # thread and back (measured: the hand-off was a tenth of the server's CPU).
            queued = self.service.fetch(client, after, FETCH_LIMIT)
        else:
            queued = await self.fetches.fetch(client.id, after)
        if len(queued) == FETCH_LIMIT:
            full.set()
        else:
            full.clear()
        if not in_order:
            # Forget what was acknowledged (here or elsewhere): what a read that began after
            # the ack was durable no longer returns. Only here, never when the ack is made
            # (PostgreSQL): a read that began before it may still return the seq, which must
            # then not go out again. Beyond a full page nothing is known.
            seen = {m.seq for m in queued}
            top = queued[-1].seq if len(queued) == FETCH_LIMIT else None
            sent.difference_update([s for s in sent if s not in seen and (top is None or s < top)])
        return [m for m in queued if m.seq not in sent]

    async def _reader(
        self,
        socket: WebSocket,
        client: ClientInfo,
        token: str,
        event: asyncio.Event,
        sent: set[int] | None,
        full: asyncio.Event,
    ) -> None:
        """Take the client's ack and submission frames. ``sent``: the seqs sent on this
        socket, to forget once acknowledged (SQLite, where reads follow a cursor; None on
        PostgreSQL, where the next read forgets them)."""
        submissions: asyncio.Queue[tuple[api.SocketSubmit, int]] = asyncio.Queue()
        pending = [0, 0]  # bytes and submissions queued in ``submissions`` or being judged
        submitter: asyncio.Task[None] | None = None
        try:
            while True:
                message = await socket.receive()
                data = _json_of(message)
                if isinstance(data, dict) and "submit" in data:
                    if submitter is None and self.submit is not None:
                        submitter = asyncio.create_task(
                            self._submitter(socket, token, submissions, pending)
                        )
                        submitter.add_done_callback(_retrieved)
                    await self._take_submission(
                        socket, client, data["submit"], message, submissions, pending
                    )
                    continue
                await self._take_acks(client, data, event, sent, full)
        finally:
            if submitter is not None:
                submitter.cancel()

    async def _take_submission(
        self,
        socket: WebSocket,
        client: ClientInfo,
        raw: object,
        message: Any,
        queue: asyncio.Queue[tuple[api.SocketSubmit, int]],
        pending: list[int],
    ) -> None:
        """Queue a ``{"submit": …}`` for the socket's submitter, or answer its refusal. The
        frame is charged to the client's request and byte rates first, valid or not (as an
        HTTP body is before it is decoded); a client past them is disconnected (4429)."""
        ident = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(ident, int) or not _is_seq(ident):
            raise _Refused(4400, 'a submission needs an integer "id" (0 <= id < 2^63)')
        if self.submit is None:
            await _answer(socket, ident, 400, "this server takes submissions over HTTP only")
            return
        size = len(message.get("text") or "")
        if self.admit is not None:
            try:
                self.admit(client.id, size)
            except RateLimited as exc:
                raise _Refused(4429, exc.message) from None
        try:
            submission = msgspec.convert(raw, api.SocketSubmit)
        except msgspec.ValidationError as exc:
            await _answer(socket, ident, 400, f"invalid submission: {exc}")
            return
        if pending[1] >= MAX_PENDING_SUBMITS or pending[0] + size > MAX_PENDING_BYTES:
            await _answer(
                socket,
                ident,
                429,
                f"more than {MAX_PENDING_SUBMITS} submissions unanswered on this socket: "
                "wait for answers",
                retry_after=1,
            )
            return
        pending[0] += size
        pending[1] += 1
        queue.put_nowait((submission, size))

    async def _submitter(
        self,
        socket: WebSocket,
        token: str,
        queue: asyncio.Queue[tuple[api.SocketSubmit, int]],
        pending: list[int],
    ) -> None:
        """Judge the socket's submissions in the order they came, answering each (the
        socket's items go out meanwhile). The next is started as soon as the one before has
        been run by the database (``db.BODY_RAN``), not once it is durable: they are
        accepted in order and share a COMMIT, where one at a time a socket could submit no
        faster than one COMMIT after the other."""
        assert self.submit is not None
        judging: set[asyncio.Task[None]] = set()
        try:
            while True:
                submission, size = await queue.get()
                ran = asyncio.Event()
                task = asyncio.create_task(self._judge(socket, token, submission, size, ran))
                judging.add(task)
                task.add_done_callback(judging.discard)
                # Counted as waiting until answered: a client that does not read its answers
                # holds at most MAX_PENDING_SUBMITS (and MAX_PENDING_BYTES) on its socket.
                task.add_done_callback(functools.partial(_release, pending, size))
                task.add_done_callback(_retrieved)
                task.add_done_callback(functools.partial(_set_event, ran))
                await ran.wait()
        finally:
            for task in judging:
                task.cancel()

    async def _judge(
        self,
        socket: WebSocket,
        token: str,
        submission: api.SocketSubmit,
        size: int,
        ran: asyncio.Event,
    ) -> None:
        """One submission, answered."""
        assert self.submit is not None
        loop = asyncio.get_running_loop()
        # (The submission's one transaction; the token check before it only reads.)
        BODY_RAN.set(functools.partial(loop.call_soon_threadsafe, ran.set))
        try:
            # The token is checked for each, as for an HTTP request: one expired or
            # revoked since the socket opened is refused (401) at once, not at the
            # socket's next recheck.
            seq = await self.submit(token, submission, size)
        except DSError as exc:
            await _answer(socket, submission.id, exc.status, exc.message, **exc.details)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("WebSocket submission failed")
            await _answer(socket, submission.id, 500, "internal error")
        else:
            await socket.send_text(json.dumps({"answer": submission.id, "status": 200, "seq": seq}))

    async def _take_acks(
        self,
        client: ClientInfo,
        data: object,
        event: asyncio.Event,
        sent: set[int] | None,
        full: asyncio.Event,
    ) -> None:
        """An ``{"ack": [seq, …]}`` frame, written with the node's other acks."""
        seqs = data.get("ack") if isinstance(data, dict) else None
        if not isinstance(seqs, list) or not all(_is_seq(s) for s in seqs):
            raise _Refused(4400, 'expected {"ack": [seq, ...]} with integer seqs')
        try:
            await self.acks.ack(client.id, seqs)
        except Unavailable:
            raise
        except DSError as exc:
            raise _Refused(4400, exc.message) from None
        if sent is not None:
            sent.difference_update(seqs)
        if full.is_set():
            event.set()  # the queue had more than one page: read on


def _release(pending: list[int], size: int, _: object) -> None:
    pending[0] -= size
    pending[1] -= 1


def _set_event(event: asyncio.Event, _: object) -> None:
    event.set()


def _retrieved(task: asyncio.Task[None]) -> None:
    """A submitter that ended by itself (its socket closed under a send) ends quietly."""
    if not task.cancelled():
        task.exception()


async def _answer(
    socket: WebSocket, ident: int, status: int, error: str, **details: object
) -> None:
    await socket.send_text(
        json.dumps({"answer": ident, "status": status, "error": error, **details})
    )


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _json_of(message: Any) -> object:
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise _Refused(1003, "binary messages are not understood: send JSON text")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise _Refused(4400, "malformed JSON") from None


def _token_of(message: Any) -> str:
    data = _json_of(message)
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise _Refused(4401, 'the first message must be {"token": "<bearer token>"}')
    return token


async def _close(socket: WebSocket, code: int, reason: str) -> None:
    if socket.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await socket.close(code=code, reason=reason[:120])


class CrossNodeListener:
    """With PostgreSQL, several DS nodes share the groups: each NOTIFYs the client ids whose
    queues grew, and every node LISTENs so it can wake its own WebSocket clients."""

    CHANNEL = "mlspy_queue"

    def __init__(self, service: DeliveryService, wakeups: Wakeups) -> None:
        self.db = service.db
        self.wakeups = wakeups
        self.enabled = hasattr(self.db, "listen_connection")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled:
            previous = service.on_queued

            def on_queued(ids: set[str]) -> None:
                previous(ids)
                ordered = sorted(ids)
                for i in range(0, len(ordered), 200):  # NOTIFY payloads are small
                    self.db.notify(self.CHANNEL, ",".join(ordered[i : i + 200]))  # type: ignore[attr-defined]

            service.on_queued = on_queued

    def start(self) -> None:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        """Listen until stopped; a lost connection is reopened (with a growing pause), and
        every local client is woken after it, since notifications may have been missed."""
        pause = 0.1
        while not self._stop.is_set():
            try:
                conn = self.db.listen_connection()  # type: ignore[attr-defined]
                try:
                    conn.execute(f"LISTEN {self.CHANNEL}")
                    self.wakeups.wake(set(self.wakeups.events))
                    pause = 0.1
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=50):
                            self.wakeups.wake(set(note.payload.split(",")))
                finally:
                    conn.close()
            except Exception:  # the database went away: try again
                if self._stop.wait(pause):
                    return
                pause = min(pause * 2, 5.0)
