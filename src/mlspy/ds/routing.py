"""The DS's HTTP endpoints declared once: the Starlette routes and the OpenAPI document are
both made from the same declarations, and the typed models of ``api.py`` both validate
requests and describe them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from mlspy.ds import api
from mlspy.ds.accounts import ClientInfo
from mlspy.ds.errors import BadRequest

T = TypeVar("T")

_PARAM = re.compile(r"{(\w+)}")


@dataclass
class Call(Generic[T]):
    """One request as a handler sees it: the decoded body (or query), the authenticated
    client (``None`` on anonymous endpoints), path parameters and the peer's address."""

    body: T
    client: ClientInfo | None
    params: Mapping[str, str]
    peer: str
    token: str | None = None

    @property
    def me(self) -> ClientInfo:
        assert self.client is not None  # only on endpoints declared with auth=True
        return self.client

    def hex(self, name: str) -> bytes:
        try:
            return bytes.fromhex(self.params[name])
        except ValueError:
            raise BadRequest(f"{name} must be hex") from None


Handler = Callable[[Call[Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """``handler`` gets a :class:`Call` whose ``body`` is a ``body`` (POST) or ``query``
    (GET) model instance and returns a ``response`` model instance."""

    method: str
    path: str
    summary: str
    handler: Handler
    response: type
    body: type | None = None
    query: type | None = None
    auth: bool = True
    # Unauthenticated: limited per address, before any other work.
    anonymous: bool = False
    errors: tuple[int, ...] = ()

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)


_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_encoder = msgspec.json.Encoder()


def decode_body(raw: bytes, model: type[T]) -> T:
    """A JSON body as ``model``; anything else is a 400 naming the field."""
    decoder = _decoders.get(model)
    if decoder is None:
        decoder = _decoders[model] = msgspec.json.Decoder(model)
    try:
        return decoder.decode(raw or b"{}")  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def decode_query(params: Mapping[str, str], model: type[T]) -> T:
    """Query parameters as ``model`` (numbers from their text); a 400 naming the parameter."""
    try:
        return msgspec.convert(dict(params), model, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid query: {exc}") from None


def encode(value: object) -> bytes:
    return _encoder.encode(value)


_STATUS_TEXT = {
    400: "malformed or invalid request",
    401: "missing, invalid or expired bearer token",
    403: "not allowed",
    404: "not found",
    408: "the request was not sent in time",
    409: "conflict (a commit lost its epoch: ``epoch`` is the group's epoch now)",
    413: "too large, or over a quota",
    429: "too many requests (see Retry-After)",
    503: "unavailable for now, e.g. the database is away (see Retry-After)",
}


def openapi(endpoints: Sequence[Endpoint], extra_paths: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints``; schemas generated from their models."""
    # The WebSocket's frames are described in ``extra_paths``; their models are here.
    models: list[type] = [api.ErrorBody, api.QueueItem, api.SocketSubmit]
    for e in endpoints:
        models += [t for t in (e.body, e.query, e.response) if t is not None]
    unique = list(dict.fromkeys(models))
    _, components = msgspec.json.schema_components(
        unique, ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": f"{e.method.lower()}_{e.path.strip('/').replace('/', '_')}".replace(
                "{", ""
            ).replace("}", ""),
            "responses": {
                "200": {"description": "ok", "content": _json(e.response)},
            },
        }
        statuses = set(e.errors) | {400, 429, 503}
        if e.auth:
            statuses.add(401)
            op["security"] = [{"bearer": []}]
        if e.body is not None:
            statuses.add(413)
        for status in sorted(statuses):
            op["responses"][str(status)] = {
                "description": _STATUS_TEXT.get(status, "error"),
                "content": _json(api.ErrorBody),
            }
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in e.params
        ]
        if e.query is not None:
            schema = components[e.query.__name__]
            parameters += [
                {"name": name, "in": "query", "required": False, "schema": prop}
                for name, prop in schema.get("properties", {}).items()
            ]
        if parameters:
            op["parameters"] = parameters
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": _json(e.body)}
        paths.setdefault(e.path, {})[e.method.lower()] = op
    for path, item in extra_paths.items():
        paths.setdefault(path, {}).update(item)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlspy Delivery Service", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _json(model: type) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
