"""Issue 20: the post-quantum suites end to end — SDK clients over a real DS on loopback
(groups, invites, messages, commits, removal, state at rest across a restart), a DS that
requires post-quantum suites (a classical device, KeyPackage or group is refused; post-quantum
ones work), the sizes the DS must take (ML-DSA-87 KeyPackages and commits), and
``mlspy demo --suite``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlspy.client import Client, Event
from mlspy.crypto.pq_suites import PQ_SUITES
from mlspy.ds.app import create_app
from mlspy.ds.client import DSClient, DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import MLSMessage
from mlspy.storage import SQLiteStore

XWING_ED25519 = 83  # ts-mls's MLS_256_XWING_AES256GCM_SHA512_Ed25519
MLKEM1024_MLDSA87 = 0xF00B  # the draft's MLS_256_MLKEM1024_AES256GCM_SHA384_MLDSA87
ROOT = Path(__file__).resolve().parents[2]
CLI = "from mlspy.cli import run; run()"


async def _until(client: Client, kind: str, timeout: float = 10) -> Event:
    while True:
        event = await client.next_event(timeout)
        if event.kind == kind:
            return event


async def _message(client: Client, text: str) -> None:
    """Wait for the message ``text`` (others before it are passed over)."""
    while (await _until(client, "message")).text != text:
        pass


@pytest.mark.parametrize("cs", [XWING_ED25519, MLKEM1024_MLDSA87])
def test_sdk_clients_talk_in_a_post_quantum_suite(tmp_path: Path, cs: int) -> None:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    store = tmp_path / "bob.sqlite"

    async def scenario(url: str) -> None:
        async with (
            Client(url, "alice", poll_interval=0.2, cipher_suite=cs) as alice,
            Client(url, "carol", poll_interval=0.2, cipher_suite=cs) as carol,
        ):
            async with Client(
                url, "bob", poll_interval=0.2, cipher_suite=cs, store=SQLiteStore(store)
            ) as bob:
                gid = await alice.create_group()
                for member in (bob, carol):
                    await alice.invite(gid, member.name)
                    await _until(member, "joined")
                assert alice.group(gid).group.cipher_suite.id == cs
                await bob.send(gid, "post-quantum hello")
                await _message(carol, "post-quantum hello")
                await carol.update(gid)  # an UpdatePath: new ML-KEM / X-Wing node keys
                await _until(bob, "epoch")
            # bob's state at rest: a new process's client picks the group up from its store.
            async with Client(
                url, "bob", poll_interval=0.2, cipher_suite=cs, store=SQLiteStore(store)
            ) as bob:
                await alice.send(gid, "after bob's restart")
                await _message(bob, "after bob's restart")
                await alice.remove(gid, "carol")
                await _until(carol, "removed")
                await bob.send(gid, "carol is gone")
                await _message(alice, "carol is gone")
                a, b = alice.group(gid).group, bob.group(gid).group
                assert a.epoch == b.epoch and a.epoch_authenticator == b.epoch_authenticator

    with InProcessServer(create_app(service)) as server:
        asyncio.run(scenario(server.url))


def test_a_ds_that_requires_post_quantum_suites(tmp_path: Path) -> None:
    """The operator allows only post-quantum suites (``mlspy serve --cipher-suites
    post-quantum``): a classical device cannot register, nor can a post-quantum device slip in
    a classical KeyPackage or group; post-quantum clients work as usual."""
    service = DeliveryService(
        SQLiteDatabase(tmp_path / "ds.sqlite"), cipher_suites=frozenset(PQ_SUITES)
    )
    with InProcessServer(create_app(service)) as server:
        classical = DSClient(server.url, SigningIdentity.generate(b"eve", 1))
        with pytest.raises(DSRequestError) as refused:
            classical.register()
        assert refused.value.status == 403 and "not allowed" in str(refused.value)

        pq = SigningIdentity.generate(b"alice", XWING_ED25519)
        alice = DSClient(server.url, pq)
        alice.register()
        alice.login()
        alice.upload_key_packages([create_key_package(pq)])
        # A classical KeyPackage under alice's registered key: refused.
        same_key_classical = SigningIdentity(
            1, pq.credential, pq.signature_private_key, pq.signature_key
        )
        with pytest.raises(DSRequestError) as refused:
            alice.upload_key_packages([create_key_package(same_key_classical)])
        assert refused.value.status in (400, 403)
        # A group in a classical suite: refused; in a post-quantum one: registered.
        with pytest.raises(DSRequestError) as refused:
            alice.create_group(Group.create(SigningIdentity.generate(b"alice", 1)).group_info())
        assert refused.value.status in (403, 400)
        group = Group.create(pq)
        alice.create_group(group.group_info())


def test_the_ds_takes_ml_dsa_87_sized_messages(tmp_path: Path) -> None:
    """ML-DSA-87 KeyPackages (about 15 kB) and a commit adding 255 members with its Welcome
    (about 2 MB: the tree carries 8 kB per member) fit the DS's default limits."""
    cs = MLKEM1024_MLDSA87
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    with InProcessServer(create_app(service)) as server:
        me = SigningIdentity.generate(b"alice", cs)
        alice = DSClient(server.url, me)
        alice.register()
        alice.login()
        bundles = []
        for i in range(255):  # members the AS knows (the DS checks every added identity)
            member = SigningIdentity.generate(b"m%d" % i, cs)
            DSClient(server.url, member).register()
            bundles.append(create_key_package(member))
        kp_size = len(MLSMessage.wrap(bundles[0].key_package).encode())
        assert kp_size > 9000
        alice.upload_key_packages([create_key_package(me)])
        group = Group.create(me)
        alice.create_group(group.group_info())
        out = group.commit(add=[b.key_package for b in bundles])
        assert out.welcome is not None and len(out.welcome) > 2_000_000 > 1 << 20
        seq = alice.submit(
            group.group_id, out.commit, welcome=out.welcome, group_info=out.group_info
        )
        assert seq > 0


def test_demo_runs_in_an_x_wing_suite() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLI, "demo", "--suite", "MLS_256_XWING_AES256GCM_SHA512_Ed25519",
         "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout)
    assert doc["ok"] and doc["cipher_suite"] == XWING_ED25519
    unknown = subprocess.run(
        [sys.executable, "-c", CLI, "demo", "--suite", "0x9999"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert unknown.returncode == 2 and "mlspy suites" in unknown.stderr
