"""Prometheus metrics of the Delivery Service: a pure ASGI middleware and ``GET /metrics``.

Theory of operation. One :class:`Metrics` object per app owns its own ``CollectorRegistry``
(tests run many apps in one process; a process-global registry would mix them and refuse
duplicate names). :meth:`Metrics.install` adds :class:`MetricsMiddleware` to a Starlette app;
the middleware sees every HTTP request and WebSocket on the way in and out, and answers
``GET /metrics`` itself, so the app's router (and its OpenAPI document) is untouched.

What is measured, and why it stays cheap and bounded:

- ``mlspy_ds_http_requests_total{method,route,status}`` and
  ``mlspy_ds_http_request_duration_seconds{method,route,status}`` — ``route`` is the route's
  *template* (``/v1/groups/{group_id}/messages``), read from the route Starlette matched, never
  the raw path: a raw path would let any client mint label values (and carries group ids).
  Paths no route matches are one label, ``unmatched``. ``status`` is the class (``2xx`` …)
  (``aborted`` when the request was cancelled before it was answered: the client went away
  or a timeout dropped it) and ``method`` is one of the methods the API uses or ``other``.
- ``mlspy_ds_http_requests_in_flight``.
- ``mlspy_ds_submissions_total{kind,outcome}`` — messages submitted to a group: ``kind`` is
  ``commit``, ``proposal``, ``application`` (``unknown`` when the request failed before the
  message was read), ``outcome`` is ``accepted``, ``conflict`` (409: another commit won the
  epoch), ``too_large``, ``rate_limited``, ``refused`` (other 4xx) or ``error`` (5xx). The
  kind comes from :func:`note_submission`, one call in ``DeliveryService.submit``: the
  middleware gives each request a slot in a context variable, which the worker thread that
  runs ``submit`` shares.
- ``mlspy_ds_refused_requests_total{reason,route}`` — 429 (``rate_limited``) and 413
  (``too_large``) answers, and WebSockets closed with 4429 (over a per-client cap) or 1009
  (a frame too big).
- ``mlspy_ds_database_errors_total{status}`` — requests that ended in 503 (the database is
  away: :class:`~mlspy.ds.errors.Unavailable`) or 500 (an unexpected error; with a healthy
  code base, the database's).
- ``mlspy_ds_websockets_open`` and ``mlspy_ds_websocket_connections_total{outcome}``
  (``accepted`` / ``refused`` before accepting), ``mlspy_ds_websocket_server_closes_total{code}``
  — close codes the server sent (4401 unauthenticated, 4429 over a cap, …; the app's own
  codes, so bounded — codes a client sends are not labels).
- ``mlspy_ds_queue_messages`` and ``mlspy_ds_queue_clients`` — deliveries waiting in queues
  and how many clients have any, one ``count`` query at scrape time. The query runs on a
  worker thread and is waited for at most ``depth_timeout`` seconds: a scrape must not hang
  behind a busy or absent database. On timeout or error the last value is reported and
  ``mlspy_ds_queue_depth_age_seconds`` says how old it is; ``mlspy_ds_queue_depth_failures_total``
  counts the misses.

Exposure. Metrics tell an observer how busy the server is and when people talk; an operator
may not want them public. Three modes, given as :class:`Metrics` arguments (``create_app(service,
metrics=Metrics(db, token=...))``) or, with ``create_app(service, metrics=True)``, read from the
environment by :meth:`Metrics.from_env`:

- default: served only to loopback clients (127.0.0.0/8, ::1); others get 403. uvicorn
  rewrites the client address from ``X-Forwarded-For`` only for connections from its
  ``forwarded_allow_ips`` (loopback by default), so a reverse proxy on the same host that sets
  that header does not make every internet client look local. A proxy that does not set it
  does: then set a token or block ``/metrics`` at the proxy.
- ``token`` (``MLSPY_METRICS_TOKEN``): every client, loopback or not, must send
  ``Authorization: Bearer <token>`` (else 401); Prometheus has ``authorization.credentials``
  for this.
- ``public=True`` (``MLSPY_METRICS_PUBLIC=1``): anyone (the network decides who reaches it).

The metrics text holds route templates, status classes, counts and timings only: no path, no
query string, no header, so no token or key can leak into it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import hmac
import ipaddress
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
# The status label of a request cancelled before it was answered (the client went away).
ABORTED = "aborted"
# WebSocket close codes that mean the same as a 429 (a per-client cap) and a 413.
_WS_RATE_LIMITED, _WS_TOO_BIG = 4429, 1009
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
# Latency buckets from 1 ms (a cached GET on loopback) to 30 s (a request timeout).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SUBMIT_ROUTE = "/v1/groups/{group_id}/messages"

# The kind of message the current request submitted, written by ``note_submission`` from the
# worker thread that runs ``DeliveryService.submit`` (it runs in a copy of this context, so it
# sees the same list object) and read by the middleware once the request is answered.
_submission: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "mlspy_ds_submission", default=None
)


def note_submission(kind: str) -> None:
    """Record the kind (``commit``, ``proposal``, ``application``) of the message the current
    request submits; a no-op outside a measured request."""
    slot = _submission.get()
    if slot is not None:
        slot.append(kind)


@contextlib.contextmanager
def submission_kinds() -> Iterator[list[str]]:
    """Collect what ``note_submission`` records while the block runs (for a submission that
    is not an HTTP request: the WebSocket's ``{"submit": …}``)."""
    slot: list[str] = []
    reset = _submission.set(slot)
    try:
        yield slot
    finally:
        _submission.reset(reset)


class QueueSource(Protocol):
    """What the queue-depth gauge needs of the database (``mlspy.ds.db.Database``)."""

    def transaction(self) -> Any: ...


class _QueueDepth(Collector):
    """Queue depth, read at scrape time with a bounded wait (see the module docstring)."""

    def __init__(self, db: QueueSource, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self._pending: concurrent.futures.Future[tuple[int, int]] | None = None
        self._lock = threading.Lock()
        self._last: tuple[int, int] = (0, 0)
        self._last_at: float | None = None
        self._failures = 0

    def _start(self) -> concurrent.futures.Future[tuple[int, int]]:
        """Run the query on a daemon thread of its own: one stuck on the database must not
        keep the process from exiting."""
        future: concurrent.futures.Future[tuple[int, int]] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(self._query())
            except Exception as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="mlspy-metrics-queue-depth", daemon=True).start()
        return future

    def _query(self) -> tuple[int, int]:
        with self.db.transaction() as tx:
            rows = tx.execute("SELECT COUNT(*), COUNT(DISTINCT client_id) FROM queue")
        return int(rows[0][0]), int(rows[0][1])

    def _read(self) -> bool:
        """Refresh the last value; False if the query failed or is still running."""
        with self._lock:
            # A query still stuck from an earlier scrape is waited for again rather than
            # queueing another one behind it.
            if self._pending is None:
                self._pending = self._start()
            future = self._pending
        try:
            value = future.result(timeout=self.timeout)
        except Exception:  # a timeout, or the database refused: report the last value
            with self._lock:
                self._failures += 1
                if future.done():
                    self._pending = None
            return False
        with self._lock:
            self._pending = None
            self._last, self._last_at = value, time.monotonic()
        return True

    def collect(self) -> Iterator[Metric]:
        fresh = self._read()
        with self._lock:
            (messages, clients), at, failures = self._last, self._last_at, self._failures
        yield GaugeMetricFamily(
            "mlspy_ds_queue_messages", "Deliveries waiting in client queues.", value=messages
        )
        yield GaugeMetricFamily(
            "mlspy_ds_queue_clients", "Clients with at least one delivery waiting.", value=clients
        )
        age = 0.0 if fresh else float("nan") if at is None else time.monotonic() - at
        yield GaugeMetricFamily(
            "mlspy_ds_queue_depth_age_seconds",
            "Age of the queue-depth values (0 when read by this scrape; NaN if never read).",
            value=age,
        )
        yield CounterMetricFamily(
            "mlspy_ds_queue_depth_failures",
            "Scrapes whose queue-depth query failed or timed out (the last value was reported).",
            value=failures,
        )


class Metrics:
    """The metrics of one Delivery Service app (see the module docstring)."""

    def __init__(
        self,
        db: QueueSource | None = None,
        *,
        token: str | None = None,
        public: bool = False,
        depth_timeout: float = 1.0,
    ) -> None:
        self.token = token or None
        self.public = public
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "mlspy_ds_http_requests", "HTTP requests answered.", labels, registry=r
        )
        self.latency = Histogram(
            "mlspy_ds_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            labels,
            buckets=_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "mlspy_ds_http_requests_in_flight", "HTTP requests being answered.", registry=r
        )
        self.submissions = Counter(
            "mlspy_ds_submissions",
            "Messages submitted to groups, by kind and outcome (conflict: 409, lost epoch).",
            ["kind", "outcome"],
            registry=r,
        )
        self.refused = Counter(
            "mlspy_ds_refused_requests",
            "Requests refused as rate-limited (429) or too large (413).",
            ["reason", "route"],
            registry=r,
        )
        self.database_errors = Counter(
            "mlspy_ds_database_errors",
            "Requests that ended in 503 (database unavailable) or 500 (unexpected error).",
            ["status"],
            registry=r,
        )
        self.sockets_open = Gauge(
            "mlspy_ds_websockets_open", "WebSocket connections open.", registry=r
        )
        self.socket_connections = Counter(
            "mlspy_ds_websocket_connections",
            "WebSocket handshakes: accepted, or refused before accepting.",
            ["outcome"],
            registry=r,
        )
        self.socket_closes = Counter(
            "mlspy_ds_websocket_server_closes",
            "WebSockets the server closed, by close code.",
            ["code"],
            registry=r,
        )
        self._depth: _QueueDepth | None = None
        if db is not None:
            self._depth = _QueueDepth(db, depth_timeout)
            r.register(self._depth)

    @classmethod
    def from_env(cls, db: QueueSource | None = None) -> Metrics:
        """Exposure from ``MLSPY_METRICS_TOKEN`` and ``MLSPY_METRICS_PUBLIC`` (``1``/``true``)."""
        public = os.environ.get("MLSPY_METRICS_PUBLIC", "").strip().lower() in {"1", "true", "yes"}
        return cls(db, token=os.environ.get("MLSPY_METRICS_TOKEN"), public=public)

    def count_submission(self, kinds: list[str], status: int) -> None:
        """A submission made on a WebSocket, counted as its HTTP twin would be."""
        self.submissions.labels(kinds[-1] if kinds else "unknown", _outcome(status)).inc()
        self.count_refusal(status, _SUBMIT_ROUTE)

    def count_refusal(self, status: int | None, route: str) -> None:
        """A 429 or 413 (refused, by route), or a 500/503 (a database error)."""
        if status == 429:
            self.refused.labels("rate_limited", route).inc()
        elif status == 413:
            self.refused.labels("too_large", route).inc()
        elif status in (500, 503):
            self.database_errors.labels(str(status)).inc()

    def install(self, app: Any) -> None:
        """Add the middleware to a Starlette ``app``. Call it after any other
        ``add_middleware``: the last one added is the outermost, and this one must see every
        answer (429s and 413s of other middleware included)."""
        app.add_middleware(MetricsMiddleware, metrics=self)
        app.state.metrics = self

    def wrap(self, app: ASGIApp) -> MetricsMiddleware:
        """The middleware around any ASGI ``app`` (for an app that is not a Starlette
        object, or to put the metrics outside other pure-ASGI wrappers)."""
        return MetricsMiddleware(app, self)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format (may wait up to ``depth_timeout``)."""
        return generate_latest(self.registry)

    # --- access to /metrics -------------------------------------------------------------

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """Why this request may not read the metrics (status, message), or None."""
        if self.public:
            return None
        if self.token is not None:
            sent = _bearer(scope)
            if sent is None or not hmac.compare_digest(sent.encode(), self.token.encode()):
                return 401, "metrics need the metrics bearer token"
            return None
        client = scope.get("client")
        if client and _is_loopback(str(client[0])):
            return None
        return 403, "metrics are served to loopback clients only"


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return str(credentials).strip()
    return None


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _route_of(scope: Scope) -> str:
    """The template of the route Starlette matched (it stores the route in the scope)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


