"""A ``mlspy bench-ds`` sender's submissions on the DS's WebSocket, as the SDK makes them.

The DS takes ``{"submit": {"id": …, "group_id": …, <the HTTP body>}}`` on ``/v1/ws`` and
answers ``{"answer": id, "status": …, "seq": …}``, one submission of a socket at a time in
the order sent (``mlspy.ds.push``). A :class:`SocketLane` sends each submission when it is
due, without waiting for earlier answers (they queue at the DS, and that wait counts in the
latency), and matches each answer to its submission by id. Items the DS pushes on the
sender's socket (its own group's backlog) are acknowledged and otherwise ignored. A lost
socket fails the submissions awaiting answers (:class:`SocketGone`) and is reopened.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

RECONNECT_PAUSE = 0.2
WS_MAX_SIZE = 64 << 20


class SocketGone(Exception):
    """The socket closed (or was not open) before the submission's answer came."""


class SocketLane:
    """One sender's WebSocket to one DS node."""

    def __init__(self, ws_url: str, token: str, group_id: bytes) -> None:
        self.ws_url = ws_url
        self.token = token
        self._head = '{"submit":{"group_id":"' + group_id.hex() + '","id":'
        self._next_id = 0
        self._answers: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._conn: ClientConnection | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Keep the socket open (reopened after a drop) and read its answers."""
        while True:
            try:
                async with connect(
                    f"{self.ws_url}/v1/ws", max_size=WS_MAX_SIZE, open_timeout=30
                ) as conn:
                    await conn.send(json.dumps({"token": self.token}))
                    ready = json.loads(await conn.recv())
                    if not (isinstance(ready, dict) and ready.get("ready") is True):
                        raise RuntimeError(f"the DS refused the socket: {ready}")
                    if "max_frame" not in ready:
                        raise RuntimeError("this DS takes no submissions on its WebSocket")
                    self._conn = conn
                    self.connected.set()
                    await self._read(conn)
            except Exception:
                pass  # dropped (the DS was killed or restarted), or refused while it starts
            finally:
                self._conn = None
                self._fail_all()
            await asyncio.sleep(RECONNECT_PAUSE)

    async def _read(self, conn: ClientConnection) -> None:
        async for frame in conn:
            data: Any = json.loads(frame)
            if not isinstance(data, dict):
                continue
            ident = data.get("answer")
            if isinstance(ident, int):
                waiter = self._answers.pop(ident, None)
                if waiter is not None and not waiter.done():
                    raw = frame.encode() if isinstance(frame, str) else frame
                    waiter.set_result((int(data.get("status", 0)), raw))
            elif "seq" in data:
                await conn.send(json.dumps({"ack": [data["seq"]]}))

    def _fail_all(self) -> None:
        answers, self._answers = self._answers, {}
        for waiter in answers.values():
            if not waiter.done():
                waiter.set_exception(SocketGone("the WebSocket closed before the answer"))

    async def submit(self, body: bytes) -> tuple[int, bytes]:
        """Submit ``body`` (the JSON of ``POST /v1/groups/{id}/messages``); the answer's
        status and its JSON. SocketGone if the socket is not open or closes first; the
        caller bounds the wait."""
        conn = self._conn
        if conn is None:
            raise SocketGone("the WebSocket is not open")
        ident = self._next_id
        self._next_id += 1
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        # Failed by a lost socket just as its submitter was cancelled: nobody awaits it.
        waiter.add_done_callback(_retrieve)
        self._answers[ident] = waiter
        try:
            try:
                await conn.send(f"{self._head}{ident},{body.decode()[1:]}}}")
            except Exception as exc:
                raise SocketGone(f"the WebSocket failed: {exc!r}") from None
            return await waiter
        finally:
            self._answers.pop(ident, None)
            if not waiter.done():
                waiter.cancel()


def _retrieve(future: asyncio.Future[tuple[int, bytes]]) -> None:
    if not future.cancelled():
        future.exception()
