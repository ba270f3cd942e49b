"""Running the Delivery Service: ``mlspy serve`` and an in-process server for tests.

Both build their uvicorn configuration with :func:`uvicorn_options`, so the timeouts a test
checks on an :class:`InProcessServer` are the ones ``mlspy serve`` runs with.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlspy.ds.app import create_app
from mlspy.ds.config import (
    Settings,
    allowed_suites,
    default_database,
    is_loopback,
    mask_url,
    metrics_token,
)
from mlspy.ds.db import open_database
from mlspy.ds.limits import WS_MAX_FRAME, Limits
from mlspy.ds.logs import configure_logging, install_redaction
from mlspy.ds.metrics import Metrics
from mlspy.ds.service import DeliveryService
from mlspy.ds.workers import run_workers
from mlspy.errors import StorageError

SWITCH_INTERVAL = 0.0005

# A request head (request line and headers) larger than this is refused with 431: uvicorn's
# httptools protocol sets no limit and buffers a head of any size (measured: 200 MB in 0.5 s
# on one connection).
MAX_HEAD = 128 * 1024
_HEAD_TOO_LARGE_ANSWER = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
    b"charset=utf-8\r\ncontent-length: 29\r\nconnection: close\r\n\r\n"
    b"the request head is too big.\n"
)
_REQUEST_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 35\r\nconnection: close\r\n\r\nthe request was not sent in time.\r\n"
)


def timed_http_protocol(idle_timeout: float, request_timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP/1.1 protocol with the two deadlines it lacks (uvicorn 0.55 starts its
    keep-alive timer only after a response, so a connection that never sends a request, or
    sends half of one, is held open for good):

    * a connection without a request in progress is closed after ``idle_timeout`` seconds
      (also before its first request; after a response, uvicorn's own keep-alive timer, set
      to the same value, does it);
    * a request must arrive whole (head and body) within ``request_timeout`` seconds of its
      first byte: a late head is answered 408, a late body ends the connection (the
      application sees the client go away);
    * a request head over ``MAX_HEAD`` bytes is answered 431 and the connection closed.
    """

    class TimedHttpProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn types this as int; a float works (loop.call_later) and lets tests
            # use sub-second timeouts.
            self.timeout_keep_alive = idle_timeout  # type: ignore[assignment]
            self._deadline: asyncio.TimerHandle | None = None
            self._head_started = False  # a request's first byte has arrived
            self._head_done = False
            self._head_bytes = 0  # bytes received while the head is incomplete

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._head_started and not self._head_done:
                # Half a head: nothing reached the application; say why we hang up. (An
                # idle connection is closed without a word, as keep-alive timeouts are.)
                self.transport.write(_REQUEST_TIMEOUT_ANSWER)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(idle_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_started and not self._head_done and not self.transport.is_closing():
                # All of ``data`` went into a head still incomplete (a chunk that ends a
                # head is at most one read, so the cap holds within one read's size).
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD:
                    self._disarm()
                    self.transport.write(_HEAD_TOO_LARGE_ANSWER)
                    self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_started, self._head_done = True, False
            self._head_bytes = 0
            self._arm(request_timeout)

        def on_headers_complete(self) -> None:
            self._head_done = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            self._head_started = False
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            # The WebSocket protocol takes the transport over, with its own ping timeouts.
            self._disarm()
            super().handle_websocket_upgrade()

    return TimedHttpProtocol


def uvicorn_options(
    limits: Limits, *, max_connections: int | None = None, access_log: bool = True
) -> dict[str, Any]:
    """The uvicorn.Config keywords that carry the operator's limits."""
    # A WebSocket is pinged halfway through its idle time and dropped if the pong is not back
    # by the end of it: a vanished peer is gone within ws_idle_timeout.
    half = limits.ws_idle_timeout / 2
    install_redaction()
    return {
        "http": timed_http_protocol(limits.http_idle_timeout, limits.request_timeout),
        "ws": "websockets-sansio",
        "ws_ping_interval": half,
        "ws_ping_timeout": half,
        "ws_max_size": WS_MAX_FRAME,
        # MLS messages are ciphertext: compressing them costs CPU for nothing.
        "ws_per_message_deflate": False,
        "limit_concurrency": max_connections,
        "access_log": access_log,
        "log_config": None,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
    }


def service_for(
    database: str,
    registration: str = "invite",
    ca: str | None = None,
    **options: Any,
) -> DeliveryService:
    """The DS of ``mlspy serve``: names are bound as ``registration`` says ("invite" by
    default); ``ca`` is a PEM file of trust anchors for X.509 credentials; ``options`` are
    further DeliveryService keywords (retention, quotas)."""
    x509 = None
    if ca is not None:
        from cryptography import x509 as certs

        from mlspy.credentials import X509Validator

        x509 = X509Validator(certs.load_pem_x509_certificates(Path(ca).read_bytes()))
    return DeliveryService(open_database(database), registration=registration, x509=x509, **options)


def build_service(settings: Settings) -> DeliveryService:
    extra = {
        "retention": settings.retention,
        "max_message": settings.max_message,
        "quota_bytes": settings.quotas.bytes,
        "quota_groups": settings.quotas.groups,
        "quota_key_packages": settings.quotas.key_packages,
        "cipher_suites": allowed_suites(settings.cipher_suites),
    }
    try:
        return service_for(
            settings.database,
            settings.registration,
            settings.ca,
            **extra,
        )
    except StorageError as exc:
        # The database layer names the URL it could not use, password and all: the
        # operator's terminal and log collector get it masked.
        raise StorageError(
            str(exc).replace(settings.database, mask_url(settings.database))
        ) from None


def build_app(service: DeliveryService, settings: Settings, wake_dir: str | None = None) -> Any:
    """``create_app`` with the operator's limits, metrics exposure and sweep interval
    (``wake_dir``: the worker processes' wake-up directory, ``workers.py``)."""
    metrics: bool | Metrics = False
    if settings.metrics:
        metrics = Metrics(service.db, token=metrics_token(settings), public=settings.metrics_public)
    return create_app(
        service,
        limits=settings.limits,
        metrics=metrics,
        sweep_interval=settings.sweep_interval,
        wake_dir=wake_dir,
    )


def build(database: str, registration: str = "invite", ca: str | None = None) -> Any:
    return create_app(service_for(database, registration, ca))


def serve_settings(settings: Settings) -> None:
    """Run ``mlspy serve`` with these settings until interrupted."""
    # The event loop thread and the database threads share the GIL. A database thread gives
    # it up around every SQLite call and must wait for it back; with the default 5 ms switch
    # interval each of a transaction's statements could wait that long behind a busy loop
    # (a convoy). 0.5 ms keeps statements flowing at a small cost in switches.
    sys.setswitchinterval(SWITCH_INTERVAL)
    configure_logging(settings.log.level, settings.log.format)
    if not is_loopback(settings.host) and not settings.tls_cert:
        print(
            f"mlspy serve: warning: listening on {settings.host} without TLS: bearer tokens "
            "and messages cross the network in clear. Give --tls-cert/--tls-key, or put a "
            "TLS-terminating proxy in front and listen on 127.0.0.1 (docs/deploy.md).",
            file=sys.stderr,
            flush=True,
        )
    service = build_service(settings)
    if settings.registration == "invite" and not service.has_accounts():
        # A new server: the first user needs a code. Printed to the console, never logged.
        code, _ = service.create_invite()
        print(
            f"registration needs an invite code; the first user's (single use, "
            f"{service.invite_ttl / 86400:g} days): {code}"
            "\n(more: `mlspy admin invite --database ...`; users create codes for friends)",
            flush=True,
        )
    print(
        f"mlspy serve: database {mask_url(settings.database)}, listening on "
        f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}",
        file=sys.stderr,
        flush=True,
    )
    if settings.workers > 1:
        service.db.close()  # each worker opens its own, after the fork
        run_workers(settings, _worker_app)
        return
    uvicorn.run(build_app(service, settings), **uvicorn_config(settings))


