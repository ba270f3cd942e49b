"""Names are accounts (issue 15, item 7), attacked over a real DS on loopback (SQLite, and two
nodes on PostgreSQL when available), through the raw HTTP API and the SDK's defaults:

* nobody squats a name: with registration "invite" a new name needs a single-use invite code
  (the operator's, or one an existing user made), with "x509" a certificate of the CA; with
  registration "open" (the mechanism off) the first comer takes any name;
* a user who lost their key takes the name back with its recovery secret: the old key stops
  working, its KeyPackages go, the new device stands on the old delivery lists and rejoins;
  nobody else can: wrong secrets are refused and limited per name (and per address), replays
  and borrowed keys fail, and the secret rotates on use.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from ds_helpers import Cluster, status_of

from mlspy.cli import main
from mlspy.client import Client, Event
from mlspy.credentials import X509Validator
from mlspy.crypto import suite
from mlspy.ds.accounts import client_id_of, new_recovery_secret, recovery_hash
from mlspy.ds.app import create_app
from mlspy.ds.client import DSClient, DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import CHALLENGE_LABEL, DeliveryService
from mlspy.group import SigningIdentity
from mlspy.messages import MLSMessage
from mlspy.storage import MemoryStore
from x509_helpers import make_ca, x509_identity

INVITE = {"registration": "invite"}
CA_KEY, CA = make_ca()

# --- Helpers ------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(url: str, path: str, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, timeout=30) as http:
        return http.post(path, json=body, headers=headers)


def error_of(response: httpx.Response) -> str:
    return str(response.json()["error"])


def possession(
    url: str, identity: SigningIdentity, signer: SigningIdentity | None = None
) -> dict[str, Any]:
    """Credential, key and a fresh challenge signed by ``signer`` (default: the key's holder)."""
    challenge = base64.b64decode(post(url, "/v1/auth/challenge", {}).json()["challenge"])
    key = (signer or identity).signature_private_key
    signature = suite(identity.cipher_suite).sign_with_label(key, CHALLENGE_LABEL, challenge)
    return {
        "credential": b64(identity.credential.encode()),
        "signature_key": b64(identity.signature_key),
        "cipher_suite": identity.cipher_suite,
        "challenge": b64(challenge),
        "signature": b64(signature),
    }


def register_body(
    url: str, identity: SigningIdentity, *, code: str | None = None, secret: str | None = None
) -> dict[str, Any]:
    body = possession(url, identity)
    if code is not None:
        body["invite_code"] = code
    if secret is not None:
        name = identity.credential.identity or b""
        body["recovery_hash"] = b64(recovery_hash(name, secret))
    return body


def recover_body(
    url: str,
    new: SigningIdentity,
    name: bytes,
    secret: str,
    *,
    next_secret: str = "next",
    signer: SigningIdentity | None = None,
) -> dict[str, Any]:
    return {
        **possession(url, new, signer),
        "identity": b64(name),
        "recovery_secret": secret,
        "recovery_hash": b64(recovery_hash(name, next_secret)),
    }


def operator_code(ds: Cluster) -> str:
    """An invite code minted by the operator (in-process, as the embedded demo does)."""
    return ds.services[0].create_invite()[0]


def sdk_start(client: Client) -> tuple[int, str]:
    """Start an SDK client with its defaults (and stop it): the HTTP status it ends with, and
    the refusal's text."""

    async def run() -> None:
        try:
            await client.start()
        finally:
            await client.stop()

    try:
        asyncio.run(run())
    except DSRequestError as exc:
        return exc.status, str(exc)
    return 200, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(client: Client, kind: str, timeout: float = 15) -> Event:
    while True:
        event = await client.next_event(timeout)
        if event.kind == kind:
            return event


# --- Registration policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ds_options", [INVITE, {"registration": "open"}], ids=["invite", "mechanism_off"]
)
def test_nobody_squats_a_name_without_an_invite(ds: Cluster, ds_options: dict[str, str]) -> None:
    """Mallory registers "alice" before alice does: over raw HTTP, and as an SDK client with
    its defaults. With registration "invite" both are refused (403, saying what to do) and
    alice, with the operator's code, gets her name. With registration "open" (the mechanism
    off) mallory takes it and alice is locked out of her own name."""
    mallory = SigningIdentity.generate(b"alice")
    squat = post(ds.url, "/v1/auth/register", register_body(ds.url, mallory))
    sdk, _ = sdk_start(Client(ds.url, "bob"))
    alice = Client(ds.url, "alice", invite_code=operator_code(ds))
    alice_status, refusal = sdk_start(alice)
    if ds_options["registration"] == "invite":
        assert squat.status_code == 403
        assert "needs an invite code: ask an existing user or the operator" in error_of(squat)
        assert sdk == 403
        assert alice_status == 200
    else:
        assert squat.status_code == 200 and sdk == 200
        assert alice_status == 409  # the name is mallory's, and she is told what to do
        assert "recover it with its recovery secret" in refusal


