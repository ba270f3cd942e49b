"""The client side of the Delivery Service's WebSocket (``/v1/ws``, ``mlspy.ds.push``).

The DS sends ``{"ready": true, "client_id": …}``, then every queued message as the JSON of
``api.QueueItem`` (the same items as ``GET /v1/queue``), in order of seq within one socket,
each once per socket; a message not acknowledged is sent again on the next socket. The client
acknowledges with ``{"ack": [seq, …]}`` frames. The DS does not answer an ack frame, so the
client never learns on the socket that an ack took effect (``Client`` keeps its processed
marks until an HTTP ack confirms it). Submissions go on the socket too when the DS takes
them ("ready" gives a ``max_frame``): ``{"submit": …}``, answered ``{"answer": id, …}``
(:meth:`PushSocket.submit`).

:class:`PushSocket` is one connection: it reads frames in a task of its own and hands out
the items that have arrived as batches. :class:`Ledger` remembers, for the socket open now,
which seqs it delivered and which were acknowledged over HTTP meanwhile, so that a copy the
socket sent before an HTTP ack (still on its way when the ack was made) is recognized.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from mlspy.ds.client import queue_item, refusal

__all__ = ["Closed", "Ledger", "PushSocket", "ws_url", "ws_ssl"]

# Close codes of ``mlspy.ds.push``.
TOKEN_REFUSED = 4401  # no, bad, expired or revoked token: log in again
DB_AWAY = 1013  # the DS's database is away for now: reconnect later

# The largest frame taken: a queued message of the DS's default maximum (1 MiB) in base64,
# with room to spare. A larger one ends the socket (1009); the HTTP fallback then takes it.
MAX_FRAME = 8 << 20
MAX_BATCH = 500  # items processed (and acknowledged in one frame) at most per batch
OPEN_TIMEOUT = 10.0  # connect, upgrade and the DS's "ready"
# How long a submission's answer may take (as the HTTP client's read timeout): then the socket
# is given up, and the submission's fate is unknown (the caller's retry settles it).
ANSWER_TIMEOUT = 30.0
CLOSE_TIMEOUT = 2.0


class Closed(Exception):
    """The socket ended: ``code`` is its close code (None: no close frame — the connection
    broke, or it never opened); ``ready`` says whether the DS had accepted it."""

    def __init__(self, code: int | None, reason: str, *, ready: bool) -> None:
        super().__init__(f"WebSocket closed ({code}): {reason}" if code else reason)
        self.code = code
        self.reason = reason
        self.ready = ready


def ws_url(server: str) -> str:
    """The ``/v1/ws`` URL of a DS base URL (http → ws, https → wss)."""
    return server.replace("http", "ws", 1) + "/v1/ws"


def ws_ssl(url: str, verify: bool | ssl.SSLContext) -> ssl.SSLContext | None:
    """The TLS context for the socket: the trust the HTTP client has (``DSClient.verify``)."""
    if not url.startswith("wss:"):
        return None
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class PushSocket:
    """One WebSocket to ``/v1/ws``: ``async with PushSocket(...) as sock`` opens it and waits
    for the DS's "ready"; :meth:`batch` returns the items received (raising :class:`Closed`
    once the socket ended and every item before the end was handed out); :meth:`ack`
    acknowledges seqs in one frame."""

    def __init__(self, url: str, token: str | None, *, verify: bool | ssl.SSLContext) -> None:
        self.url = url
        self.token = token
        self.verify = verify
        self.client_id = ""
        self._conn: ClientConnection | None = None
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._end: Closed | None = None
        self._reader: asyncio.Task[None] | None = None
        # The largest frame the DS takes; None: it takes no submissions on the socket.
        self.max_frame: int | None = None
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0

    async def __aenter__(self) -> PushSocket:
        # The token goes in the upgrade's Authorization header, never in the URL (which
        # proxies and access logs keep).
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            self._conn = await connect(
                self.url,
                additional_headers=headers,
                ssl=ws_ssl(self.url, self.verify),
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
                max_size=MAX_FRAME,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise Closed(None, f"cannot open the WebSocket: {exc!r}", ready=False) from None
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                first = await self._conn.recv()
            hello = json.loads(first)
        except ConnectionClosed as exc:
            await self._conn.close()
            raise _closed(exc, ready=False) from None
        except (TimeoutError, ValueError) as exc:
            await self._conn.close(4400, "expected ready")
            raise Closed(None, f"no ready from the DS: {exc!r}", ready=False) from None
        if not isinstance(hello, dict) or hello.get("ready") is not True:
            await self._conn.close(4400, "expected ready")
            raise Closed(None, f"expected ready, got {first!r:.80}", ready=False)
        self.client_id = str(hello.get("client_id", ""))
        most = hello.get("max_frame")
        self.max_frame = most if isinstance(most, int) and not isinstance(most, bool) else None
        self._reader = asyncio.create_task(self._read(self._conn))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._conn is not None:
            await self._conn.close()
        if self._reader is not None:
            # Waited for without taking its CancelledError for ours (a cancel of the caller
            # must still propagate).
            await asyncio.wait({self._reader}, timeout=CLOSE_TIMEOUT)

    async def close(self, reason: str) -> None:
        """Close it from our side: :meth:`batch` raises :class:`Closed` (1000) once the
        items received before are handed out."""
        if self._conn is not None:
            await self._conn.close(1000, reason)

    async def _read(self, conn: ClientConnection) -> None:
        """Read frames as they come (also while a batch is processed), queueing the items."""
        try:
            async for frame in conn:
                try:
                    data = json.loads(frame)
                except ValueError:
                    raise Closed(None, "a frame that is not JSON", ready=True) from None
                if isinstance(data, dict) and "answer" in data:
                    self._answered(data)
                elif isinstance(data, dict) and "seq" in data:
                    try:
                        self._queue.put_nowait(queue_item(data))
                    except ValueError as exc:
                        raise Closed(None, str(exc), ready=True) from None
                # Other frames are not ours to act on (a newer DS may send more kinds).
            self._end = _closed(None, ready=True, conn=conn)
        except ConnectionClosed as exc:
            self._end = _closed(exc, ready=True)
        except Closed as exc:
            self._end = exc
            await conn.close(4400, "malformed frame")
        finally:
            self._queue.put_nowait(None)  # the end, after every item received
            answers, self._answers = self._answers, {}
            end = self._end or Closed(None, "the connection broke", ready=True)
            for waiter in answers.values():
                if not waiter.done():
                    waiter.set_exception(end)

    def _answered(self, data: dict[str, Any]) -> None:
        ident = data["answer"]
        waiter = self._answers.pop(ident, None) if isinstance(ident, int) else None
        if waiter is not None and not waiter.done():
            waiter.set_result(data)

    async def submit(self, group_id: bytes, body: dict[str, Any]) -> int | None:
        """Submit ``body`` (``ds.client.submit_body``) for ``group_id`` on the socket: its
        seq once the DS accepted it; None if the DS takes no submissions here or the frame
        would be too large (send it over HTTP). A refusal raises what the HTTP request
        would (``DSConflict``, ``DSRequestError``); a socket that ends before the answer
        raises :class:`Closed` — the submission may or may not have been taken."""
        if self._conn is None or self.max_frame is None or self._reader is None:
            return None
        if self._reader.done():
            return None  # known gone before anything was sent: HTTP takes it
        ident = self._next_id
        self._next_id += 1
        frame = json.dumps({"submit": {"id": ident, "group_id": group_id.hex(), **body}})
        if len(frame) > self.max_frame:
            return None
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[ident] = waiter
        try:
            try:
                await self._conn.send(frame)
            except ConnectionClosed as exc:
                raise _closed(exc, ready=True) from None
            try:
                async with asyncio.timeout(ANSWER_TIMEOUT):
                    answer = await waiter
            except TimeoutError:
                await self.close("no answer to a submission")
                raise Closed(
                    None, f"no answer to a submission in {ANSWER_TIMEOUT:g} s", ready=True
                ) from None
        finally:
            self._answers.pop(ident, None)
        status = answer.get("status")
        if status == 200 and isinstance(answer.get("seq"), int):
            return int(answer["seq"])
        details = {k: v for k, v in answer.items() if k not in ("answer", "status")}
        raise refusal(status if isinstance(status, int) else 502, details)

    async def batch(self, timeout: float) -> list[dict[str, Any]]:
        """The items received (waiting up to ``timeout`` seconds for one; [] if none came),
        at most ``MAX_BATCH``, in the order the DS sent them."""
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the result when it
        # is cancelled just as the item arrives (gh-86296), and the cancel of ``stop()`` was
        # lost — the receive loop went on and ``stop()`` waited for it forever.
        try:
            async with asyncio.timeout(timeout):
                first = await self._queue.get()
        except TimeoutError:
            return []
        if first is None:
            self._queue.put_nowait(None)  # the end stays the end
            assert self._end is not None
            raise self._end
        items = [first]
        while len(items) < MAX_BATCH and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)  # raised by the next call
                break
            items.append(item)
        return items

    async def ack(self, seqs: list[int]) -> None:
        """Acknowledge ``seqs`` in one frame. If the socket is gone the frame is lost, which
        the caller's processed marks make harmless; the reader reports the end."""
        if self._conn is None or not seqs:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._conn.send(json.dumps({"ack": seqs}))