def _worker_app(settings: Settings, wake_dir: str) -> tuple[Any, dict[str, Any]]:
    """One worker's app and uvicorn keywords (called in the worker, after the fork)."""
    service = build_service(settings)
    return build_app(service, settings, wake_dir=wake_dir), uvicorn_config(settings)


def uvicorn_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's keywords for ``settings``."""
    return {
        "host": settings.host,
        "port": settings.port,
        "ssl_certfile": settings.tls_cert,
        "ssl_keyfile": settings.tls_key,
        "log_level": settings.log.level.lower(),
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        **uvicorn_options(
            settings.limits,
            max_connections=settings.max_connections,
            access_log=settings.log.access_log,
        ),
    }


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    database: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    registration: str = "invite",
    ca: str | None = None,
) -> None:
    """``serve_settings`` with the defaults but for these."""
    serve_settings(
        Settings(
            host=host,
            port=port,
            database=database or default_database(),
            tls_cert=tls_cert,
            tls_key=tls_key,
            registration=registration,
            ca=ca,
        )
    )


class InProcessServer:
    """A real uvicorn server on a free loopback port, in a background thread, configured as
    ``mlspy serve`` is (``uvicorn_options``) with ``limits``."""

    def __init__(
        self,
        app: Any,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        limits: Limits | None = None,
        access_log: bool = True,
        log_level: str = "warning",
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        scheme = "https" if tls_cert else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.ws_url = f"{'wss' if tls_cert else 'ws'}://127.0.0.1:{self.port}"
        options = uvicorn_options(limits or Limits(), access_log=access_log)
        options["timeout_graceful_shutdown"] = 1
        config = uvicorn.Config(
            app,
            log_level=log_level,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            **options,
        )
        if access_log:
            # uvicorn.Config(access_log=False) of an earlier server cut the access logger off
            # for the whole process; this one logs (at ``log_level``: "warning" hides it).
            logging.getLogger("uvicorn.access").propagate = True
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("the Delivery Service did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


__all__ = [
    "InProcessServer",
    "build",
    "build_app",
    "build_service",
    "default_database",
    "serve",
    "serve_settings",
    "service_for",
    "timed_http_protocol",
    "uvicorn_options",
]