@pytest.mark.parametrize("ds_options", [INVITE])
def test_an_invite_code_admits_one_name(
    ds: Cluster, ds_options: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Two registrations race with one code (on two nodes with PostgreSQL): exactly one wins.
    The code does not work again, nor does a made-up or an expired one; a code is accepted
    retyped (lower case, no dashes); no code is ever logged or stored in clear."""
    caplog.set_level(logging.INFO, logger="mlspy.ds")
    code = operator_code(ds)
    racers = [SigningIdentity.generate(name) for name in (b"bob", b"carol")]
    bodies = [register_body(ds.url, r, code=code) for r in racers]
    urls = [ds.url, ds.url]
    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(
            pool.map(lambda i: post(urls[i], "/v1/auth/register", bodies[i]).status_code, (0, 1))
        )
    assert statuses == [200, 403]
    again = post(ds.url, "/v1/auth/register", register_body(ds.url, racers[0], code=code))
    loser = racers[0] if again.status_code == 403 else racers[1]
    response = post(ds.url, "/v1/auth/register", register_body(ds.url, loser, code=code))
    assert response.status_code == 403 and "unknown, used or expired" in error_of(response)
    made_up = "AAAA-BBBB-CCCC-DDDD"
    response = post(ds.url, "/v1/auth/register", register_body(ds.url, loser, code=made_up))
    assert response.status_code == 403
    operator = ds.services[0]
    operator.invite_ttl = -1.0
    expired = operator.create_invite()[0]
    operator.invite_ttl = 7 * 86400.0
    response = post(ds.url, "/v1/auth/register", register_body(ds.url, loser, code=expired))
    assert response.status_code == 403 and "expired" in error_of(response)
    retyped = operator_code(ds).replace("-", "").lower()
    response = post(ds.url, "/v1/auth/register", register_body(ds.url, loser, code=retyped))
    assert response.status_code == 200
    for c in (code, expired, made_up, retyped):
        assert c not in caplog.text and c.upper() not in caplog.text
    with operator.db.transaction() as tx:
        stored = tx.execute("SELECT code_hash, issuer FROM invites")
    assert stored and all(code.encode() not in bytes(r[0]) for r in stored)


@pytest.mark.parametrize("ds_options", [{**INVITE, "invites_per_day": 2}])
def test_a_user_invites_a_friend(ds: Cluster, ds_options: dict[str, Any]) -> None:
    """Alice (registered with the operator's code) makes a code for bob, who registers with
    the SDK and then joins alice's group; alice may make two codes a day, not three; nobody
    makes codes without a token."""

    async def scenario() -> None:
        async with Client(ds.url, "alice", invite_code=operator_code(ds)) as alice:
            code = await asyncio.to_thread(alice.ds.create_invite)
            async with Client(ds.url, "bob", invite_code=code) as bob:
                assert bob.new_recovery_secret is not None
                gid = await alice.create_group()
                await alice.invite(gid, "bob")
                await until(bob, "joined")
                await asyncio.to_thread(alice.ds.create_invite)
                with pytest.raises(DSRequestError) as info:
                    await asyncio.to_thread(alice.ds.create_invite)
                assert info.value.status == 429 and "invite codes a day" in str(info.value)

    asyncio.run(scenario())
    assert post(ds.url, "/v1/invites", {}).status_code == 401


@pytest.mark.parametrize(
    "ds_options",
    [
        {"registration": "x509", "x509": X509Validator([CA])},
        {"registration": "open", "x509": X509Validator([CA])},
    ],
    ids=["x509", "mechanism_off"],
)
def test_x509_registration_refuses_basic_names(ds: Cluster, ds_options: dict[str, Any]) -> None:
    """With registration "x509" a name comes from a certificate of the CA only: a Basic
    "alice@example.org" is refused (raw HTTP and SDK) and invite codes admit nobody; the
    certificate's holder registers. With "open" the Basic squatter gets in first."""
    basic = SigningIdentity.generate(b"alice@example.org")
    squat = post(ds.url, "/v1/auth/register", register_body(ds.url, basic))
    sdk, _ = sdk_start(Client(ds.url, "mallory"))
    holder = DSClient(ds.url, x509_identity(CA_KEY, CA, "alice@example.org"))
    if ds_options["registration"] == "x509":
        assert squat.status_code == 403 and "X.509 certificate" in error_of(squat)
        assert sdk == 403
        holder.register()
        holder.login()
        assert status_of(holder.create_invite) == 403
    else:
        assert squat.status_code == 200 and sdk == 200
        assert status_of(holder.register) == 409


# --- Recovery -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ds_options", [INVITE])
def test_a_lost_key_recovers_its_name(ds: Cluster, ds_options: dict[str, str]) -> None:
    """Alice loses her device. On a new one (a fresh store, a new key), her recovery secret
    takes her name back: the old key no longer logs in and its token is dead, its
    KeyPackages are gone (bob's claim gets the new key's), the new device stands on the old
    delivery lists and rejoins the group, bob and the new alice talk; the secret rotated, so
    the one she used does not work again."""
    operator = ds.services[0]

    async def scenario() -> None:
        old = Client(ds.url, "alice", invite_code=operator_code(ds))
        bob = Client(ds.url, "bob", invite_code=operator_code(ds))
        await old.start()
        await bob.start()
        secret = old.new_recovery_secret
        assert secret is not None and secret == old.recovery_secret
        gid = await old.create_group()
        await old.invite(gid, "bob")
        await until(bob, "joined")
        old_identity, old_token = old.identity, old.ds.token
        await old.stop()  # the device is lost

        new = Client(ds.url, "alice", store=MemoryStore())
        assert status_of(lambda: new.ds.login()) == 401  # its key is nobody's yet
        assert await new.recover(secret) == [gid]
        assert new.new_recovery_secret not in (None, secret)
        assert new.recovery_secret == new.new_recovery_secret

        lost = DSClient(ds.url, old_identity)
        with pytest.raises(DSRequestError) as info:
            lost.login()
        assert info.value.status == 401 and "recover your name" in str(info.value)
        with httpx.Client(base_url=ds.url) as http:
            stale = http.get("/v1/queue", headers={"authorization": f"Bearer {old_token}"})
        assert stale.status_code == 401
        with operator.db.transaction() as tx:
            left = tx.execute(
                "SELECT COUNT(*) FROM key_packages WHERE owner = ?",
                (client_id_of(old_identity.signature_key),),
            )
        assert int(left[0][0]) == 0
        claimed = MLSMessage.decode(bob.ds.claim_key_package(b"alice")).key_package
        assert claimed is not None
        assert claimed.leaf_node.signature_key == new.identity.signature_key

        await until(bob, "epoch")  # alice's external commit, removing her old leaf
        assert sorted(bob.members(gid)) == ["alice", "bob"]
        keys = {m.signature_key for m in bob.group(gid).group.members()}
        assert new.identity.signature_key in keys and old_identity.signature_key not in keys
        await bob.send(gid, "welcome back")
        assert (await until(new, "message")).text == "welcome back"
        await new.send(gid, "thanks")
        assert (await until(bob, "message")).text == "thanks"

        again = Client(ds.url, "alice", store=MemoryStore())
        with pytest.raises(DSRequestError) as info:
            await again.recover(secret)
        assert info.value.status == 403 and again.recovery_secret is None
        await again.stop()
        await new.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "ds_options",
    [
        {**INVITE, "recovery_attempts": 3, "recovery_per_address": 10**6},
        {**INVITE, "recovery_attempts": 10**6, "recovery_per_address": 10**6},
    ],
    ids=["limited", "mechanism_off"],
)
def test_recovery_secrets_cannot_be_guessed(ds: Cluster, ds_options: dict[str, Any]) -> None:
    """Mallory guesses the recovery secret of a name whose owner chose a weak one ("17",
    through the raw API; the SDK makes 160-bit secrets), from one address or several nodes.
    Limited per name: after 3 wrong guesses every try is 429, the right one included, and the
    owner keeps the name. With the limit off (the attack as it would be) she finds it."""
    victim = SigningIdentity.generate(b"victim")
    body = register_body(ds.url, victim, code=operator_code(ds), secret="17")
    assert post(ds.url, "/v1/auth/register", body).status_code == 200
    mallory = SigningIdentity.generate(b"victim")
    statuses = []
    for guess in range(40):
        response = post(
            ds.url, "/v1/auth/recover", recover_body(ds.url, mallory, b"victim", str(guess))
        )
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
    owner = DSClient(ds.url, victim)
    if ds_options["recovery_attempts"] == 3:
        assert statuses[:3] == [403, 403, 403] and set(statuses[3:]) == {429}
        assert len(statuses) == 40  # "17" was tried too, and refused
        owner.login()
    else:
        assert statuses == [403] * 17 + [200]
        assert status_of(owner.login) == 401  # the name is mallory's


@pytest.mark.parametrize("ds_options", [{**INVITE, "recovery_per_address": 3}])
def test_recovery_is_limited_per_address(ds: Cluster, ds_options: dict[str, Any]) -> None:
    """Guesses spread over many names from one address run into the per-address limit."""
    url = ds.url  # one node: the per-address limit is each node's
    statuses = [
        post(
            url,
            "/v1/auth/recover",
            recover_body(url, SigningIdentity.generate(b"n%d" % i), b"n%d" % i, "x"),
        ).status_code
        for i in range(5)
    ]
    assert statuses == [403, 403, 403, 429, 429]


@pytest.mark.parametrize("ds_options", [INVITE])
def test_nobody_else_recovers_a_name(ds: Cluster, ds_options: dict[str, str]) -> None:
    """Eve (a registered user) tries to take alice's name: with a wrong secret, with a
    credential naming herself, with a key she does not hold, onto her own registered key, by
    replaying alice's recovery request, and with the secret alice used (rotated since). All
    fail; alice's new key keeps the name."""
    alice = SigningIdentity.generate(b"alice")
    eve = SigningIdentity.generate(b"eve")
    secret = new_recovery_secret()
    for who, s in ((alice, secret), (eve, None)):
        body = register_body(ds.url, who, code=operator_code(ds), secret=s)
        assert post(ds.url, "/v1/auth/register", body).status_code == 200
    eve_new = SigningIdentity.generate(b"alice")

    def recover(body: dict[str, Any]) -> httpx.Response:
        return post(ds.url, "/v1/auth/recover", body)

    wrong = recover(recover_body(ds.url, eve_new, b"alice", new_recovery_secret()))
    assert wrong.status_code == 403 and "wrong recovery secret" in error_of(wrong)
    as_eve = recover(recover_body(ds.url, SigningIdentity.generate(b"eve2"), b"alice", secret))
    assert as_eve.status_code == 400 and "must name a device of the user" in error_of(as_eve)
    unheld = recover(recover_body(ds.url, eve_new, b"alice", secret, signer=eve))
    assert unheld.status_code == 401 and "does not verify" in error_of(unheld)
    own_key = recover(recover_body(ds.url, eve, b"alice", secret))
    assert own_key.status_code in (400, 409)  # eve's credential names eve, her key is taken
    # Alice recovers onto a new key; eve captured the request.
    alice_new = SigningIdentity.generate(b"alice")
    captured = recover_body(ds.url, alice_new, b"alice", secret, next_secret="rotated")
    assert recover(captured).status_code == 200
    replay = recover(captured)
    assert replay.status_code == 401 and "unknown or expired challenge" in error_of(replay)
    reuse = recover(recover_body(ds.url, eve_new, b"alice", secret))
    assert reuse.status_code == 403
    DSClient(ds.url, alice_new).login()
    assert status_of(DSClient(ds.url, eve_new).login) == 401


@pytest.mark.parametrize("ds_options", [INVITE])
def test_a_name_without_a_secret_gets_one_and_keeps_it(
    ds: Cluster, ds_options: dict[str, str]
) -> None:
    """A name registered before recovery secrets existed gets one when its own key registers
    again (the SDK does it on start, and shows it); after that, registering again with the
    bound key — a thief of the key, say — does not replace it."""
    store = MemoryStore()
    sdk_start(Client(ds.url, "carol", store=store, invite_code=operator_code(ds)))
    with ds.services[0].db.transaction() as tx:  # as before this change
        tx.execute("UPDATE accounts SET recovery_hash = NULL WHERE identity = ?", (b"carol",))
    store.write({"recovery": (None, store.get("recovery").version)})  # type: ignore[union-attr]
    carol = Client(ds.url, "carol", store=store)
    assert sdk_start(carol) == (200, "")
    secret = carol.new_recovery_secret
    assert secret is not None and secret == carol.recovery_secret
    thief = DSClient(ds.url, carol.identity)
    thief.register(recovery_hash=recovery_hash(b"carol", "the thief's"))
    assert not thief.recovery_set
    thiefs = recover_body(ds.url, SigningIdentity.generate(b"carol"), b"carol", "the thief's")
    assert post(ds.url, "/v1/auth/recover", thiefs).status_code == 403
    new = Client(ds.url, "carol", store=MemoryStore())

    async def recover() -> list[bytes]:
        try:
            return await new.recover(secret)
        finally:
            await new.stop()

    assert asyncio.run(recover()) == []


# --- The tools ----------------------------------------------------------------------------------


def test_serve_defaults_to_invites_and_mlspy_invite_mints_codes(tmp_path: Path) -> None:
    """`mlspy serve` registers invited names by default and prints the first user's code on
    a new database; `mlspy invite` mints more; `--registration x509` needs `--ca`."""
    assert "[default: invite]" in CliRunner().invoke(main, ["serve", "--help"]).output
    result = CliRunner().invoke(main, ["serve", "--registration", "x509"])
    assert result.exit_code == 2 and "--ca" in result.output
    db = tmp_path / "ds.sqlite"
    result = CliRunner().invoke(main, ["invite", "--database", str(db), "--count", "2"])
    assert result.exit_code == 0, result.output
    codes = result.output.split()
    assert len(codes) == 2
    service = DeliveryService(SQLiteDatabase(db), registration="invite")
    with InProcessServer(create_app(service)) as server:
        client = DSClient(server.url, SigningIdentity.generate(b"first"))
        assert status_of(client.register) == 403
        client.register(invite_code=codes[0])
        client.login()

    fresh, port = tmp_path / "fresh.sqlite", free_port()
    command = "from mlspy.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", command, "serve", "--port", str(port), "--database", str(fresh)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "invite code" in line
        code = line.rsplit(" ", 1)[-1].strip()
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        first = DSClient(url, SigningIdentity.generate(b"first"))
        first.register(invite_code=code)
        first.login()
    finally:
        proc.terminate()
        proc.wait(10)


def test_chat_needs_an_invite_shows_the_recovery_secret_and_makes_codes(tmp_path: Path) -> None:
    """`mlspy chat` against an invite-only server: without a code it says what to do; with
    one it connects and shows the recovery secret once; `/code` makes a code a friend
    registers with."""
    from textual.widgets import RichLog

    from mlspy.tools.chat import ChatApp

    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"), registration="invite")

    def log(app: ChatApp) -> str:
        return "\n".join(line.text for line in app.query_one("#log", RichLog).lines)

    async def wait(check: Any) -> None:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("timed out")

    async def scenario(url: str) -> None:
        stranger = ChatApp(url, "stranger")
        async with stranger.run_test():
            await wait(lambda: "cannot connect" in log(stranger))
            assert "needs an invite code" in log(stranger)
        alice = ChatApp(url, "alice", invite_code=service.create_invite()[0])
        async with alice.run_test() as pilot:
            await wait(lambda: "connected" in log(alice))
            assert str(alice.client.recovery_secret) in log(alice)
            alice.query_one("#input").value = "/code"  # type: ignore[attr-defined]
            await pilot.press("enter")
            await wait(lambda: "invite code for a friend" in log(alice))
            code = log(alice).split("(single use): ")[1].split()[0]
        bob = ChatApp(url, "bob", invite_code=code)
        async with bob.run_test():
            await wait(lambda: "connected" in log(bob))

    with InProcessServer(create_app(service)) as server:
        asyncio.run(scenario(server.url))