def _status_class(status: int | None) -> str:
    return ABORTED if status is None else f"{status // 100}xx"


def _outcome(status: int | None) -> str:
    if status is None:
        return ABORTED
    if status < 400:
        return "accepted"
    return {409: "conflict", 413: "too_large", 429: "rate_limited"}.get(
        status, "error" if status >= 500 else "refused"
    )


class MetricsMiddleware:
    """Pure ASGI middleware: measures every request and WebSocket; answers ``/metrics``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == METRICS_PATH:
                await self._serve_metrics(scope, receive, send)
            else:
                await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:  # lifespan
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = self.metrics
        status: int | None = None
        slot: list[str] = []
        reset = _submission.set(slot)

        async def measured_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        start = time.perf_counter()
        m.in_flight.inc()
        try:
            await self.app(scope, receive, measured_send)
            if status is None:  # uvicorn answers 500 for an app that did not respond
                status = 500
        except Exception:
            if status is None:  # Starlette's error middleware (outside this one) answers 500
                status = 500
            raise
        finally:
            # Still None: cancelled (the client went away, a timeout, shutdown): no answer,
            # and not a server error.
            m.in_flight.dec()
            _submission.reset(reset)
            self._record(scope, status, time.perf_counter() - start, slot)

    def _record(self, scope: Scope, status: int | None, elapsed: float, kinds: list[str]) -> None:
        m = self.metrics
        route = _route_of(scope)
        method = scope.get("method", "GET")
        labels = (method if method in _METHODS else "other", route, _status_class(status))
        m.requests.labels(*labels).inc()
        m.latency.labels(*labels).observe(elapsed)
        m.count_refusal(status, route)
        if route == _SUBMIT_ROUTE and method == "POST":
            m.submissions.labels(kinds[-1] if kinds else "unknown", _outcome(status)).inc()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = self.metrics
        accepted = False

        async def measured_send(message: Message) -> None:
            nonlocal accepted
            kind = message["type"]
            if kind == "websocket.accept" and not accepted:
                accepted = True
                m.sockets_open.inc()
                m.socket_connections.labels("accepted").inc()
            elif kind == "websocket.close":
                code = int(message.get("code", 1000))
                if code == _WS_RATE_LIMITED:
                    m.refused.labels("rate_limited", _route_of(scope)).inc()
                elif code == _WS_TOO_BIG:
                    m.refused.labels("too_large", _route_of(scope)).inc()
                if accepted:
                    m.socket_closes.labels(str(code)).inc()
                else:
                    m.socket_connections.labels("refused").inc()
            await send(message)

        try:
            await self.app(scope, receive, measured_send)
        finally:
            if accepted:
                m.sockets_open.dec()

    async def _serve_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.metrics.refusal(scope)
        start = time.perf_counter()
        if scope.get("method") not in ("GET", "HEAD"):
            status, body, ctype = 405, b'{"error": "use GET"}', b"application/json"
            headers = [(b"allow", b"GET, HEAD")]
        elif refusal is not None:
            status, message = refusal
            body = b'{"error": "' + message.encode() + b'"}'
            ctype, headers = b"application/json", []
            if status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="metrics"'))
        else:
            # Rendering may wait for the queue-depth query: not on the event loop.
            status, body = 200, await run_in_threadpool(self.metrics.render)
            ctype, headers = CONTENT_TYPE_LATEST.encode(), []
        headers += [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        head = scope.get("method") == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})
        method = scope.get("method", "GET")
        labels = (method if method in _METHODS else "other", METRICS_PATH, _status_class(status))
        self.metrics.requests.labels(*labels).inc()
        self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
