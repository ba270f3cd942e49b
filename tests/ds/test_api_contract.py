"""The HTTP API is described by its own code: every route is in ``/openapi.json`` with its
request and response schemas, real answers of every route validate against that document,
and values out of range or of the wrong type are 400 naming the field — never a 500."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import jsonschema
import pytest
from ds_helpers import Cluster, Member
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService


def _document(url: str) -> dict[str, Any]:
    doc = httpx.get(f"{url}/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    return doc  # type: ignore[no-any-return]


def _validator(doc: dict[str, Any], ref: str) -> jsonschema.protocols.Validator:
    resource: Resource[Any] = Resource(contents=doc, specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:api", resource)
    return jsonschema.Draft202012Validator({"$ref": "urn:api" + ref}, registry=registry)


def _response_schema(doc: dict[str, Any], method: str, path: str, status: int) -> str:
    op = doc["paths"][path][method.lower()]
    content = op["responses"][str(status)]["content"]["application/json"]["schema"]
    return str(content["$ref"])


def test_every_route_is_described_with_its_schemas(tmp_path: Any) -> None:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"), registration="open")
    app = create_app(service)
    with InProcessServer(app) as server:
        doc = _document(server.url)
    http_routes = [r for r in app.routes if isinstance(r, Route) and r.path != "/openapi.json"]
    assert len(http_routes) >= 24
    for route in http_routes:
        for method in route.methods or ():
            if method == "HEAD":
                continue
            op = doc["paths"][route.path][method.lower()]
            assert op["summary"] and "200" in op["responses"], (method, route.path)
            ref = _response_schema(doc, method, route.path, 200)
            assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
            if method == "POST" and "requestBody" in op:
                body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                name = body.removeprefix("#/components/schemas/")
                assert doc["components"]["schemas"][name]["type"] == "object"
            for status, answer in op["responses"].items():
                if status != "200":
                    assert answer["content"]["application/json"]["schema"]["$ref"].endswith(
                        "/ErrorBody"
                    )
    assert "/v1/ws" in doc["paths"]
    # The schemas say what a client must send: bytes are base64, numbers bounded.
    submit = doc["components"]["schemas"]["Submit"]
    assert submit["required"] == ["message"]
    assert submit["properties"]["message"]["contentEncoding"] == "base64"
    ack = doc["components"]["schemas"]["Ack"]["properties"]["seqs"]["items"]
    assert ack["minimum"] == 0 and ack["maximum"] == 2**63 - 1


def test_the_answers_of_every_route_match_the_document(ds: Cluster) -> None:
    """A scenario calls every route; each answer (and each error) validates against the
    schema the document gives for its path, method and status."""
    url = ds.url
    doc = _document(url)
    seen: set[tuple[str, str]] = set()
    alice, bob = Member.new(url, "alice"), Member.new(url, "bob")
    alice.create()
    alice.add(bob)
    alice.send(b"hello")
    gid = alice.group.group_id.hex()  # type: ignore[union-attr]

    def call(method: str, template: str, expect: int = 200, who: Member = alice, **kw: Any) -> Any:
        path = template.format(gid=gid, identity=b"bob".hex(), device="phone")
        headers = {"authorization": f"Bearer {who.client.token}"}
        response = httpx.request(method, f"{url}{path}", headers=headers, timeout=30, **kw)
        assert response.status_code == expect, (method, path, response.text)
        schema = _response_schema(doc, method, template_of(template), expect)
        _validator(doc, schema).validate(response.json())
        seen.add((method, template_of(template)))
        return response.json()

    def template_of(t: str) -> str:
        return t.replace("{gid}", "{group_id}")

    call("GET", "/healthz")
    call("GET", "/readyz")
    challenge = call("POST", "/v1/auth/challenge")["challenge"]
    call("POST", "/v1/auth/register", 401, json=_signed(challenge, alice))
    call("POST", "/v1/auth/token", 401, json=_signed(challenge, alice, token=True))
    call("POST", "/v1/auth/recover", 400, json={})
    call("POST", "/v1/invites")
    call("GET", "/v1/devices")
    call("POST", "/v1/devices/pairing")
    call("POST", "/v1/devices/rotate", 400, json={})
    call("POST", "/v1/devices/{device}/revoke", 404)
    call("GET", "/v1/identities/{identity}")
    call("POST", "/v1/key_packages", json={"key_packages": []})
    call("POST", "/v1/key_packages/claim", json={"identity": _b64(b"bob")}, who=alice)
    call("GET", "/v1/key_packages/claims", who=bob)
    call("GET", "/v1/key_packages/count")
    call("POST", "/v1/groups", 400, json={"group_info": _b64(b"\x00")})
    call("POST", "/v1/groups/{gid}/messages", 400, json={"message": _b64(b"\x00")})
    call("GET", "/v1/groups/{gid}/group_info")
    queue = call("GET", "/v1/queue", who=bob)
    call("POST", "/v1/queue/ack", json={"seqs": [m["seq"] for m in queue["messages"]]}, who=bob)
    call("POST", "/v1/groups/{gid}/reject", 403, json={"epoch": 0}, who=bob)
    call("POST", "/v1/groups/{gid}/leave", who=bob)
    call("POST", "/v1/auth/logout", json={}, who=bob)
    described = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if path != "/v1/ws"
    }
    assert described == seen, described ^ seen


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _signed(challenge: str, who: Member, token: bool = False) -> dict[str, Any]:
    # A well-formed body whose signature does not verify (over a different challenge).
    key = who.identity.signature_key
    body = {"signature_key": _b64(key), "challenge": challenge, "signature": _b64(b"\x01" * 64)}
    if not token:
        body["credential"] = _b64(who.identity.credential.encode())
    return body


OUT_OF_RANGE: list[tuple[str, str, str, Any, str]] = [
    ("after_huge", "GET", "/v1/queue?after=1180591620717411303424", None, "$.after"),
    ("after_negative", "GET", "/v1/queue?after=-1", None, "$.after"),
    ("after_text", "GET", "/v1/queue?after=soon", None, "$.after"),
    (
        "suite_query_huge",
        "GET",
        "/v1/key_packages/count?cipher_suite=70000",
        None,
        "$.cipher_suite",
    ),
    ("seqs_huge", "POST", "/v1/queue/ack", {"seqs": [2**70]}, "$.seqs[0]"),
    ("seqs_bool", "POST", "/v1/queue/ack", {"seqs": [True]}, "$.seqs[0]"),
    ("seqs_float", "POST", "/v1/queue/ack", {"seqs": [1.5]}, "$.seqs[0]"),
    (
        "suite_huge",
        "POST",
        "/v1/key_packages/claim",
        {"identity": "AA==", "cipher_suite": 2**70},
        "$.cipher_suite",
    ),
    (
        "suite_bool",
        "POST",
        "/v1/key_packages/claim",
        {"identity": "AA==", "cipher_suite": True},
        "$.cipher_suite",
    ),
    ("epoch_huge", "POST", "/v1/groups/{gid}/reject", {"epoch": 2**63}, "$.epoch"),
    ("epoch_text", "POST", "/v1/groups/{gid}/reject", {"epoch": "1"}, "$.epoch"),
    (
        "flag_text",
        "POST",
        "/v1/groups",
        {"group_info": "AA==", "external_joins": "yes"},
        "$.external_joins",
    ),
    ("logout_text", "POST", "/v1/auth/logout", {"everywhere": 1}, "$.everywhere"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in OUT_OF_RANGE],
)
def test_out_of_range_and_wrongly_typed_values_are_400_naming_the_field(
    ds: Cluster, method: str, path: str, body: Any, field: str
) -> None:
    alice = Member.new(ds.url, "alice")
    alice.create()
    gid = alice.group.group_id.hex()  # type: ignore[union-attr]
    response = httpx.request(
        method,
        f"{ds.url}{path.format(gid=gid)}",
        headers={"authorization": f"Bearer {alice.client.token}"},
        json=body,
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]
    # and the server is fine afterwards
    assert httpx.get(f"{ds.url}/readyz").status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(ds: Cluster, scheme: str) -> None:
    """RFC 9110 §11.1: the authentication scheme is case-insensitive."""
    alice = Member.new(ds.url, "alice")
    response = httpx.get(
        f"{ds.url}/v1/devices", headers={"authorization": f"{scheme} {alice.client.token}"}
    )
    assert response.status_code == 200, response.text
