"""The Delivery Service under attack: forged and unauthenticated requests, clients poking at
other clients' queues and Welcomes, malformed and oversized input, floods, slow clients, and
outsiders submitting commits the members cannot accept.

Most tests start from :func:`pair`: alice and bob in a group, with a message from alice that
the DS accepted and bob has not fetched yet. After the attack, :func:`nothing_lost` checks that
bob still receives it and that the group still works both ways — an attack must not lose or
reorder what the DS already accepted. Raw requests go through httpx directly (a fresh
connection each: the server may close one after an error).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from ds_helpers import Cluster, Member, open_push, status_of

from mlspy.crypto import suite
from mlspy.ds.app import create_app
from mlspy.ds.client import DSConflict, DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.limits import Limits
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import CHALLENGE_LABEL, CHALLENGE_TTL, MAX_MESSAGE, TOKEN_TTL, DeliveryService
from mlspy.errors import ConfirmationTagError, MLSError, SecretTreeError
from mlspy.group import Group, GroupConfig, SigningIdentity, join_external
from mlspy.messages import (
    Add,
    EncryptedGroupSecrets,
    HPKECiphertext,
    MLSMessage,
    Proposal,
    Welcome,
    WireFormat,
)

# --- Helpers ------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw(
    url: str, method: str, path: str, *, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    """One request on a fresh connection, ``token`` as the bearer token if given."""
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.request(method, path, headers=headers, **kwargs)


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), response.text
    return str(body["error"])


@dataclass
class Pair:
    url: str
    alice: Member
    bob: Member
    before: bytes = b"accepted before the attack"

    @property
    def group_id(self) -> bytes:
        assert self.alice.group is not None
        return self.alice.group.group_id


def pair(url: str, *, external_joins: bool = False) -> Pair:
    """Alice and bob in a group; alice's ``before`` message is accepted, not yet fetched."""
    alice, bob = Member.new(url, "alice"), Member.new(url, "bob")
    alice.create(external_joins=external_joins)
    alice.add(bob)
    assert bob.sync() == ["joined"]
    p = Pair(url, alice, bob)
    alice.send(p.before)
    return p


def nothing_lost(p: Pair) -> None:
    """Bob gets the message accepted before the attack, and both still talk."""
    p.bob.sync()
    assert p.bob.received[:1] == [p.before], p.bob.received
    p.bob.send(b"still here")
    p.alice.sync()
    assert p.alice.received[-1] == b"still here"
    assert p.alice.group is not None and p.bob.group is not None
    assert p.alice.group.epoch_authenticator == p.bob.group.epoch_authenticator


@pytest.fixture
def quiet_server_errors(ds: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Silence uvicorn's traceback of an exception in the app (a test that provokes one sees
    the 500). Formatting it in the server thread while pytest formats a failure in the main
    thread trips a CPython 3.11 bug ("AST constructor recursion depth mismatch"). After ``ds``:
    starting uvicorn reconfigures its loggers."""
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "disabled", True)


class FakeClock:
    """A DS clock the test moves by hand (it starts at the real time: KeyPackage lifetimes)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextmanager
def local_ds(
    tmp_path: Path, limits: Limits | None = None, **options: Any
) -> Iterator[tuple[str, DeliveryService]]:
    """A DS of our own (SQLite) with ``options`` (clock, rate limits, sizes)."""
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"), **options)
    with InProcessServer(create_app(service, limits=limits)) as server:
        yield server.url, service


def signed_challenge(url: str, signer: SigningIdentity) -> tuple[bytes, bytes]:
    challenge = base64.b64decode(raw(url, "POST", "/v1/auth/challenge").json()["challenge"])
    cs = suite(signer.cipher_suite)
    return challenge, cs.sign_with_label(signer.signature_private_key, CHALLENGE_LABEL, challenge)


def token_request(
    url: str, key_of: SigningIdentity, challenge: bytes, signature: bytes
) -> httpx.Response:
    return raw(
        url,
        "POST",
        "/v1/auth/token",
        json={
            "signature_key": b64(key_of.signature_key),
            "challenge": b64(challenge),
            "signature": b64(signature),
        },
    )


def register_request(
    url: str, identity: SigningIdentity, challenge: bytes, signature: bytes
) -> httpx.Response:
    return raw(
        url,
        "POST",
        "/v1/auth/register",
        json={
            "credential": b64(identity.credential.encode()),
            "signature_key": b64(identity.signature_key),
            "cipher_suite": identity.cipher_suite,
            "challenge": b64(challenge),
            "signature": b64(signature),
        },
    )


# --- Unauthenticated and forged requests --------------------------------------------------------

