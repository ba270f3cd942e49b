"""The Delivery Service's HTTP API and WebSocket push (Starlette, served by uvicorn).

Every endpoint is declared once (``routing.Endpoint``) with the typed models of ``api.py``:
the same declaration validates requests (a wrongly typed or out-of-range value is a 400
naming the field) and generates ``/openapi.json``. JSON bodies carry MLS bytes base64-encoded.
Every route but ``/healthz``, ``/readyz``, ``/openapi.json`` and the authentication handshake
needs ``Authorization: Bearer <token>`` (scheme case-insensitive). Errors are JSON
``{"error": message, ...}`` with the status of the :class:`DSError` raised, and a
``Retry-After`` header on 429 and 503.

What one client may cost is bounded before any database work (``limits.Limits``): requests
per second per client, request-body bytes per second per client, unauthenticated requests
per address, WebSockets per client, and the time a request body may take to arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from mlspy.ds import api, tokens
from mlspy.ds.accounts import TOKEN_TTL, ClientInfo
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.errors import BadRequest, DSError, NotFound, RateLimited, TooLarge
from mlspy.ds.limits import WS_MAX_FRAME, Limits
from mlspy.ds.logs import install_redaction
from mlspy.ds.metrics import Metrics, submission_kinds
from mlspy.ds.push import CrossNodeListener, ExposeProtocol, Fanout, Push, Wakeups, bearer, item
from mlspy.ds.routing import Call, Endpoint, decode_body, decode_query, encode, openapi
from mlspy.ds.service import DeliveryService
from mlspy.ds.threads import to_thread
from mlspy.ds.throttle import Buckets, SocketCounts, retry_after
from mlspy.ds.wakebus import TOKENS, WAKE, WakeBus

log = logging.getLogger("mlspy.ds")

R = TypeVar("R")

# Unauthenticated bodies (credentials, signatures, codes) are small; X.509 chains the
# largest of them.
ANONYMOUS_MAX_BODY = 64 * 1024


class RequestTimeout(DSError):
    status = 408


def create_app(
    service: DeliveryService,
    *,
    limits: Limits | None = None,
    metrics: bool | Metrics = True,
    max_body: int | None = None,
    sweep_interval: float = 300.0,
    wake_dir: str | None = None,
) -> Starlette:
    install_redaction()
    # The per-client request rate is checked where the token is (``authenticate``); without
    # explicit limits, the service's own rate stands.
    if limits is None:
        limits = Limits(
            requests_per_second=service.rate_per_second, request_burst=int(service.rate_burst)
        )
    service.rate_per_second = limits.requests_per_second
    service.rate_burst = limits.request_burst
    wakeups = Wakeups()
    previous = service.on_queued
    # Worker processes of one server (``wakebus.py``): tell the others what we queued.
    bus = WakeBus(wake_dir) if wake_dir is not None else None
    if bus is not None:
        service.token_cache.on_invalidate = lambda: bus.publish(TOKENS)

    # One process alone on a SQLite file: every queue row it writes is handed to the
    # recipients' sockets as its COMMIT ends (``push.Fanout``); the sockets need no wake-up.
    fanout: Fanout | None = None
    if bus is None and isinstance(service.db, SQLiteDatabase):
        fanout = Fanout()
        earlier = service.db.on_publish  # another app on the same service (tests)

        def on_publish(
            batch: list[object], publish: Callable[[list[object]], None] = fanout.publish
        ) -> None:
            if earlier is not None:
                earlier(batch)
            publish(batch)

        service.db.on_publish = on_publish

    def on_queued(ids: set[str]) -> None:
        previous(ids)
        if fanout is None:
            wakeups.wake(ids)
        if bus is not None:
            bus.publish(WAKE, ids)

    service.on_queued = on_queued
    limit = max_body or service.max_message * 3
    byte_rate = Buckets(limits.bytes_per_second, max(limits.byte_burst, limit))
    anonymous = Buckets(limits.anonymous_per_second, limits.anonymous_burst)
    sockets = SocketCounts(limits.max_sockets_per_client)

    def sync(fn: Callable[..., R], *args: Any, **kwargs: Any) -> Awaitable[R]:
        return to_thread(fn, *args, **kwargs)

    async def read_body(request: Request, payer: str, most: int) -> bytes:
        # Refuse an announced oversized body before reading it, and stop reading as soon as
        # a body without a (truthful) length goes past the limit.
        announced = request.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > most:
            raise TooLarge(f"request body exceeds {most} bytes")
        if announced.isdigit():
            _charge(payer, int(announced))
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(limits.request_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > most:
                        raise TooLarge(f"request body exceeds {most} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {limits.request_timeout:g} s"
            ) from None
        except ClientDisconnect:
            # The client went away mid-body (e.g. killed): nothing was done, nobody reads
            # the answer; not a server error.
            raise BadRequest("the client disconnected before sending the whole body") from None
        if not announced.isdigit():
            _charge(payer, size)
        return b"".join(chunks)

    def _charge(payer: str, size: int) -> None:
        wait = byte_rate.take(payer, size)
        if wait:
            raise RateLimited(
                f"too many bytes sent: at most {limits.bytes_per_second} a second "
                "(send less, or retry later)",
                retry_after=retry_after(wait),
            )

    def handler(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            peer = request.client.host if request.client else "?"
            try:
                client: ClientInfo | None = None
                token: str | None = None
                if endpoint.anonymous:
                    wait = anonymous.take(peer)
                    if wait:
                        raise RateLimited(
                            "too many unauthenticated requests from your address: slow down",
                            retry_after=retry_after(wait),
                        )
                if endpoint.auth:
                    token = bearer(request.headers.get("authorization", ""))
                    # A token seen lately costs no database read and no thread hand-off.
                    client = service.authenticate_cached(token) or await sync(
                        service.authenticate, token
                    )
                value: Any = None
                if endpoint.body is not None:
                    payer = client.id if client else f"peer:{peer}"
                    most = limit if client else ANONYMOUS_MAX_BODY
                    value = decode_body(await read_body(request, payer, most), endpoint.body)
                elif endpoint.query is not None:
                    value = decode_query(request.query_params, endpoint.query)
                result = await endpoint.handler(
                    Call(value, client, request.path_params, peer, token)
                )
            except DSError as exc:
                return _error(request, exc)
            except Exception:
                log.exception("%s %s failed", request.method, endpoint.path)
                return JSONResponse({"error": "internal error"}, status_code=500)
            return Response(encode(result), media_type="application/json")

        return handle

    # --- Authentication Service ---------------------------------------------------------

    async def challenge(call: Call[None]) -> api.Challenge:
        return api.Challenge(challenge=await sync(service.challenge))

    async def register(call: Call[api.Register]) -> api.Registered:
        b = call.body
        done = await sync(
            service.register,
            b.credential,
            b.signature_key,
            b.cipher_suite,
            b.challenge,
            b.signature,
            invite_code=b.invite_code,
            recovery=b.recovery_hash,
            pairing_code=b.pairing_code,
        )
        return api.Registered(done.client.id, done.created, done.recovery_set)

    async def recover(call: Call[api.Recover]) -> api.Recovered:
        service.rate_limit_recovery(call.peer)
        b = call.body
        done = await sync(
            service.recover,
            b.identity,
            b.recovery_secret,
            b.credential,
            b.signature_key,
            b.cipher_suite,
            b.challenge,
            b.signature,
            b.recovery_hash,
        )
        return api.Recovered(done.client.id, [g.hex() for g in done.groups])

    async def token(call: Call[api.TokenRequest]) -> api.Token:
        b = call.body
        return api.Token(await sync(service.issue_token, b.signature_key, b.challenge, b.signature))

    async def logout(call: Call[api.Logout]) -> api.LoggedOut:
        only = None if call.body.everywhere else call.token
        ended = await sync(tokens.revoke, service.db, call.me.id, only)
        service.token_cache.invalidate()
        return api.LoggedOut(ended)

    async def create_invite(call: Call[None]) -> api.CodeIssued:
        code, expires = await sync(service.create_invite, call.me)
        return api.CodeIssued(code, expires)

    async def pairing(call: Call[None]) -> api.CodeIssued:
        code, expires = await sync(service.create_pairing, call.me.identity)
        return api.CodeIssued(code, expires)

    async def devices(call: Call[None]) -> api.Devices:
        rows = await sync(service.list_devices, call.me.identity)
        return api.Devices([msgspec.convert(r, api.Device) for r in rows])

    async def rotate(call: Call[api.Rotate]) -> api.Rotated:
        b = call.body
        new = await sync(
            service.rotate_key,
            call.me,
            b.credential,
            b.signature_key,
            b.cipher_suite,
            b.challenge,
            b.signature,
        )
        return api.Rotated(new.id)

    async def revoke(call: Call[None]) -> api.Revoked:
        device = call.params["device"]
        return api.Revoked(await sync(service.revoke_device, call.me.identity, device))

    async def identity(call: Call[None]) -> api.IdentityKey:
        found = await sync(service.lookup_identity, call.hex("identity"))
        if found is None:
            raise NotFound("unknown identity")
        return api.IdentityKey(found[0], found[1])

    # --- KeyPackages ------------------------------------------------------------------

    async def upload(call: Call[api.Upload]) -> api.Stored:
        return api.Stored(await sync(service.upload_key_packages, call.me, call.body.key_packages))

    async def claim(call: Call[api.Claim]) -> api.Claimed:
        b = call.body
        if b.user is not None:  # every device of a user
            kps = await sync(service.claim_user_key_packages, call.me, b.user, b.cipher_suite)
            return api.Claimed(key_packages=kps)
        if b.identity is None:
            raise BadRequest("name the identity (or the user) whose KeyPackage to claim")
        kp = await sync(service.claim_key_package, call.me, b.identity, b.cipher_suite)
        return api.Claimed(key_package=kp)

    async def claims(call: Call[None]) -> api.Claims:
        rows = await sync(service.key_package_claims, call.me)
        return api.Claims([msgspec.convert(r, api.ClaimRecord) for r in rows])

    async def count(call: Call[api.CountQuery]) -> api.Count:
        n, last_resort = await sync(service.count_key_packages, call.me, call.body.cipher_suite)
        return api.Count(n, last_resort)

    # --- Groups -------------------------------------------------------------------------

    async def create_group(call: Call[api.CreateGroup]) -> api.Created:
        b = call.body
        epoch = await sync(
            service.create_group,
            call.me,
            b.group_info,
            b.ratchet_tree,
            b.encrypted_handshakes,
            b.external_joins,
        )
        return api.Created(epoch)

    async def submit(call: Call[api.Submit]) -> api.Submitted:
        b = call.body
        seq = await sync(
            lambda: service.submit(
                call.me,
                call.hex("group_id"),
                b.message,
                welcome=b.welcome,
                group_info=b.group_info,
                adds=list(b.adds),
                removes=list(b.removes),
            )
        )
        return api.Submitted(seq)

    async def group_info(call: Call[None]) -> api.GroupInfo:
        return api.GroupInfo(await sync(service.group_info, call.me, call.hex("group_id")))

    async def leave(call: Call[None]) -> api.Left:
        await sync(service.leave_group, call.me, call.hex("group_id"))
        return api.Left(True)

    async def reject(call: Call[api.Reject]) -> api.Undone:
        seq = await sync(service.reject_commit, call.me, call.hex("group_id"), call.body.epoch)
        return api.Undone(True, seq)

    # --- Queues -----------------------------------------------------------------------

    async def fetch(call: Call[api.QueueQuery]) -> api.Queue:
        items = await sync(service.fetch, call.me, call.body.after)
        return api.Queue([item(m) for m in items])

    async def ack(call: Call[api.Ack]) -> api.Acked:
        await sync(service.ack, call.me, call.body.seqs)
        wakeups.wake({call.me.id})  # a socket holding back past its fetch limit can go on
        return api.Acked(len(call.body.seqs))

    # --- Operations -------------------------------------------------------------------

    async def healthz(call: Call[None]) -> api.Status:
        return api.Status("ok")

    async def readyz(call: Call[None]) -> api.Status:
        await sync(service.db.ping)  # Unavailable (503) while the database is away
        return api.Status("ready")

    E = Endpoint
    endpoints = [
        E("GET", "/healthz", "liveness: the process answers", healthz, api.Status, auth=False),
        E("GET", "/readyz", "readiness: the database answers", readyz, api.Status, auth=False),
        E(
            "POST",
            "/v1/auth/challenge",
            "a fresh challenge to sign (stateless: costs the server no write)",
            challenge,
            api.Challenge,
            auth=False,
            anonymous=True,
        ),
        E(
            "POST",
            "/v1/auth/register",
            "bind a credential to a signature key (proof of possession; an invite_code "
            "where registration needs one; the hash of a recovery secret; a pairing code "
            "for a further device of a user)",
            register,
            api.Registered,
            body=api.Register,
            auth=False,
            anonymous=True,
            errors=(401, 403, 409),
        ),
        E(
            "POST",
            "/v1/auth/token",
            f"a bearer token for a signed challenge (valid {TOKEN_TTL:g} s)",
            token,
            api.Token,
            body=api.TokenRequest,
            auth=False,
            anonymous=True,
            errors=(401,),
        ),
        E(
            "POST",
            "/v1/auth/recover",
            "rebind a name to a new key with its recovery secret (proof of possession of "
            "the new key); the groups its delivery lists hold",
            recover,
            api.Recovered,
            body=api.Recover,
            auth=False,
            anonymous=True,
            errors=(401, 403),
        ),
        E(
            "POST",
            "/v1/auth/logout",
            "end this bearer token (or every token of this device)",
            logout,
            api.LoggedOut,
            body=api.Logout,
        ),
        E(
            "POST",
            "/v1/invites",
            "a single-use invite code for a new user",
            create_invite,
            api.CodeIssued,
        ),
        E("GET", "/v1/devices", "the devices of my user", devices, api.Devices),
        E(
            "POST",
            "/v1/devices/pairing",
            "a single-use pairing code to enrol a further device of my user",
            pairing,
            api.CodeIssued,
        ),
        E(
            "POST",
            "/v1/devices/rotate",
            "move this device to a new signature key",
            rotate,
            api.Rotated,
            body=api.Rotate,
            errors=(403, 409),
        ),
        E(
            "POST",
            "/v1/devices/{device}/revoke",
            "revoke a device of my user",
            revoke,
            api.Revoked,
            errors=(404,),
        ),
        E(
            "GET",
            "/v1/identities/{identity}",
            "credential and key of an identity (hex)",
            identity,
            api.IdentityKey,
            errors=(404,),
        ),
        E(
            "POST",
            "/v1/key_packages",
            "upload KeyPackages",
            upload,
            api.Stored,
            body=api.Upload,
        ),
        E(
            "POST",
            "/v1/key_packages/claim",
            "claim one KeyPackage of an identity, or one of every device of a user",
            claim,
            api.Claimed,
            body=api.Claim,
            errors=(404,),
        ),
        E(
            "GET",
            "/v1/key_packages/claims",
            "who claimed my KeyPackages",
            claims,
            api.Claims,
        ),
        E(
            "GET",
            "/v1/key_packages/count",
            "unclaimed KeyPackages left",
            count,
            api.Count,
            query=api.CountQuery,
        ),
        E(
            "POST",
            "/v1/groups",
            "register a group from its GroupInfo",
            create_group,
            api.Created,
            body=api.CreateGroup,
            errors=(403, 409),
        ),
        E(
            "POST",
            "/v1/groups/{group_id}/messages",
            "submit a handshake or application message (409: lost epoch)",
            submit,
            api.Submitted,
            body=api.Submit,
            errors=(403, 404, 409),
        ),
        E(
            "GET",
            "/v1/groups/{group_id}/group_info",
            "latest GroupInfo",
            group_info,
            api.GroupInfo,
            errors=(403, 404),
        ),
        E(
            "POST",
            "/v1/groups/{group_id}/leave",
            "leave a group's delivery list",
            leave,
            api.Left,
            errors=(404,),
        ),
        E(
            "POST",
            "/v1/groups/{group_id}/reject",
            "report that you rejected the commit that ended an epoch",
            reject,
            api.Undone,
            body=api.Reject,
            errors=(403, 404, 409),
        ),
        E(
            "GET",
            "/v1/queue",
            "queued messages after a sequence number",
            fetch,
            api.Queue,
            query=api.QueueQuery,
        ),
        E(
            "POST",
            "/v1/queue/ack",
            "acknowledge delivered messages",
            ack,
            api.Acked,
            body=api.Ack,
        ),
    ]
    websocket_doc = {
        "/v1/ws": {
            "get": {
                "summary": "WebSocket push of queued messages: authenticate with an "
                'Authorization header or a first message {"token": ...}; items are '
                'QueueItem; acknowledge with {"ack": [seq, ...]}; submit with '
                '{"submit": SocketSubmit}, answered {"answer": id, "status": ..., "seq" or '
                '"error": ...}; "ready" gives max_frame',
                "responses": {"101": {"description": "switching protocols"}},
            }
        }
    }
    document = encode(openapi(endpoints, websocket_doc))

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    # ``metrics``: True (exposure from MLSPY_METRICS_TOKEN / MLSPY_METRICS_PUBLIC), False
    # (no /metrics), or a Metrics object the caller configured.
    meter: Metrics | None = None
    if metrics:
        meter = metrics if isinstance(metrics, Metrics) else Metrics.from_env(service.db)

    def admit_on_socket(client_id: str, size: int) -> None:
        """A ``{"submit": …}`` frame as it arrives, before it is parsed further: one request
        of the client's rate and its bytes of the byte rate (RateLimited when spent)."""
        service.charge_request(client_id)
        _charge(client_id, size)

    async def submit_on_socket(token: str, body: api.SocketSubmit, size: int) -> int:
        """A ``{"submit": …}`` frame: what ``POST /v1/groups/{group_id}/messages`` does,
        with the same token check (again for each: a revoked token is refused at once) and
        metrics; its rates were charged on arrival (``admit_on_socket``)."""
        with submission_kinds() as kinds:
            try:
                me = service.authenticate_cached(token, charge=False)
                if me is None:
                    fresh: ClientInfo = await sync(service.authenticate, token, charge=False)
                    me = fresh
                call = Call[api.Submit](body, me, {"group_id": body.group_id}, "websocket")
                seq = (await submit(call)).seq
            except DSError as exc:
                log.info("WebSocket submit -> %d %s", exc.status, exc.message)
                if meter is not None:
                    meter.count_submission(kinds, exc.status)
                raise
        if meter is not None:
            meter.count_submission(kinds, 200)
        return seq

    routes: list[Any] = [Route(e.path, handler(e), methods=[e.method]) for e in endpoints]
    routes.append(Route("/openapi.json", openapi_json))
    routes.append(
        WebSocketRoute(
            "/v1/ws",
            Push(
                service,
                wakeups,
                sockets,
                limits.token_recheck,
                submit=submit_on_socket,
                admit=admit_on_socket,
                max_frame=WS_MAX_FRAME,
                fanout=fanout,
            ).endpoint,
        )
    )

    listener = CrossNodeListener(service, wakeups)
    sweeper = _Sweeper(service, sweep_interval)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        wakeups.loop = asyncio.get_running_loop()
        if fanout is not None:
            fanout.loop = wakeups.loop
        listener.start()
        sweeper.start()
        if bus is not None:
            wakeups.loop = asyncio.get_running_loop()
            bus.start(wakeups.loop, wakeups.wake, service.token_cache.forget)
        yield
        if bus is not None:
            bus.close()
        sweeper.stop()
        listener.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.endpoints = endpoints
    app.state.sockets = sockets
    # Last, so the metrics middleware is the outermost and sees every answer; it serves
    # /metrics.
    if meter is not None:
        meter.install(app)
    # Outside even the metrics: it only lends the fan-out uvicorn's protocol of a socket.
    app.add_middleware(ExposeProtocol)
    return app


def _error(request: Request, exc: DSError) -> Response:
    log.info("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.message)
    headers = {}
    wait = exc.details.get("retry_after")
    if isinstance(wait, int | float):
        headers["Retry-After"] = str(retry_after(float(wait)))
    return JSONResponse(
        {"error": exc.message, **exc.details}, status_code=exc.status, headers=headers
    )


class _Sweeper:
    """Runs the service's retention sweep every ``interval`` seconds, in its own thread (a
    sweep works in small batches, so requests interleave with it)."""

    def __init__(self, service: DeliveryService, interval: float) -> None:
        self.sweep = service.sweep
        self.interval = interval
        self._stop = threading.Event()

    def start(self) -> None:
        if self.interval > 0:
            threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:
                log.exception("retention sweep failed (it runs again in %g s)", self.interval)