def _closed(
    exc: ConnectionClosed | None, *, ready: bool, conn: ClientConnection | None = None
) -> Closed:
    """What a websockets close says, as :class:`Closed`."""
    if exc is not None and exc.rcvd is not None:
        return Closed(exc.rcvd.code, exc.rcvd.reason, ready=ready)
    if conn is not None and conn.close_code is not None:
        return Closed(conn.close_code, conn.close_reason or "", ready=ready)
    return Closed(None, "the connection broke", ready=ready)


class Ledger:
    """Seqs seen around the socket open now, to tell a stale copy from a new message.

    The DS sends a message once per socket, and again on a later socket only while it is not
    acknowledged. A message acknowledged over HTTP (``sync``) while a socket is open may
    already be on its way on that socket, and its processed mark is dropped after the ack:
    such seqs are ``gone`` until that copy arrives (then skipped). Seqs the socket delivered
    need no such care (it sends none twice): ``delivered`` holds those whose marks are still
    kept, so dropping their marks adds nothing to ``gone``. Both are forgotten with the
    socket: a new one sends only what is still queued."""

    # ``gone`` keeps what the socket never sends (an HTTP fetch that came before the DS's
    # socket read the queue); past this many, the socket is renewed to forget them.
    MAX_GONE = 10_000

    def __init__(self) -> None:
        self.live = False
        self.delivered: set[int] = set()
        self.gone: set[int] = set()

    def open(self) -> None:
        self.live = True
        self.delivered.clear()
        self.gone.clear()

    def close(self) -> None:
        self.live = False
        self.delivered.clear()
        self.gone.clear()

    def stale(self, seq: int) -> bool:
        """Whether the socket's item ``seq`` was acknowledged over HTTP after the socket sent
        it (processed then: skip it)."""
        if seq in self.gone:
            self.gone.discard(seq)
            return True
        return False

    def received(self, seq: int) -> None:
        """The socket delivered ``seq`` and it is marked processed."""
        if self.live:
            self.delivered.add(seq)

    def dropped(self, seqs: list[int]) -> None:
        """The processed marks of ``seqs`` are dropped after an HTTP ack."""
        if not self.live:
            return
        for seq in seqs:
            if seq in self.delivered:
                self.delivered.discard(seq)
            else:
                self.gone.add(seq)

    @property
    def overflowing(self) -> bool:
        return len(self.gone) > self.MAX_GONE
