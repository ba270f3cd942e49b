"""The Delivery Service's HTTP API and WebSocket push (Starlette, served by uvicorn).

JSON bodies carry MLS bytes base64-encoded. Every route but ``/healthz``, ``/openapi.json`` and
the authentication handshake needs ``Authorization: Bearer <token>``. Errors are JSON
``{"error": message, ...}`` with the status of the :class:`DSError` raised.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from mlspy.ds.metrics import Metrics
from mlspy.ds.service import BadRequest, ClientInfo, DeliveryService, DSError, TooLarge

log = logging.getLogger("mlspy.ds")

Handler = Callable[[Request], Awaitable[Response]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field} is not valid base64") from None


def _list(value: object, field: str) -> list[object]:
    if not isinstance(value, list):
        raise BadRequest(f"{field} must be a list")
    return value


def _text(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"{field} must be a string")


def _hex(value: str, field: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadRequest(f"{field} must be hex") from None


class _Push:
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


def create_app(
    service: DeliveryService, *, metrics: bool | Metrics = True, max_body: int | None = None
) -> Starlette:
    push = _Push()
    previous = service.on_queued

    def on_queued(ids: set[str]) -> None:
        previous(ids)
        push.wake(ids)

    service.on_queued = on_queued
    limit = max_body or service.max_message * 3

    async def body(request: Request) -> dict[str, Any]:
        # Refuse an announced oversized body before reading it, and stop reading as soon as
        # a body without a (truthful) length goes past the limit.
        announced = request.headers.get("content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            raise TooLarge(f"request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"request body exceeds {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            # The client went away mid-body (e.g. killed): nothing was done, nobody reads
            # the answer; not a server error.
            raise BadRequest("the client disconnected before sending the whole body") from None
        raw = b"".join(chunks)
        try:
            data = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        except RecursionError:
            raise BadRequest("malformed JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return data

    async def client_of(request: Request) -> ClientInfo:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
        return await run_in_threadpool(service.authenticate, token)

    def route(fn: Callable[[Request], Awaitable[Any]]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                result = await fn(request)
            except DSError as exc:
                log.info(
                    "%s %s -> %d %s", request.method, request.url.path, exc.status, exc.message
                )
                return JSONResponse({"error": exc.message, **exc.details}, status_code=exc.status)
            except (ValueError, TypeError, RecursionError) as exc:
                # e.g. a non-integer query parameter or a wrongly typed JSON field
                return JSONResponse({"error": f"bad request: {exc}"[:300]}, status_code=400)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return JSONResponse({"error": "internal error"}, status_code=500)
            return result if isinstance(result, Response) else JSONResponse(result)

        return handler

    # --- Authentication Service ---------------------------------------------------------

    async def challenge(request: Request) -> dict[str, Any]:
        service.rate_limit_anonymous(request.client.host if request.client else "?")
        return {"challenge": b64(await run_in_threadpool(service.challenge))}

    async def register(request: Request) -> dict[str, Any]:
        service.rate_limit_anonymous(request.client.host if request.client else "?")
        d = await body(request)
        recovery = d.get("recovery_hash")
        done = await run_in_threadpool(
            functools.partial(
                service.register,
                unb64(d.get("credential"), "credential"),
                unb64(d.get("signature_key"), "signature_key"),
                int(d.get("cipher_suite", 1)),
                unb64(d.get("challenge"), "challenge"),
                unb64(d.get("signature"), "signature"),
                invite_code=_text(d.get("invite_code"), "invite_code"),
                recovery=None if recovery is None else unb64(recovery, "recovery_hash"),
                pairing_code=_text(d.get("pairing_code"), "pairing_code"),
            )
        )
        return {
            "client_id": done.client.id,
            "created": done.created,
            "recovery_set": done.recovery_set,
        }

    async def recover(request: Request) -> dict[str, Any]:
        peer = request.client.host if request.client else "?"
        service.rate_limit_anonymous(peer)
        service.rate_limit_recovery(peer)
        d = await body(request)
        done = await run_in_threadpool(
            service.recover,
            unb64(d.get("identity"), "identity"),
            _text(d.get("recovery_secret"), "recovery_secret") or "",
            unb64(d.get("credential"), "credential"),
            unb64(d.get("signature_key"), "signature_key"),
            int(d.get("cipher_suite", 1)),
            unb64(d.get("challenge"), "challenge"),
            unb64(d.get("signature"), "signature"),
            unb64(d.get("recovery_hash"), "recovery_hash"),
        )
        return {"client_id": done.client.id, "groups": [g.hex() for g in done.groups]}

    async def pairing(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        code, expires = await run_in_threadpool(service.create_pairing, client.identity)
        return {"code": code, "expires": expires}

    async def devices(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        rows = await run_in_threadpool(service.list_devices, client.identity)
        return {
            "devices": [
                {"device": r["device"], "identity": b64(r["identity"]), "created": r["created"]}  # type: ignore[arg-type]
                for r in rows
            ]
        }

    async def rotate(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        d = await body(request)
        new = await run_in_threadpool(
            service.rotate_key,
            client,
            unb64(d.get("credential"), "credential"),
            unb64(d.get("signature_key"), "signature_key"),
            int(d.get("cipher_suite", 1)),
            unb64(d.get("challenge"), "challenge"),
            unb64(d.get("signature"), "signature"),
        )
        return {"client_id": new.id}

    async def revoke(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        device = request.path_params["device"]
        identity = await run_in_threadpool(service.revoke_device, client.identity, device)
        return {"identity": b64(identity)}

    async def create_invite(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        code, expires = await run_in_threadpool(service.create_invite, client)
        return {"code": code, "expires": expires}

    async def token(request: Request) -> dict[str, Any]:
        service.rate_limit_anonymous(request.client.host if request.client else "?")
        d = await body(request)
        tok = await run_in_threadpool(
            service.issue_token,
            unb64(d.get("signature_key"), "signature_key"),
            unb64(d.get("challenge"), "challenge"),
            unb64(d.get("signature"), "signature"),
        )
        return {"token": tok}

    async def identity(request: Request) -> dict[str, Any]:
        await client_of(request)
        ident = _hex(request.path_params["identity"], "identity")
        found = await run_in_threadpool(service.lookup_identity, ident)
        if found is None:
            return JSONResponse({"error": "unknown identity"}, status_code=404)  # type: ignore[return-value]
        return {"credential": b64(found[0]), "signature_key": b64(found[1])}

    # --- KeyPackages ------------------------------------------------------------------

    async def upload(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        d = await body(request)
        items = d.get("key_packages")
        if not isinstance(items, list):
            raise BadRequest("key_packages must be a list")
        n = await run_in_threadpool(
            service.upload_key_packages, client, [unb64(x, "key_packages[]") for x in items]
        )
        return {"stored": n}

    async def claim(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        d = await body(request)
        if d.get("user") is not None:  # every device of a user
            kps = await run_in_threadpool(
                service.claim_user_key_packages,
                client,
                unb64(d.get("user"), "user"),
                int(d.get("cipher_suite", 1)),
            )
            return {"key_packages": [b64(kp) for kp in kps]}
        kp = await run_in_threadpool(
            service.claim_key_package,
            client,
            unb64(d.get("identity"), "identity"),
            int(d.get("cipher_suite", 1)),
        )
        return {"key_package": b64(kp)}

    async def claims(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        rows = await run_in_threadpool(service.key_package_claims, client)
        return {
            "claims": [
                {
                    "claimer": b64(r["claimer"]),  # type: ignore[arg-type]
                    "ref": b64(r["ref"]),  # type: ignore[arg-type]
                    "last_resort": r["last_resort"],
                    "at": r["at"],
                }
                for r in rows
            ]
        }

    async def count(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        cs = int(request.query_params.get("cipher_suite", "1"))
        n, last_resort = await run_in_threadpool(service.count_key_packages, client, cs)
        return {"count": n, "last_resort": last_resort}

    # --- Groups -------------------------------------------------------------------------

    async def create_group(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        d = await body(request)
        tree = d.get("ratchet_tree")
        epoch = await run_in_threadpool(
            service.create_group,
            client,
            unb64(d.get("group_info"), "group_info"),
            unb64(tree, "ratchet_tree") if tree is not None else None,
            bool(d.get("encrypted_handshakes", False)),
            bool(d.get("external_joins", False)),
        )
        return {"epoch": epoch}

    async def submit(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        gid = _hex(request.path_params["group_id"], "group_id")
        d = await body(request)
        opt = {k: unb64(d[k], k) for k in ("welcome", "group_info") if d.get(k) is not None}
        seq = await run_in_threadpool(
            lambda: service.submit(
                client,
                gid,
                unb64(d.get("message"), "message"),
                welcome=opt.get("welcome"),
                group_info=opt.get("group_info"),
                adds=[unb64(x, "adds[]") for x in _list(d.get("adds", []), "adds")],
                removes=[unb64(x, "removes[]") for x in _list(d.get("removes", []), "removes")],
            )
        )
        return {"seq": seq}

    async def group_info(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        gid = _hex(request.path_params["group_id"], "group_id")
        return {"group_info": b64(await run_in_threadpool(service.group_info, client, gid))}

    # --- Queues -----------------------------------------------------------------------

    async def fetch(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        after = int(request.query_params.get("after", "0"))
        items = await run_in_threadpool(service.fetch, client, after)
        return {"messages": [_wire(m) for m in items]}

    async def leave(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        gid = _hex(request.path_params["group_id"], "group_id")
        await run_in_threadpool(service.leave_group, client, gid)
        return {"left": True}

    async def reject(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        gid = _hex(request.path_params["group_id"], "group_id")
        epoch = (await body(request)).get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**63:
            raise BadRequest("epoch must be an integer in [0, 2^63)")
        seq = await run_in_threadpool(service.reject_commit, client, gid, epoch)
        return {"undone": True, "seq": seq}

    async def ack(request: Request) -> dict[str, Any]:
        client = await client_of(request)
        d = await body(request)
        seqs = d.get("seqs")
        if not isinstance(seqs, list) or not all(isinstance(s, int) for s in seqs):
            raise BadRequest("seqs must be a list of integers")
        await run_in_threadpool(service.ack, client, seqs)
        push.wake({client.id})  # a socket holding back past its fetch limit can go on
        return {"acked": len(seqs)}

    async def healthz(request: Request) -> dict[str, Any]:
        return {"status": "ok"}

    async def openapi(request: Request) -> dict[str, Any]:
        return OPENAPI

    async def ws(socket: WebSocket) -> None:
        """Push: sends every queued message (JSON) in order; the client acks over HTTP or by
        sending ``{"ack": [seq, ...]}``."""
        push.loop = asyncio.get_running_loop()
        try:
            client = await run_in_threadpool(service.authenticate, socket.query_params.get("token"))
        except DSError as exc:
            # Accept first so the client sees why: close code 4401 (cf. HTTP 401).
            await socket.accept()
            await socket.close(code=4401, reason=exc.message)
            return
        await socket.accept()
        event = asyncio.Event()
        push.events.setdefault(client.id, set()).add(event)
        # Sent on this socket and not yet acknowledged. The queue is read whole each time,
        # not "after the last seq sent": on PostgreSQL, seqs of different groups can become
        # visible out of order.
        sent: set[int] = set()

        async def reader() -> None:
            while True:
                msg = await socket.receive_json()
                if isinstance(msg, dict) and isinstance(msg.get("ack"), list):
                    await run_in_threadpool(service.ack, client, [int(s) for s in msg["ack"]])
                    event.set()

        read_task = asyncio.create_task(reader())
        try:
            while True:
                event.clear()  # before reading: a wakeup during the fetch is not lost
                queued = await run_in_threadpool(service.fetch, client, 0)
                sent &= {m.seq for m in queued}  # forget what was acknowledged
                items = [m for m in queued if m.seq not in sent]
                for m in items:
                    await socket.send_json(_wire(m))
                    sent.add(m.seq)
                if read_task.done():
                    break
                if not items:
                    # Sleep until new messages are queued or the client goes away.
                    waiter = asyncio.ensure_future(event.wait())
                    await asyncio.wait(
                        {waiter, read_task}, timeout=15, return_when="FIRST_COMPLETED"
                    )
                    waiter.cancel()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            read_task.cancel()
            push.events.get(client.id, set()).discard(event)

    routes = [
        Route("/healthz", route(healthz)),
        Route("/openapi.json", route(openapi)),
        Route("/v1/auth/challenge", route(challenge), methods=["POST"]),
        Route("/v1/auth/register", route(register), methods=["POST"]),
        Route("/v1/auth/token", route(token), methods=["POST"]),
        Route("/v1/auth/recover", route(recover), methods=["POST"]),
        Route("/v1/invites", route(create_invite), methods=["POST"]),
        Route("/v1/devices", route(devices)),
        Route("/v1/devices/pairing", route(pairing), methods=["POST"]),
        Route("/v1/devices/rotate", route(rotate), methods=["POST"]),
        Route("/v1/devices/{device}/revoke", route(revoke), methods=["POST"]),
        Route("/v1/identities/{identity}", route(identity)),
        Route("/v1/key_packages", route(upload), methods=["POST"]),
        Route("/v1/key_packages/claim", route(claim), methods=["POST"]),
        Route("/v1/key_packages/claims", route(claims)),
        Route("/v1/key_packages/count", route(count)),
        Route("/v1/groups", route(create_group), methods=["POST"]),
        Route("/v1/groups/{group_id}/messages", route(submit), methods=["POST"]),
        Route("/v1/groups/{group_id}/group_info", route(group_info)),
        Route("/v1/queue", route(fetch)),
        Route("/v1/queue/ack", route(ack), methods=["POST"]),
        Route("/v1/groups/{group_id}/leave", route(leave), methods=["POST"]),
        Route("/v1/groups/{group_id}/reject", route(reject), methods=["POST"]),
        WebSocketRoute("/v1/ws", ws),
    ]

    listener = _CrossNodeListener(service, push)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        push.loop = asyncio.get_running_loop()
        listener.start()
        yield
        listener.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    # --- metrics (issue 18 item 5): keep this block last, after any other middleware, so
    # the metrics middleware is the outermost and sees every answer; it serves /metrics. ---
    # ``metrics``: True (exposure from MLSPY_METRICS_TOKEN / MLSPY_METRICS_PUBLIC), False
    # (no /metrics), or a Metrics object the caller configured.
    if metrics:
        (metrics if isinstance(metrics, Metrics) else Metrics.from_env(service.db)).install(app)
    # --- end metrics ---
    return app


class _CrossNodeListener:
    """With PostgreSQL, several DS nodes share the groups: each NOTIFYs the client ids whose
    queues grew, and every node LISTENs so it can wake its own WebSocket clients."""

    CHANNEL = "mlspy_queue"

    def __init__(self, service: DeliveryService, push: _Push) -> None:
        self.db = service.db
        self.push = push
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
                    self.push.wake(set(self.push.events))
                    pause = 0.1
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=50):
                            self.push.wake(set(note.payload.split(",")))
                finally:
                    conn.close()
            except Exception:  # the database went away: try again
                if self._stop.wait(pause):
                    return
                pause = min(pause * 2, 5.0)


def _wire(m: Any) -> dict[str, Any]:
    return {
        "seq": m.seq,
        "kind": m.kind,
        "group_id": m.group_id.hex(),
        "epoch": m.epoch,
        "data": b64(m.data),
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "mlspy Delivery Service", "version": "1"},
    "paths": {
        "/healthz": {"get": {"summary": "liveness"}},
        "/v1/auth/challenge": {"post": {"summary": "a fresh challenge to sign"}},
        "/v1/auth/register": {
            "post": {
                "summary": "bind a credential to a signature key (proof of possession; an "
                "invite_code where registration needs one; the hash of a recovery secret)"
            }
        },
        "/v1/auth/token": {"post": {"summary": "a bearer token for a signed challenge"}},
        "/v1/auth/recover": {
            "post": {
                "summary": "rebind a name to a new key with its recovery secret (proof of "
                "possession of the new key); the groups its delivery lists hold"
            }
        },
        "/v1/invites": {"post": {"summary": "a single-use invite code for a new user"}},
        "/v1/identities/{identity}": {"get": {"summary": "credential and key of an identity"}},
        "/v1/key_packages": {"post": {"summary": "upload KeyPackages"}},
        "/v1/key_packages/claim": {"post": {"summary": "claim one KeyPackage of an identity"}},
        "/v1/key_packages/claims": {"get": {"summary": "who claimed my KeyPackages"}},
        "/v1/key_packages/count": {"get": {"summary": "unclaimed KeyPackages left"}},
        "/v1/groups": {"post": {"summary": "register a group from its GroupInfo"}},
        "/v1/groups/{group_id}/messages": {
            "post": {"summary": "submit a handshake or application message (409: lost epoch)"}
        },
        "/v1/groups/{group_id}/group_info": {"get": {"summary": "latest GroupInfo"}},
        "/v1/groups/{group_id}/leave": {"post": {"summary": "leave a group's delivery list"}},
        "/v1/groups/{group_id}/reject": {
            "post": {"summary": "report that you rejected the commit that ended an epoch"}
        },
        "/v1/queue": {"get": {"summary": "queued messages after a sequence number"}},
        "/v1/queue/ack": {"post": {"summary": "acknowledge delivered messages"}},
        "/v1/ws": {"get": {"summary": "WebSocket push of queued messages"}},
    },
}
