"""A minimal HTTP/1.1 keep-alive client for the load generator's submissions.

Why not httpx: under an open-loop load its connection pool rescans every connection and every
queued request on each request (and, without ``sniffio`` installed, retries an import each
time), so at a few hundred requests a second the generator spent more CPU than the DS and set
the pace itself. Here each connection serves one request at a time and the queueing is the
caller's (an ``asyncio.Queue``), so a request costs the same however many are waiting.

Only what the DS's answers need: ``Content-Length`` bodies (uvicorn sends one with every
response of the API), no chunked encoding, no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class HTTPError(Exception):
    """The connection failed or the answer was not HTTP/1.1 as expected."""


class Connection:
    """One keep-alive connection, opened on first use and again after a failure."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"plain http:// URLs only: {url}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._host_header = parts.netloc.encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """POST ``body``; returns the status and the response body. Any failure closes the
        connection (a late answer must not be taken for the next request's)."""
        try:
            return await self._post(path, headers, body)
        except BaseException:
            self.close()
            raise

    async def _post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self._reader is not None and self._reader.at_eof():
            # The server closed it while idle (its keep-alive timeout, or it was killed and
            # restarted): open another rather than fail the request, as HTTP clients do.
            self.close()
        if self._writer is None:
            try:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise HTTPError(f"cannot connect: {type(exc).__name__}") from None
        assert self._reader is not None
        head = [f"POST {path} HTTP/1.1".encode(), b"host: " + self._host_header]
        head += [f"{k}: {v}".encode() for k, v in headers.items()]
        head.append(b"content-length: %d" % len(body))
        try:
            self._writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            await self._writer.drain()
            response = await self._reader.readuntil(b"\r\n\r\n")
            status, length, closing = _parse_head(response)
            content = await self._reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise HTTPError(f"connection lost: {type(exc).__name__}") from None
        if closing:
            self.close()
        return status, content

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = None


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the server closes the connection after it."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HTTPError(f"not an HTTP/1.1 answer: {lines[0]!r}")
    length: int | None = None
    closing = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length" and value.isdigit():
            length = int(value)
        elif name == "connection" and value.lower() == "close":
            closing = True
        elif name == "transfer-encoding":
            raise HTTPError("chunked answers are not understood here")
    if length is None:
        raise HTTPError("an answer without Content-Length")
    return int(parts[1]), length, closing
