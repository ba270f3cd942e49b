"""Stateless login challenges (``mlspy.ds.challenges``) over a real server: asking for one
writes nothing (a flood from one address costs the database nothing), any node of a
deployment accepts any node's challenge, a challenge is used once, and a forged, altered or
expired one is refused before any database work."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from ds_helpers import Cluster, Member

from mlspy.crypto import suite
from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import CHALLENGE_LABEL, DeliveryService
from mlspy.group import SigningIdentity


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def challenge_of(url: str) -> bytes:
    response = httpx.post(f"{url}/v1/auth/challenge", timeout=30)
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["challenge"])


def sign(identity: SigningIdentity, challenge: bytes) -> bytes:
    return suite(1).sign_with_label(identity.signature_private_key, CHALLENGE_LABEL, challenge)


def login(url: str, identity: SigningIdentity, challenge: bytes) -> httpx.Response:
    body = {
        "signature_key": b64(identity.signature_key),
        "challenge": b64(challenge),
        "signature": b64(sign(identity, challenge)),
    }
    return httpx.post(f"{url}/v1/auth/token", json=body, timeout=30)


def register(url: str, identity: SigningIdentity, challenge: bytes) -> httpx.Response:
    body = {
        "credential": b64(identity.credential.encode()),
        "signature_key": b64(identity.signature_key),
        "cipher_suite": identity.cipher_suite,
        "challenge": b64(challenge),
        "signature": b64(sign(identity, challenge)),
    }
    return httpx.post(f"{url}/v1/auth/register", json=body, timeout=30)


def rows(service: DeliveryService, table: str) -> int:
    with service.db.transaction() as tx:
        return int(tx.execute(f"SELECT COUNT(*) FROM {table}")[0][0])


def _sqlite_path(service: DeliveryService) -> Path | None:
    if service.db.dialect != "sqlite":
        return None
    with service.db.transaction() as tx:
        return Path(str(tx.execute("PRAGMA database_list")[0][2]))


def test_a_flood_of_challenges_writes_nothing(ds: Cluster) -> None:
    service = ds.services[0]
    challenge_of(ds.url)  # the first one of a deployment makes its MAC key
    path = _sqlite_path(service)
    watcher = sqlite3.connect(path) if path is not None else None
    version = watcher.execute("PRAGMA data_version").fetchone() if watcher else None
    issued = {challenge_of(ds.url) for _ in range(200)}
    assert len(issued) == 200
    assert rows(service, "challenges") == 0
    assert rows(service, "ds_secrets") == 1
    if watcher is not None:
        # No transaction of the DS's connection changed the database file meanwhile.
        assert watcher.execute("PRAGMA data_version").fetchone() == version
        watcher.close()
    # They all work, once.
    alice = Member.new(ds.url, "alice")
    challenge = issued.pop()
    assert login(ds.url, alice.identity, challenge).status_code == 200
    response = login(ds.url, alice.identity, challenge)
    assert response.status_code == 401 and "unknown or expired" in response.json()["error"]
    assert rows(service, "challenges") >= 1  # consumed ones are kept until they expire


def test_any_node_takes_any_nodes_challenge_once(ds: Cluster) -> None:
    """(With PostgreSQL, ``ds.url`` alternates between two nodes.)"""
    alice = Member.new(ds.url, "alice")
    for _ in range(4):
        challenge = challenge_of(ds.url)
        assert login(ds.url, alice.identity, challenge).status_code == 200
        for _ in range(2):
            assert login(ds.url, alice.identity, challenge).status_code == 401
    # A sweep keeps the record of a used challenge until the challenge expires.
    ds.services[0].sweep()
    assert login(ds.url, alice.identity, challenge).status_code == 401


def test_altered_and_made_up_challenges_are_refused(ds: Cluster) -> None:
    alice = Member.new(ds.url, "alice")
    good = challenge_of(ds.url)
    for i in (0, 17, len(good) - 1):  # nonce, expiry, tag
        altered = bytearray(good)
        altered[i] ^= 1
        response = login(ds.url, alice.identity, bytes(altered))
        assert response.status_code == 401 and "unknown or expired" in response.json()["error"]
    for made_up in (b"", good[:-1], good + b"\x00", b"\x00" * len(good)):
        assert login(ds.url, alice.identity, made_up).status_code == 401
    eve = SigningIdentity.generate(b"eve")
    assert register(ds.url, eve, bytes(40)).status_code == 401
    # The untouched one still works.
    assert login(ds.url, alice.identity, good).status_code == 200


def _server(tmp_path: Path, name: str, **options: Any) -> tuple[DeliveryService, InProcessServer]:
    service = DeliveryService(SQLiteDatabase(tmp_path / f"{name}.sqlite"), **options)
    return service, InProcessServer(create_app(service))


@pytest.mark.parametrize("same", [True, False], ids=["shared-secret", "other-secret"])
def test_nodes_given_one_secret_share_challenges(tmp_path: Path, same: bool) -> None:
    """The operator's ``challenge_secret``: nodes given the same one take each other's
    challenges (each has its own database here); another secret does not."""
    _, a_server = _server(tmp_path, "a", challenge_secret=b"k" * 32)
    _, b_server = _server(tmp_path, "b", challenge_secret=(b"k" if same else b"j") * 32)
    with a_server as a, b_server as b:
        eve = SigningIdentity.generate(b"eve")
        response = register(b.url, eve, challenge_of(a.url))
        assert response.status_code == (200 if same else 401), response.text