PROTECTED = [
    ("GET", "/v1/queue", None),
    ("POST", "/v1/queue/ack", {"seqs": [1]}),
    ("POST", "/v1/key_packages", {"key_packages": []}),
    ("POST", "/v1/key_packages/claim", {"identity": b64(b"bob")}),
    ("GET", "/v1/key_packages/count", None),
    ("POST", "/v1/groups", {"group_info": b64(b"x")}),
    ("POST", "/v1/groups/{gid}/messages", {"message": b64(b"x")}),
    ("GET", "/v1/groups/{gid}/group_info", None),
    ("GET", "/v1/identities/626f62", None),
]
BAD_AUTHORIZATION = {
    "missing": None,
    "bearer_without_token": "Bearer",
    "basic_scheme": "Basic YWxpY2U6c2VjcmV0",
    "unknown_token": "Bearer " + "A" * 43,
    "token_without_scheme": "{token}",
    "token_with_junk": "Bearer {token}x",
}


@pytest.mark.parametrize("auth", list(BAD_AUTHORIZATION))
def test_unauthenticated_requests_are_refused(ds: Cluster, auth: str) -> None:
    """Every route but the health check, the API description and the authentication
    handshake wants a valid bearer token: anything else is 401 and changes nothing."""
    p = pair(ds.url)
    token = p.alice.client.token
    assert token is not None
    template = BAD_AUTHORIZATION[auth]
    headers = {} if template is None else {"authorization": template.format(token=token)}
    for method, path, body in PROTECTED:
        response = raw(p.url, method, path.format(gid=p.group_id.hex()), headers=headers, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert "token" in error_of(response)
    nothing_lost(p)


def test_expired_token_and_expired_challenge(tmp_path: Path) -> None:
    """Tokens and challenges expire on the DS's clock: 401 afterwards, and a fresh login
    works (``DSClient`` logs in again by itself on a 401)."""
    clock = FakeClock()
    with local_ds(tmp_path, clock=clock) as (url, _):
        p = pair(url)
        clock.now += TOKEN_TTL + 1
        for client in (p.alice.client, p.bob.client):
            auth = {"authorization": f"Bearer {client.token}"}
            response = httpx.get(f"{url}/v1/queue", headers=auth)
            assert response.status_code == 401 and "expired" in response.json()["error"]
        old = p.alice.client.token
        p.alice.client.fetch(p.alice.last_seq)  # renewed transparently
        assert p.alice.client.token != old
        challenge, signature = signed_challenge(url, p.bob.identity)
        clock.now += CHALLENGE_TTL + 1
        response = token_request(url, p.bob.identity, challenge, signature)
        assert response.status_code == 401 and "expired challenge" in error_of(response)
        p.alice.client.login()
        p.bob.client.login()
        nothing_lost(p)


def test_forged_and_replayed_challenges(ds: Cluster) -> None:
    """A token for alice's key needs alice's signature over a fresh challenge of this DS:
    eve's signature, a challenge the DS never issued, and a captured (already used) login are
    all 401; so is registering a key whose owner did not sign."""
    p = pair(ds.url)
    eve = SigningIdentity.generate(b"eve")
    alice = p.alice.identity
    # A challenge signed by another key.
    challenge, eve_signature = signed_challenge(p.url, eve)
    response = token_request(p.url, alice, challenge, eve_signature)
    assert response.status_code == 401 and "does not verify" in error_of(response)
    # The failed attempt did not burn the challenge: alice can still use it.
    ok = suite(1).sign_with_label(alice.signature_private_key, CHALLENGE_LABEL, challenge)
    assert token_request(p.url, alice, challenge, ok).status_code == 200
    # A replay of that (captured) login.
    response = token_request(p.url, alice, challenge, ok)
    assert response.status_code == 401 and "unknown or expired challenge" in error_of(response)
    # A challenge the DS never issued, correctly signed.
    made_up = b"\x42" * 32
    sig = suite(1).sign_with_label(alice.signature_private_key, CHALLENGE_LABEL, made_up)
    response = token_request(p.url, alice, made_up, sig)
    assert response.status_code == 401 and "unknown or expired challenge" in error_of(response)
    # A signature over the right bytes under another label (e.g. a KeyPackage signature).
    challenge, _ = signed_challenge(p.url, alice)
    other = suite(1).sign_with_label(alice.signature_private_key, "KeyPackageTBS", challenge)
    assert token_request(p.url, alice, challenge, other).status_code == 401
    # Registering: a key eve does not hold, and a replay of eve's own registration.
    mallory = SigningIdentity.generate(b"mallory")
    challenge, eve_signature = signed_challenge(p.url, eve)
    response = register_request(p.url, mallory, challenge, eve_signature)
    assert response.status_code == 401 and "does not verify" in error_of(response)
    challenge, eve_signature = signed_challenge(p.url, eve)
    assert register_request(p.url, eve, challenge, eve_signature).status_code == 200
    response = register_request(p.url, eve, challenge, eve_signature)
    assert response.status_code == 401 and "unknown or expired challenge" in error_of(response)
    # An unregistered key cannot get a token at all.
    challenge, sig = signed_challenge(p.url, mallory)
    response = token_request(p.url, mallory, challenge, sig)
    assert response.status_code == 401 and "register first" in error_of(response)
    nothing_lost(p)


# --- Other clients' queues and Welcomes ---------------------------------------------------------


def test_a_client_cannot_read_or_ack_another_clients_queue(ds: Cluster) -> None:
    """The queue is the token's owner's: eve (registered, in no group) and carol (in another
    group) see nothing of alice and bob's group, and acknowledging bob's sequence numbers —
    over HTTP or the WebSocket — does not remove them from bob's queue. Bob's own ack does."""
    p = pair(ds.url)
    eve = Member.new(ds.url, "eve")
    carol = Member.new(ds.url, "carol")
    carol.create()
    pending = p.bob.client.fetch()
    seqs = [m["seq"] for m in pending]
    assert seqs and all(m["group_id"] == p.group_id for m in pending)
    for intruder in (eve, carol):
        assert intruder.client.fetch() == []
        assert status_of(lambda i=intruder: i.client.fetch(after=-1)) == 400  # type: ignore[misc]
        intruder.client.ack(seqs)
        intruder.client.ack(list(range(max(seqs) + 5)))

    async def ack_over_websocket() -> None:
        async with await open_push(ds.ws_url, eve.client.token) as sock:
            await sock.send(json.dumps({"ack": seqs}))
            await asyncio.sleep(0.3)

    asyncio.run(ack_over_websocket())
    assert [m["seq"] for m in p.bob.client.fetch()] == seqs
    nothing_lost(p)
    assert p.bob.client.fetch() == []  # bob's own ack (in nothing_lost) did remove them


def test_a_welcome_reaches_only_the_owner_of_its_key_package(ds: Cluster) -> None:
    """Alice adds bob: the Welcome goes to bob alone. Carol (KeyPackages on the DS, not
    added) and eve never see it, and eve cannot make bob's KeyPackage hers by uploading it
    (it is signed with bob's key: 403)."""
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    carol, eve = Member.new(ds.url, "carol"), Member.new(ds.url, "eve")
    alice.create()
    assert alice.group is not None
    # Eve claims one of bob's KeyPackages from the directory (anyone may) and tries to own it.
    stolen = eve.client.claim_key_package(b"bob")
    with pytest.raises(DSRequestError) as info:
        eve.client._call("POST", "/v1/key_packages", json={"key_packages": [b64(stolen)]})
    assert info.value.status == 403 and "registered key" in info.value.body["error"]
    alice.add(bob)
    for outsider in (carol, eve):
        assert outsider.client.fetch() == []
    assert bob.sync() == ["joined"]
    alice.send(b"only for members")
    for outsider in (carol, eve):
        assert outsider.client.fetch() == []
    bob.sync()
    assert bob.received == [b"only for members"]


def test_a_welcome_does_not_make_an_outsider_a_recipient(ds: Cluster) -> None:
    """A member attaches a Welcome naming eve's KeyPackage to a commit that adds nobody. The
    DS may queue that (useless) Welcome to eve, but eve is not in the group: she must get none
    of its later messages and must not be allowed to submit to it."""
    p = pair(ds.url)
    eve = Member.new(ds.url, "eve")
    alice = p.alice.group
    assert alice is not None
    out = alice.commit()
    fake = Welcome(
        1, (EncryptedGroupSecrets(eve.bundles[0].ref(), HPKECiphertext(b"k", b"c")),), b"g"
    )
    p.alice.client.submit(
        p.group_id,
        out.commit,
        welcome=MLSMessage.wrap(fake).encode(),
        group_info=out.group_info,
    )
    alice.merge_pending_commit()
    nothing_lost(p)
    p.alice.send(b"members only")
    assert [m["kind"] for m in eve.client.fetch()] in ([], ["welcome"])
    with pytest.raises(DSRequestError) as info:
        eve.client.submit(p.group_id, alice.encrypt_application(b"x"))
    assert info.value.status == 403


# --- Malformed and oversized input --------------------------------------------------------------


def _group_info(p: Pair) -> bytes:
    assert p.alice.group is not None
    return p.alice.group.group_info()


def _valid_commit(p: Pair) -> bytes:
    assert p.alice.group is not None
    out = p.alice.group.commit()
    p.alice.group.clear_pending_commit()
    return out.commit


# (name, method, path, body (a function of the pair), expected substring of the error)
MALFORMED: list[tuple[str, str, str, Any, str]] = [
    ("json_syntax", "POST", "/v1/key_packages", b"{not json", "malformed JSON"),
    ("json_utf16_garbage", "POST", "/v1/key_packages", b"\xff\xfe{}", "malformed JSON"),
    ("json_array", "POST", "/v1/key_packages", b"[1, 2]", "Expected `object`, got `array`"),
    ("json_string", "POST", "/v1/queue/ack", b'"seqs"', "Expected `object`, got `str`"),
    (
        "list_expected",
        "POST",
        "/v1/key_packages",
        {"key_packages": "AAAA"},
        "got `str` - at `$.key_packages`",
    ),
    (
        "seqs_not_ints",
        "POST",
        "/v1/queue/ack",
        {"seqs": ["1"]},
        "Expected `int`, got `str` - at `$.seqs[0]`",
    ),
    ("b64_missing", "POST", "/v1/groups/{gid}/messages", {}, "missing required field `message`"),
    (
        "b64_number",
        "POST",
        "/v1/groups/{gid}/messages",
        {"message": 7},
        "got `int` - at `$.message`",
    ),
    (
        "b64_alphabet",
        "POST",
        "/v1/groups/{gid}/messages",
        {"message": "@@@@"},
        "Invalid base64 encoded string - at `$.message`",
    ),
    (
        "b64_padding",
        "POST",
        "/v1/groups/{gid}/messages",
        {"message": "QUJ"},
        "Invalid base64 encoded string - at `$.message`",
    ),
    (
        "b64_url_safe",
        "POST",
        "/v1/groups/{gid}/messages",
        {"message": "-_-_"},
        "Invalid base64 encoded string - at `$.message`",
    ),
    (
        "b64_in_list",
        "POST",
        "/v1/key_packages",
        {"key_packages": ["AAAA", "not base64!"]},
        "Invalid base64 encoded string - at `$.key_packages[1]`",
    ),
    (
        "welcome_b64",
        "POST",
        "/v1/groups/{gid}/messages",
        lambda p: {"message": b64(_valid_commit(p)), "welcome": "%%%"},
        "Invalid base64 encoded string - at `$.welcome`",
    ),
    ("hex_group_id", "POST", "/v1/groups/nothex/messages", {"message": "AAAA"}, "must be hex"),
    ("hex_identity", "GET", "/v1/identities/xyz", None, "identity must be hex"),
    (
        "mls_garbage",
        "POST",
        "/v1/groups/{gid}/messages",
        {"message": b64(b"\x00\x01\x00\x02garbage")},
        "malformed MLS message",
    ),
    (
        "mls_truncated",
        "POST",
        "/v1/groups/{gid}/messages",
        lambda p: {"message": b64(_valid_commit(p)[:-3])},
        "malformed MLS message",
    ),
    (
        "mls_trailing_bytes",
        "POST",
        "/v1/groups/{gid}/messages",
        lambda p: {"message": b64(_valid_commit(p) + b"\x00")},
        "malformed MLS message",
    ),
    (
        "mls_wrong_kind",
        "POST",
        "/v1/groups/{gid}/messages",
        lambda p: {"message": b64(_group_info(p))},
        "expected a PublicMessage or PrivateMessage",
    ),
    (
        "mls_key_package_garbage",
        "POST",
        "/v1/key_packages",
        {"key_packages": [b64(b"\x00\x01\x00\x05")]},
        "malformed MLS message",
    ),
    (
        "mls_key_package_wrong_kind",
        "POST",
        "/v1/key_packages",
        lambda p: {"key_packages": [b64(_group_info(p))]},
        "expected MLSMessage(KeyPackage)",
    ),
    (
        "mls_group_info_garbage",
        "POST",
        "/v1/groups",
        {"group_info": b64(b"\x00\x01\x00\x04junk")},
        "invalid GroupInfo",
    ),
    (
        "mls_welcome_garbage",
        "POST",
        "/v1/groups/{gid}/messages",
        lambda p: {"message": b64(_valid_commit(p)), "welcome": b64(b"\x00\x01\x00\x03")},
        "malformed MLS message",
    ),
    (
        "mls_welcome_wrong_kind",
        "POST",
        "/v1/groups/{gid}/messages",
        lambda p: {"message": b64(_valid_commit(p)), "welcome": b64(_group_info(p))},
        "expected MLSMessage(Welcome)",
    ),
    (
        "message_for_another_group",
        "POST",
        "/v1/groups/00ff/messages",
        lambda p: {"message": b64(_valid_commit(p))},
        "for another group",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_requests_are_400_with_a_clear_message(
    ds: Cluster, method: str, path: str, body: Any, expected: str
) -> None:
    """Malformed JSON, base64, hex and MLS bytes are 400 with an ``error`` that says what was
    wrong. A commit whose attached Welcome is malformed is refused as a whole (the group does
    not advance)."""
    p = pair(ds.url)
    content = body(p) if callable(body) else body
    kwargs = {"content": content} if isinstance(content, bytes) else {"json": content}
    response = raw(
        p.url, method, path.format(gid=p.group_id.hex()), token=p.alice.client.token, **kwargs
    )
    assert response.status_code == 400, response.text
    assert expected in error_of(response)
    nothing_lost(p)  # includes a commit-free round trip: the group did not advance
    assert p.alice.group is not None and p.alice.group.epoch == 1


NOT_AN_INT = "BUG: a non-integer where the DS expects an integer escapes as a 500, not 400: "
# (name, method, path, body, the reason it is a 500 today)
WRONGLY_TYPED: list[tuple[str, str, str, Any, str]] = [
    (
        "after_not_int",
        "GET",
        "/v1/queue?after=abc",
        None,
        NOT_AN_INT + 'app.py:217 int(request.query_params.get("after"))',
    ),
    (
        "count_cipher_suite_not_int",
        "GET",
        "/v1/key_packages/count?cipher_suite=x",
        None,
        NOT_AN_INT + 'app.py:171 int(request.query_params.get("cipher_suite"))',
    ),
    (
        "claim_cipher_suite_not_int",
        "POST",
        "/v1/key_packages/claim",
        {"identity": b64(b"bob"), "cipher_suite": "one"},
        NOT_AN_INT + 'app.py:165 int(d.get("cipher_suite", 1)) (also register, app.py:122)',
    ),
    (
        "claim_cipher_suite_null",
        "POST",
        "/v1/key_packages/claim",
        {"identity": b64(b"bob"), "cipher_suite": None},
        NOT_AN_INT + "app.py:165 int(None) is a TypeError",
    ),
    (
        "adds_not_a_list",
        "POST",
        "/v1/groups/{gid}/messages",
        {"message": "AAAA", "adds": 5},
        'BUG: "adds": 5 escapes as a 500 (TypeError), not 400: app.py:202 iterates '
        'd.get("adds", []) unchecked (same for "removes", app.py:203)',
    ),
    (
        "json_invalid_utf8",
        "POST",
        "/v1/queue/ack",
        b'{"seqs": "\xc3\x28"}',
        "BUG: a body that is not UTF-8 escapes as a 500, not 400: app.py:86 json.loads raises "
        "UnicodeDecodeError, which is not the JSONDecodeError caught there",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [pytest.param(m, p, b, id=name) for name, m, p, b, _reason in WRONGLY_TYPED],
)
@pytest.mark.usefixtures("quiet_server_errors")
def test_wrongly_typed_fields_are_400(ds: Cluster, method: str, path: str, body: Any) -> None:
    """A field of the wrong type or a body that is not UTF-8 is the client's fault: 400."""
    p = pair(ds.url)
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = raw(
        p.url, method, path.format(gid=p.group_id.hex()), token=p.alice.client.token, **kwargs
    )
    assert response.status_code == 400, response.text[:200]
    nothing_lost(p)


def test_oversized_bodies_are_413(ds: Cluster) -> None:
    """A body over the DS's limit (3x the message limit), a message over the message limit
    inside a small enough body, and an oversized KeyPackage are all 413; nothing of them is
    stored."""
    p = pair(ds.url)
    token = p.alice.client.token
    gid = p.group_id.hex()
    body = b" " * (3 * MAX_MESSAGE + 1)
    huge = raw(p.url, "POST", f"/v1/groups/{gid}/messages", token=token, content=body)
    assert huge.status_code == 413 and "request body exceeds" in error_of(huge)
    big = b64(b"\x00" * (MAX_MESSAGE + 1))
    response = raw(p.url, "POST", f"/v1/groups/{gid}/messages", token=token, json={"message": big})
    assert response.status_code == 413 and f"exceeds the {MAX_MESSAGE} limit" in error_of(response)
    response = raw(p.url, "POST", "/v1/key_packages", token=token, json={"key_packages": [big]})
    assert response.status_code == 413
    nothing_lost(p)


@pytest.mark.usefixtures("quiet_server_errors")
def test_an_oversized_body_is_refused_before_it_is_read(ds: Cluster) -> None:
    """Announce a 1 GiB body (over the 12 MiB limit) and send 8 MiB of it: the DS should
    answer 413 (or hang up) without waiting for the rest."""
    p = pair(ds.url)
    url = urlparse(p.url)
    head = (
        f"POST /v1/groups/{p.group_id.hex()}/messages HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {p.alice.client.token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
    ).encode()
    answer, hung_up = b"", False
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head)
        try:
            for _ in range(128):
                sock.sendall(b" " * 65536)
        except OSError:
            hung_up = True  # refused early: fine
        sock.settimeout(3)
        try:
            answer = sock.recv(64)
        except TimeoutError:
            answer = b""
        except OSError:
            hung_up = True
    assert hung_up or answer.startswith(b"HTTP/1.1 413"), answer
    nothing_lost(p)


# --- Floods ---------------------------------------------------------------------------------------


def test_a_flood_is_rate_limited_per_client(tmp_path: Path) -> None:
    """With a burst of 20 and a stopped clock, alice's 21st request is 429 — a message she
    submits while limited is not stored — while bob is unaffected; once the clock moves her
    bucket refills and everything she had sent before the flood is still there."""
    clock = FakeClock()
    with local_ds(tmp_path, clock=clock, rate_burst=20, rate_per_second=1.0) as (url, _):
        p = pair(url)
        statuses = []
        for _ in range(40):
            try:
                p.alice.client.fetch()
                statuses.append(200)
            except DSRequestError as exc:
                statuses.append(exc.status)
                assert "slow down" in exc.body["error"]
        assert statuses[-1] == 429 and set(statuses) == {200, 429}
        first = statuses.index(429)
        assert all(s == 429 for s in statuses[first:])  # no refill while the clock stands
        assert p.alice.group is not None
        dropped = p.alice.group.encrypt_application(b"sent while limited")
        with pytest.raises(DSRequestError) as info:
            p.alice.client.submit(p.group_id, dropped)
        assert info.value.status == 429
        # bob has his own bucket.
        items = p.bob.client.fetch()
        assert len(items) == 1
        clock.now += 60
        nothing_lost(p)
        assert b"sent while limited" not in p.bob.received


def test_a_flood_of_unauthenticated_requests_is_rate_limited(tmp_path: Path) -> None:
    clock = FakeClock()
    limits = Limits(anonymous_burst=5, anonymous_per_second=1.0)
    with local_ds(tmp_path, limits, clock=clock) as (url, service):
        statuses = [raw(url, "POST", "/v1/auth/challenge").status_code for _ in range(30)]
        with service.db.transaction() as tx:
            stored = tx.execute("SELECT COUNT(*) FROM challenges")[0][0]
        assert 429 in statuses, f"30 challenges issued, {stored} stored"


def test_a_slow_client_keeps_its_whole_queue(ds: Cluster) -> None:
    """Carol never acknowledges anything (she does not even fetch). Alice and bob go on for
    a while — messages and commits — unaffected; carol's queue keeps every message, in order,
    fetching it again returns the same thing, and when carol finally processes it she is in
    the same epoch as everyone."""
    alice, bob, carol = (Member.new(ds.url, n) for n in ("alice", "bob", "carol"))
    alice.create()
    alice.add(bob, carol)
    bob.sync()
    assert alice.group is not None and bob.group is not None
    sent = []
    for round_ in range(5):
        for i in range(6):
            text = b"round %d message %d" % (round_, i)
            (alice if i % 2 else bob).send(text)
            sent.append(text)
        committer = alice if round_ % 2 else bob
        assert committer.group is not None
        out = committer.group.commit()
        committer.client.submit(committer.group.group_id, out.commit, group_info=out.group_info)
        committer.group.merge_pending_commit()
        for m in (alice, bob):
            m.sync()
    queued = carol.client.fetch()
    assert queued == carol.client.fetch()  # nothing is consumed by fetching
    assert [m["kind"] for m in queued] == ["welcome"] + ["message"] * (len(sent) + 5)
    seqs = [m["seq"] for m in queued]
    assert seqs == sorted(seqs)
    assert carol.client.fetch(after=seqs[10]) == queued[11:]  # paging
    carol.sync()
    assert carol.received == sent
    assert carol.group is not None
    assert carol.group.epoch_authenticator == alice.group.epoch_authenticator
    assert carol.client.fetch() == []


# --- Replays and commits the DS cannot check -----------------------------------------------------


def test_replayed_submissions(ds: Cluster) -> None:
    """Its sender resubmitting an accepted commit (a lost answer) gets the original sequence
    number back; anyone else gets 409; either way nothing is queued again. Resubmitting an
    application
    message (the DS cannot read it, so cannot tell) is fanned out again; the members refuse the
    duplicate (``SecretTreeError``) with their state unchanged, and nothing else is affected."""
    p = pair(ds.url)
    assert p.alice.group is not None
    out = p.alice.group.commit()
    seq = p.alice.client.submit(p.group_id, out.commit, group_info=out.group_info)
    p.alice.group.merge_pending_commit()
    nothing_lost(p)
    assert p.alice.client.submit(p.group_id, out.commit) == seq
    with pytest.raises(DSConflict) as info:
        p.bob.client.submit(p.group_id, out.commit)  # a member replaying someone else's
    assert info.value.epoch == 2
    assert p.bob.client.fetch(p.bob.last_seq) == []
    message = p.alice.group.encrypt_application(b"once")
    p.alice.client.submit(p.group_id, message)
    p.bob.sync()
    p.bob.client.submit(p.group_id, message)  # bob replays alice's message
    replay = p.alice.client.fetch(p.alice.last_seq)
    assert [m["data"] for m in replay] == [message]
    before = p.alice.group.epoch_authenticator
    with pytest.raises(SecretTreeError):
        p.alice.group.process(message)  # her own message: its key is spent
    assert p.alice.group.epoch_authenticator == before
    p.alice.client.ack([m["seq"] for m in replay])
    p.alice.last_seq = replay[-1]["seq"]
    p.bob.send(b"after the replay")
    p.alice.sync()
    assert p.alice.received[-1] == b"after the replay"


@pytest.mark.parametrize("handshakes", ["public", "encrypted"])
def test_an_outsider_cannot_wedge_a_group_with_a_bogus_external_commit(
    ds: Cluster, handshakes: str
) -> None:
    """Mallory, registered but in no group, builds an external commit from the GroupInfo the
    DS serves, then breaks what the DS cannot check (public mode: the confirmation tag, which
    no signature covers; encrypted mode: the signature too). The members reject it with
    ``ConfirmationTagError`` / another ``MLSError``. Afterwards the honest members must still be
    able to move the group forward: by committing, or at least by rejoining by external commit
    from the GroupInfo the DS serves. mlspy's DS refuses external commits from outsiders unless
    the group was created open to external joins (the residual risk of open groups is
    documented in ``DeliveryService.create_group``)."""
    encrypted = handshakes == "encrypted"
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    config = GroupConfig(
        handshake_wire_format=WireFormat.mls_private_message
        if encrypted
        else WireFormat.mls_public_message
    )
    alice.group = Group.create(alice.identity, config=config)
    alice.client.create_group(alice.group.group_info(), encrypted_handshakes=encrypted)
    kp = MLSMessage.decode(alice.client.claim_key_package(b"bob")).key_package
    assert kp is not None
    out = alice.group.commit([Proposal(Add(kp))])
    alice.client.submit(
        alice.group.group_id,
        out.commit,
        welcome=out.welcome,
        group_info=out.group_info,
        adds=[b"bob"],
    )
    alice.group.merge_pending_commit()
    welcome = bob.client.fetch()
    bob.group = Group.join(welcome[0]["data"], bob.bundles, config=config)
    bob.client.ack([m["seq"] for m in welcome])
    gid = alice.group.group_id

    mallory = Member.new(ds.url, "mallory", key_packages=0)
    # The DS does not show a closed group's GroupInfo to an outsider (404, as for no group);
    # mallory got it elsewhere (a former member leaked it).
    with pytest.raises(DSRequestError) as refused:
        mallory.client.group_info(gid)
    assert refused.value.status == 404
    _, commit = join_external(alice.group.group_info(), mallory.identity)
    pm = MLSMessage.decode(commit).public_message
    assert pm is not None
    tag = pm.auth.confirmation_tag or b""
    auth = replace(pm.auth, confirmation_tag=bytes([tag[0] ^ 1]) + tag[1:])
    if encrypted:
        auth = replace(auth, signature=bytes(len(pm.auth.signature)))
    bogus = MLSMessage.wrap(replace(pm, auth=auth)).encode()
    try:
        mallory.client.submit(gid, bogus)
    except DSRequestError:
        return  # refused by the DS: the group is safe
    for g in (alice.group, bob.group):
        before = g.epoch_authenticator
        with pytest.raises(MLSError) as info:
            g.process(bogus)
        assert encrypted or type(info.value) is ConfirmationTagError
        assert g.epoch_authenticator == before
    # The honest members go on: a commit, or else a rejoin from the DS's GroupInfo.
    out = alice.group.commit()
    try:
        alice.client.submit(gid, out.commit, group_info=out.group_info)
        return
    except DSConflict:
        alice.group.clear_pending_commit()
    rejoined, commit = join_external(
        alice.client.group_info(gid), alice.identity, remove_prior=0, config=config
    )
    alice.client.submit(gid, commit, group_info=rejoined.pending_group_info())
    rejoined.merge_pending_commit()


def test_the_ds_refuses_handshakes_it_can_check(ds: Cluster) -> None:
    """In a group with PublicMessage handshakes the DS follows the group and refuses what a
    member would refuse before anyone receives it: a member's commit with a broken signature
    (400), and an outsider's external commit built from a GroupInfo that is now stale (409).
    Neither reaches anyone's queue."""
    p = pair(ds.url, external_joins=True)
    assert p.alice.group is not None
    eve = Member.new(ds.url, "eve", key_packages=0)
    stale_info = eve.client.group_info(p.group_id)
    out = p.alice.group.commit()
    pm = MLSMessage.decode(out.commit).public_message
    assert pm is not None
    broken = MLSMessage.wrap(
        replace(pm, auth=replace(pm.auth, signature=bytes(len(pm.auth.signature))))
    ).encode()
    with pytest.raises(DSRequestError) as info:
        p.alice.client.submit(p.group_id, broken)
    assert info.value.status == 400 and "rejected" in info.value.body["error"]
    p.alice.client.submit(p.group_id, out.commit, group_info=out.group_info)
    p.alice.group.merge_pending_commit()
    _, commit = join_external(stale_info, eve.identity)
    with pytest.raises(DSConflict):
        eve.client.submit(p.group_id, commit)
    assert eve.client.fetch() == []
    nothing_lost(p)


# --- Found in review: outsiders' non-proposals, creation races, expired KeyPackages -----------


@pytest.mark.parametrize("handshakes", ["public", "encrypted"])
def test_outsiders_may_only_propose(ds: Cluster, handshakes: str) -> None:
    """A non-member's PublicMessage claiming an external or new-member sender is accepted only
    as a proposal: a bogus "commit" would take the epoch and wedge the group, application
    data would be fanned out to every member."""
    from mlspy.group import GroupConfig
    from mlspy.messages import Commit, ContentType, WireFormat
    from mlspy.messages.framed_content import FramedContent, FramedContentAuthData, Sender
    from mlspy.messages.framing import PublicMessage

    encrypted = handshakes == "encrypted"
    wire = WireFormat.mls_private_message if encrypted else WireFormat.mls_public_message
    alice, mallory = Member.new(ds.url, "alice"), Member.new(ds.url, "mallory")
    alice.group = Group.create(alice.identity, config=GroupConfig(handshake_wire_format=wire))
    alice.client.create_group(alice.group.group_info(), encrypted_handshakes=encrypted)
    gid, epoch = alice.group.group_id, alice.group.epoch
    commit = FramedContent(
        gid, epoch, Sender.new_member_proposal(), b"", ContentType.commit, commit=Commit((), None)
    )
    spam = FramedContent(
        gid, epoch, Sender.external(0), b"", ContentType.application, application_data=b"spam"
    )
    for content, tag in ((commit, b"\0" * 32), (spam, None)):
        bogus = PublicMessage(content, FramedContentAuthData(b"\0" * 64, tag))
        with pytest.raises(DSRequestError) as info:
            mallory.client.submit(gid, MLSMessage.wrap(bogus).encode())
        assert info.value.status == 403, content.content_type
    out = alice.group.commit([], force_path=True)
    alice.client.submit(gid, out.commit)  # the epoch is still alice's to take


def test_concurrent_creation_of_one_group_is_a_conflict(ds: Cluster) -> None:
    import threading

    alice = Member.new(ds.url, "alice")
    group = Group.create(alice.identity)
    info = group.group_info()
    results: list[object] = []

    def create() -> None:
        try:
            results.append(alice.client.create_group(info))
        except DSRequestError as exc:
            results.append(exc.status)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [0, 409, 409, 409]


def test_expired_key_packages_are_neither_counted_nor_claimed(tmp_path: Path) -> None:
    clock = FakeClock()
    with local_ds(tmp_path, clock=clock) as (url, _):
        bob = Member.new(url, "bob", key_packages=2)
        assert bob.client.count_key_packages(1) == (2, False)
        clock.now += 91 * 24 * 3600  # past the default 90-day lifetime
        assert bob.client.count_key_packages(1) == (0, False)
        alice = Member.new(url, "alice", key_packages=0)
        with pytest.raises(DSRequestError) as info:
            alice.client.claim_key_package(b"bob", 1)
        assert info.value.status == 404
