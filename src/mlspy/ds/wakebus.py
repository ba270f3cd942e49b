"""Wake-ups between the worker processes of one ``mlspy serve --workers N`` on one machine.

Each worker holds the WebSockets it accepted. When a worker queues messages for clients (or
ends tokens), the other workers must learn it: their sockets for those clients fetch, their
token caches forget. PostgreSQL nodes tell each other through LISTEN/NOTIFY
(``push.CrossNodeListener``); workers sharing a SQLite file have no such channel, so each
binds a Unix datagram socket in a directory the supervisor made for them, and a worker sends
one datagram to every other socket in that directory. Datagrams are local, ordered and
cheap (no database round trip).

A lost datagram (a worker restarting) delays a delivery until the socket's next token check
(``Limits.token_recheck``), never loses it: messages stay queued in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# Client ids per datagram (each 32 hex characters): well inside the datagram size limit.
CHUNK = 500
# How often the list of the other workers' sockets is read again.
REFRESH = 1.0
WAKE = b"w"
TOKENS = b"t"


class WakeBus:
    """This worker's end: ``publish`` to the others, ``start`` to hear them."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / f"{os.getpid()}.sock"
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a previous worker with this pid
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.setblocking(False)
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.settimeout(0.5)  # a peer whose buffer is full gets half a second
        self._peers: list[str] = []
        self._peers_read = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def _others(self) -> list[str]:
        now = time.monotonic()
        if now - self._peers_read > REFRESH:
            mine = self.path.name
            try:
                names = os.listdir(self.dir)
            except FileNotFoundError:
                names = []
            self._peers = [str(self.dir / n) for n in names if n.endswith(".sock") and n != mine]
            self._peers_read = now
        return self._peers

    def publish(self, kind: bytes, ids: Iterable[str] = ()) -> None:
        """Tell every other worker (from any thread)."""
        ordered = sorted(ids)
        chunks = [ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)] or [[]]
        for peer in self._others():
            for chunk in chunks:
                try:
                    self._out.sendto(kind + ",".join(chunk).encode(), peer)
                except (FileNotFoundError, ConnectionRefusedError):
                    self._peers_read = 0.0  # a worker that left: read the list again
                    break
                except OSError:
                    break  # full for half a second: its sockets catch up at their recheck

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_wake: Callable[[set[str]], None],
        on_tokens: Callable[[], None],
    ) -> None:
        """Hear the others on ``loop``."""
        self._loop = loop

        def readable() -> None:
            while True:
                try:
                    data = self._sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                kind, body = data[:1], data[1:].decode("ascii", "replace")
                if kind == WAKE:
                    on_wake({i for i in body.split(",") if i})
                elif kind == TOKENS:
                    on_tokens()

        loop.add_reader(self._sock.fileno(), readable)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._out.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


__all__ = ["TOKENS", "WAKE", "WakeBus"]
