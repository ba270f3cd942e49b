"""No object shows secret bytes in its repr/str, and no secret reaches the logs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import Add, Proposal
from mlspy.schedule.secret_tree import RatchetType
from mlspy.tree.math import LeafIndex


def _secrets_of(group: Group, extra: list[bytes]) -> set[bytes]:
    epoch = group._epoch
    found = {getattr(epoch.secrets, f.name) for f in dataclasses.fields(epoch.secrets)}
    if epoch.private is not None:
        found |= set(epoch.private.keys.values())
    found |= set(epoch.secret_tree._nodes.values())
    for r in epoch.secret_tree._ratchets.values():
        found.add(r.secret)
        for key, nonce in (r.retained or {}).values():
            found |= {key, nonce}
    found.add(group.identity.signature_private_key)
    found |= set(extra)
    return {s for s in found if len(s) >= 16}


def _leaks(text: str, secrets: set[bytes]) -> list[str]:
    return [s.hex() for s in secrets if s.hex() in text or repr(s)[2:-1] in text]


def _scenario() -> tuple[Group, Group, list[object], set[bytes]]:
    alice = Group.create(SigningIdentity.generate(b"alice"))
    bundle = create_key_package(SigningIdentity.generate(b"bob"))
    out = alice.commit([Proposal(Add(bundle.key_package))], force_path=True)
    pending = alice._pending
    alice.merge_pending_commit()
    bob = Group.join(out.welcome or b"", bundle)
    bob.process(alice.encrypt_application(b"x"))
    alice.encrypt_application(b"y")
    lookup = bob._epoch.secret_tree.lookup(LeafIndex(0), RatchetType.APPLICATION, 3)
    objects: list[object] = [
        alice._epoch,
        alice._epoch.secrets,
        alice._epoch.private,
        bob._epoch,
        bob._epoch.private,
        bundle,
        alice.identity,
        pending,
        lookup,
        lookup.key,
        *bob._epoch.secret_tree._ratchets.values(),
    ]
    extra = [
        bundle.init_private_key,
        bundle.encryption_private_key,
        lookup.key.key,
        lookup.key.nonce,
    ]
    secrets = _secrets_of(alice, extra) | _secrets_of(bob, [])
    return alice, bob, objects, secrets


def test_no_secret_in_any_repr() -> None:
    _, _, objects, secrets = _scenario()
    assert len(secrets) > 10
    for obj in objects:
        for text in (repr(obj), str(obj)):
            assert not _leaks(text, secrets), f"{type(obj).__name__} shows a secret"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer(create_app(DeliveryService(SQLiteDatabase(tmp_path / "ds.db")))) as s:
        yield s


def test_no_secret_reaches_the_logs(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from mlspy.client import Client

    caplog.set_level(logging.DEBUG)

    async def scenario() -> list[Client]:
        alice, bob = Client(server.url, "alice"), Client(server.url, "bob")
        await alice.start()
        await bob.start()
        gid = await alice.create_group()
        await alice.invite(gid, "bob")
        await bob.sync()
        await bob.send(gid, "secret plans")
        await alice.sync()
        await alice.remove(gid, "nobody")  # a no-op intent
        return [alice, bob]

    clients = asyncio.run(scenario())
    secrets: set[bytes] = set()
    for c in clients:
        secrets.add(c.identity.signature_private_key)
        for gid in c.group_ids():
            secrets |= _secrets_of(c.group(gid).group, [])
        for b in c.groups.key_packages():
            secrets |= {b.init_private_key, b.encryption_private_key}
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret plans" not in logs
    assert not _leaks(logs, secrets)
