"""Bad input, authentication, push, TLS, external joins, encrypted handshakes, restarts."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import websockets
from ds_helpers import Cluster, Member, open_push, status_of

from mlspy.ds.app import create_app
from mlspy.ds.client import DSClient, DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import MAX_MESSAGE, DeliveryService
from mlspy.group import GroupConfig, SigningIdentity, join_external
from mlspy.messages import MLSMessage, WireFormat
from mlspy.protection import authenticate, protect_public_message
from x509_helpers import self_signed_server


def test_bad_requests_get_clear_4xx_and_change_nothing(ds: Cluster) -> None:
    alice, bob, eve = (Member.new(ds.url, n) for n in ("alice", "bob", "eve"))
    alice.create()
    alice.add(bob)
    bob.sync()
    assert alice.group is not None
    gid = alice.group.group_id
    anon = httpx.Client(base_url=ds.url)
    assert anon.get("/v1/queue").status_code == 401
    assert anon.get("/v1/queue", headers={"authorization": "Bearer nope"}).status_code == 401
    assert anon.get("/healthz").json() == {"status": "ok"}
    assert "/v1/groups" in anon.get("/openapi.json").json()["paths"]
    # Malformed MLS bytes: 400 naming the decode error.
    with pytest.raises(DSRequestError) as info:
        alice.client.submit(gid, b"\x00\x01\x00")
    assert info.value.status == 400 and "malformed MLS message" in info.value.body["error"]
    # Unknown group: 404. Not a member: 403.
    assert status_of(
        lambda: alice.client.submit(b"\x99" * 16, alice.group.encrypt_application(b"x"))
    ) in (400, 404)
    assert status_of(lambda: eve.client.group_info(b"\x77" * 16)) == 404
    out = alice.group.commit()
    assert status_of(lambda: eve.client.submit(gid, out.commit)) == 403
    # A commit whose signature was broken is rejected by the public view (400), and the
    # real commit is still accepted afterwards.
    msg = MLSMessage.decode(out.commit)
    pm = msg.public_message
    assert pm is not None
    forged = replace(pm, auth=replace(pm.auth, signature=b"\x00" * 64))
    with pytest.raises(DSRequestError) as info:
        alice.client.submit(gid, MLSMessage.wrap(forged).encode())
    assert info.value.status == 400 and "rejected" in info.value.body["error"]
    alice.client.submit(gid, out.commit)
    alice.group.merge_pending_commit()
    bob.sync()
    assert bob.group is not None and bob.group.epoch == alice.group.epoch
    # Oversized message: 413.
    assert status_of(lambda: alice.client.submit(gid, b"\x00" * (MAX_MESSAGE + 1))) == 413


def test_rate_limit(tmp_path: Path) -> None:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"), rate_burst=5)
    with InProcessServer(create_app(service)) as server:
        m = Member.new(server.url, "busy", key_packages=0)
        statuses = [status_of(lambda: m.client.fetch()) for _ in range(20)]
        assert 429 in statuses


def test_websocket_push_and_ack(ds: Cluster) -> None:
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()

    async def listen() -> dict[str, object]:
        async with await open_push(ds.ws_url, bob.client.token) as sock:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(alice.send, b"pushed")
            item = json.loads(await asyncio.wait_for(sock.recv(), timeout=10))
            await sock.send(json.dumps({"ack": [item["seq"]]}))
            await asyncio.sleep(0.2)
            return item

    item = asyncio.run(listen())
    assert item["kind"] == "message"
    assert bob.client.fetch(bob.last_seq) == []  # acked over the WebSocket


@pytest.mark.parametrize("ds", ["postgres"], indirect=True)
def test_websocket_push_across_nodes_survives_a_lost_listen_connection(
    ds: Cluster, postgres_url: str
) -> None:
    """PostgreSQL: a node whose LISTEN connection dies reopens it, so its WebSocket clients
    are still woken by commits accepted on another node."""
    import psycopg

    node_a, node_b = ds.servers
    alice, bob = Member.new(node_b.url, "alice"), Member.new(node_a.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN mlspy_queue%' AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed

    async def listen() -> dict[str, object]:
        async with await open_push(node_a.ws_url, bob.client.token) as sock:
            await asyncio.sleep(1.0)  # the listener reconnects meanwhile
            await asyncio.to_thread(alice.send, b"across nodes")
            # Well under the socket's 15 s fallback poll: only a wakeup gets it here in time.
            return json.loads(await asyncio.wait_for(sock.recv(), timeout=5))  # type: ignore[no-any-return]

    item = asyncio.run(listen())
    assert item["kind"] == "message"


def test_websocket_needs_a_token(ds: Cluster) -> None:
    async def connect(first: str | None) -> None:
        async with websockets.connect(f"{ds.ws_url}/v1/ws") as sock:
            if first is not None:
                await sock.send(first)
            await sock.recv()

    for first in ('{"token": "bad"}', '{"ack": [1]}', '"hello"'):
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            asyncio.run(connect(first))
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401, first


def test_external_join_through_the_ds(ds: Cluster) -> None:
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    carol = Member.new(ds.url, "carol", key_packages=0)
    alice.create(external_joins=True)
    alice.add(bob)
    bob.sync()
    assert alice.group is not None
    gi = carol.client.group_info(alice.group.group_id)
    carol.group, commit = join_external(gi, carol.identity)
    carol.client.submit(carol.group.group_id, commit, group_info=carol.group.pending_group_info())
    carol.group.merge_pending_commit()
    alice.sync()
    bob.sync()
    assert alice.group.epoch_authenticator == carol.group.epoch_authenticator
    alice.send(b"welcome carol")
    carol.sync()
    assert carol.received == [b"welcome carol"]


def test_encrypted_handshakes_are_ordered_by_epoch(ds: Cluster) -> None:
    config = GroupConfig(handshake_wire_format=WireFormat.mls_private_message)
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    from mlspy.group import Group

    alice.group = Group.create(alice.identity, config=config)
    alice.client.create_group(alice.group.group_info(), encrypted_handshakes=True)
    kp = MLSMessage.decode(alice.client.claim_key_package(b"bob")).key_package
    assert kp is not None
    from mlspy.messages import Add, Proposal

    out = alice.group.commit([Proposal(Add(kp))])
    alice.client.submit(alice.group.group_id, out.commit, welcome=out.welcome, adds=[b"bob"])
    alice.group.merge_pending_commit()
    bob.sync()
    assert bob.group is not None
    out = bob.group.commit()
    bob.client.submit(bob.group.group_id, out.commit)
    bob.group.merge_pending_commit()
    stale = alice.group.commit()
    assert status_of(lambda: alice.client.submit(alice.group.group_id, stale.commit)) == 409
    alice.group.clear_pending_commit()
    alice.sync()
    assert alice.group.epoch_authenticator == bob.group.epoch_authenticator


def test_accepted_messages_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "ds.sqlite"
    with InProcessServer(create_app(DeliveryService(SQLiteDatabase(db)))) as server:
        alice, bob = Member.new(server.url, "alice"), Member.new(server.url, "bob")
        alice.create()
        alice.add(bob)
        bob.sync()
        alice.send(b"before the restart")
    with InProcessServer(create_app(DeliveryService(SQLiteDatabase(db)))) as server:
        bob.client = DSClient(server.url, bob.identity)
        bob.client.login()
        bob.sync()
        assert bob.received == [b"before the restart"]


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed_server(tmp_path)
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    with InProcessServer(create_app(service), tls_cert=str(cert), tls_key=str(key)) as server:
        assert server.url.startswith("https://")
        client = DSClient(server.url, SigningIdentity.generate(b"tls"), verify=str(cert))
        client.register()
        client.login()
        assert client.fetch() == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/healthz")  # untrusted without the test's certificate
    assert authenticate and protect_public_message  # imported for forging helpers


def test_members_check_credentials_with_the_as(ds: Cluster) -> None:
    from mlspy.credentials import CredentialError
    from mlspy.ds.client import ASCredentialValidator
    from mlspy.group import Group, create_key_package
    from mlspy.messages import Add, Proposal

    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    config = GroupConfig(credential_validator=ASCredentialValidator(alice.client))
    alice.group = Group.create(alice.identity, config=config)
    alice.client.create_group(alice.group.group_info())
    alice.add(bob)
    bob_config = GroupConfig(credential_validator=ASCredentialValidator(bob.client))
    items = bob.client.fetch()
    bob.group = Group.join(items[0]["data"], bob.bundles, config=bob_config)
    assert bob.group.epoch_authenticator == alice.group.epoch_authenticator
    # Mallory never registered: her KeyPackage is refused before any commit is made.
    mallory = create_key_package(SigningIdentity.generate(b"mallory"))
    with pytest.raises(CredentialError, match="not registered"):
        alice.group.commit([Proposal(Add(mallory.key_package))])
    # An impostor using bob's identity with another key is refused too.
    fake_bob = create_key_package(SigningIdentity.generate(b"bob"))
    with pytest.raises(CredentialError, match="another signature key"):
        alice.group.commit([Proposal(Add(fake_bob.key_package))])


def test_x509_registration(tmp_path: Path) -> None:
    from mlspy.credentials import X509Validator
    from x509_helpers import make_ca, x509_identity

    ca_key, ca = make_ca()
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"), x509=X509Validator([ca]))
    with InProcessServer(create_app(service)) as server:
        ident = x509_identity(ca_key, ca, "alice@example.org")
        client = DSClient(server.url, ident)
        client.register()
        client.login()
        assert service.lookup_identity(b"alice@example.org") is not None
        other_key, other_ca = make_ca()
        rogue = DSClient(server.url, x509_identity(other_key, other_ca, "eve@example.org"))
        with pytest.raises(DSRequestError) as info:
            rogue.register()
        assert info.value.status == 400 and "X.509" in info.value.body["error"]
