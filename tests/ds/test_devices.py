"""Users with many devices, over a real DS on loopback (issue 17): enrolment with a pairing
code, groups of users, every device seeing the conversation, revocation, removal of a user."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from ds_helpers import Cluster, status_of

from mlspy.client import Client, Event
from mlspy.ds.client import DSClient, DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.errors import MLSError
from mlspy.messages import MLSMessage

FAST = {"poll_interval": 0.1}


async def _until(client: Client, kind: str, group_id: bytes | None = None) -> Event:
    return await client.wait_for(kind, group_id, timeout=20)


async def _message(client: Client, text: str) -> Event:
    async def find() -> Event:
        while True:
            event = await client.next_event(None)
            if event.kind == "message" and event.text == text:
                return event

    return await asyncio.wait_for(find(), 20)


async def _joined_all(client: Client, groups: list[bytes]) -> None:
    seen: set[bytes] = set()
    while seen != set(groups):
        seen.add((await _until(client, "joined")).group_id)


async def _enrol(server: str, existing: Client, device: str) -> Client:
    code = await existing.pairing_code()
    new = Client(server, existing.name, device=device, pairing_code=code, **FAST)
    await new.start()
    return new


def _recording(client: Client) -> list[bytes]:
    """The messages ``client`` submits from now on, as they leave it."""
    sent: list[bytes] = []
    real = client._post  # on the WebSocket or over HTTP

    async def submit(group_id: bytes, message: bytes, **kwargs: Any) -> int:
        sent.append(message)
        return await real(group_id, message, **kwargs)

    client._post = submit  # type: ignore[method-assign]
    return sent


def test_a_user_with_many_devices(ds: Cluster) -> None:
    """alice has three devices in five of bob's groups; a fourth is enrolled and ends up in
    all five, reading new messages; alice's messages from one device appear on the others;
    one device is revoked, removed from all five, and decrypts nothing sent afterwards; bob
    removes alice from a group and every device of hers is gone from it."""

    async def scenario() -> None:
        phone = Client(ds.url, "alice", device="phone", **FAST)
        bob = Client(ds.url, "bob", **FAST)
        await phone.start()
        await bob.start()
        laptop = await _enrol(ds.url, phone, "laptop")
        tablet = await _enrol(ds.url, laptop, "tablet")
        alice = [phone, laptop, tablet]
        assert sorted(await tablet.devices()) == ["laptop", "phone", "tablet"]

        groups = [await bob.create_group() for _ in range(5)]
        for gid in groups:
            await bob.invite(gid, "alice")  # every device of alice's
        for device in alice:
            await _joined_all(device, groups)
        assert bob.members(groups[0]) == ("bob", "alice")

        desk = await _enrol(ds.url, laptop, "desk")
        await _joined_all(desk, groups)  # added by alice's lowest device in each group
        alice.append(desk)
        for gid in groups:
            await bob.send(gid, f"hello {gid.hex()[:4]}")
            assert (await _message(desk, f"hello {gid.hex()[:4]}")).group_id == gid

        await laptop.send(groups[0], "from my laptop")
        for device in (phone, tablet, desk):
            event = await _message(device, "from my laptop")
            assert (event.sender, event.device, event.group_id) == ("alice", "laptop", groups[0])
        assert (await _message(bob, "from my laptop")).sender == "alice"

        await phone.revoke("tablet")
        for gid in groups:  # phone (alice's lowest leaf) removes the tablet everywhere
            await _until_devices(bob, gid, "alice", ("phone", "laptop", "desk"))
        assert sorted(await phone.devices()) == ["desk", "laptop", "phone"]
        with pytest.raises(DSRequestError) as info:
            await asyncio.to_thread(tablet.ds.login)
        assert info.value.status == 401
        # Taken as it leaves bob: the DS deletes a message once every recipient acknowledged
        # it (retention), which may well be before we could look it up there.
        sent = _recording(bob)
        await bob.send(groups[1], "not for the tablet")
        assert (await _message(desk, "not for the tablet")).group_id == groups[1]
        secret = sent[-1]
        with pytest.raises(MLSError):
            tablet.group(groups[1]).group.process(MLSMessage.decode(secret))

        await bob.remove(groups[2], "alice")
        for device in (phone, laptop, desk):
            await _until(device, "removed", groups[2])
            assert groups[2] not in device.group_ids()
        assert bob.members(groups[2]) == ("bob",)
        for client in [*alice, bob]:
            await client.stop()

    asyncio.run(scenario())


async def _until_devices(
    client: Client, gid: bytes, user: str, devices: tuple[str, ...], timeout: float = 20
) -> None:
    """Wait until ``client`` sees exactly ``devices`` of ``user`` in the group."""
    deadline = asyncio.get_running_loop().time() + timeout
    while sorted(_devices_of(client, gid, user)) != sorted(devices):
        assert asyncio.get_running_loop().time() < deadline, _devices_of(client, gid, user)
        await client.sync()
        await asyncio.sleep(0.1)


def _devices_of(client: Client, gid: bytes, user: str) -> tuple[str, ...]:
    from mlspy.client.sdk import member_devices

    return member_devices(client.group(gid).group).get(user, ())


def test_a_second_device_needs_a_pairing_code(ds: Cluster) -> None:
    """A name's further device is refused without a pairing code of that user, or with a
    wrong, used or someone else's one."""

    async def scenario() -> None:
        phone = Client(ds.url, "alice", device="phone", **FAST)
        eve = Client(ds.url, "eve", **FAST)
        await phone.start()
        await eve.start()
        for code in (None, "AAAA-BBBB-CC", await eve.pairing_code()):
            thief = Client(ds.url, "alice", device="evil", pairing_code=code, **FAST)
            with pytest.raises(DSRequestError) as info:
                await thief.start()
            assert info.value.status == 403
        code = await phone.pairing_code()
        laptop = Client(ds.url, "alice", device="laptop", pairing_code=code, **FAST)
        await laptop.start()
        again = Client(ds.url, "alice", device="other", pairing_code=code, **FAST)
        with pytest.raises(DSRequestError) as info:
            await again.start()
        assert info.value.status == 403  # single use
        for client in (phone, eve, laptop):
            await client.stop()

    asyncio.run(scenario())


def test_every_device_lost_the_user_recovers(ds: Cluster) -> None:
    """alice loses her phone and her laptop. On a new device her recovery secret brings her
    user back: both old devices are revoked (they cannot log in) and removed from her groups,
    the new device rejoins them and talks with bob. Nobody else could have done it: the
    secret rotated, and a wrong one is refused."""
    from mlspy.storage import MemoryStore

    async def scenario() -> None:
        phone = Client(ds.url, "alice", device="phone", **FAST)
        bob = Client(ds.url, "bob", **FAST)
        await phone.start()
        await bob.start()
        secret = phone.new_recovery_secret
        assert secret is not None
        laptop = await _enrol(ds.url, phone, "laptop")
        assert laptop.new_recovery_secret is None  # the user's secret is the phone's
        groups = [await bob.create_group() for _ in range(2)]
        for gid in groups:
            await bob.invite(gid, "alice")
        for device in (phone, laptop):
            await _joined_all(device, groups)
        lost = [phone, laptop]
        for device in lost:
            await device.stop()

        eve = Client(ds.url, "alice", device="eve", store=MemoryStore(), **FAST)
        with pytest.raises(DSRequestError):
            await eve.recover("WRONG-SECRET")
        new = Client(ds.url, "alice", device="new", store=MemoryStore(), **FAST)
        assert sorted(await new.recover(secret)) == sorted(groups)
        for device in lost:  # revoked: their keys no longer log in
            with pytest.raises(DSRequestError) as info:
                await asyncio.to_thread(DSClient(ds.url, device.identity).login)
            assert info.value.status == 401
        for gid in groups:
            await _until_devices(bob, gid, "alice", ("new",))
            await bob.send(gid, "welcome back")
            assert (await _message(new, "welcome back")).group_id == gid
        await new.send(groups[0], "thanks")
        assert (await _message(bob, "thanks")).device == "new"
        assert await new.devices() == ["new"]
        for client in (new, bob):
            await client.stop()

    asyncio.run(scenario())


def test_x509_devices_of_one_user(tmp_path: Path) -> None:
    """X.509: a device's certificate names it with a URI SAN ``mlspy-device:<user>/<device>``;
    a second device of the user needs a pairing code like a Basic one."""
    from mlspy.credentials import X509Validator
    from mlspy.ds.app import create_app
    from mlspy.ds.service import DeliveryService
    from x509_helpers import make_ca, x509_identity

    ca_key, ca = make_ca()
    service = DeliveryService(
        SQLiteDatabase(tmp_path / "x.db"), x509=X509Validator([ca]), registration="x509"
    )
    with InProcessServer(create_app(service)) as x509_ds:
        phone = DSClient(
            x509_ds.url, x509_identity(ca_key, ca, "alice@example.org", device="phone")
        )
        phone.register()
        phone.login()
        laptop_id = x509_identity(ca_key, ca, "alice@example.org", device="laptop")
        with pytest.raises(DSRequestError) as info:
            DSClient(x509_ds.url, laptop_id).register()
        assert info.value.status == 403 and "pairing code" in str(info.value)
        DSClient(x509_ds.url, laptop_id).register(pairing_code=phone.pairing_code())
        devices = {d["device"]: d["identity"] for d in phone.devices()}
        assert devices == {
            "phone": b"alice@example.org/phone",
            "laptop": b"alice@example.org/laptop",
        }


def test_hard_cases_for_a_user_with_two_devices(ds: Cluster) -> None:
    """The SDK's hard cases with a two-device user: both devices commit for the same epoch
    (one loses, processes the winner, retries); a device offline while the others talk and
    commit catches up in order; a device that lost a group's state rejoins by resync and
    replaces its own leaf. Everyone ends in the same epoch with the same authenticator."""

    async def scenario() -> None:
        phone = Client(ds.url, "alice", device="phone", **FAST)
        bob = Client(ds.url, "bob", **FAST)
        carol = Client(ds.url, "carol", **FAST)
        dave = Client(ds.url, "dave", **FAST)
        for client in (phone, bob, carol, dave):
            await client.start()
        laptop = await _enrol(ds.url, phone, "laptop")
        gid = await bob.create_group()
        await bob.invite(gid, "alice")
        for device in (phone, laptop):
            await _joined_all(device, [gid])

        # A race between alice's own devices.
        await asyncio.gather(phone.invite(gid, "carol"), laptop.invite(gid, "dave"))
        await _joined_all(carol, [gid])
        await _joined_all(dave, [gid])

        # The laptop goes offline; the others talk and commit.
        await laptop.stop()
        await bob.send(gid, "while you were away")
        await phone.update(gid)
        await carol.send(gid, "and then this")
        back = Client(ds.url, "alice", device="laptop", store=laptop.store, **FAST)
        await back.start()
        assert (await _message(back, "while you were away")).sender == "bob"
        assert (await _message(back, "and then this")).sender == "carol"

        # The phone loses the group's state (not its identity) and rejoins by resync.
        phone.groups.delete_group(gid)
        phone._handles.clear()
        await phone.join_external(gid, resync=True)
        await bob.sync()  # bob speaks in the epoch of the resync (the rejoined phone has no other)
        await bob.send(gid, "all here?")
        for client in (phone, back, carol, dave):
            assert (await _message(client, "all here?")).sender == "bob"
        everyone = (phone, back, bob, carol, dave)
        for client in everyone:
            await client.sync()
        assert len({c.group(gid).group.epoch_authenticator for c in everyone}) == 1
        assert sorted(_devices_of(bob, gid, "alice")) == ["laptop", "phone"]
        for client in everyone:
            await client.stop()

    asyncio.run(scenario())


def test_a_device_rotates_its_signature_key(ds: Cluster) -> None:
    """alice's phone rotates its key: the AS binds the device to the new key, a commit in each
    group carries it (members validate it against the AS), the old key no longer logs in, the
    phone keeps talking in every group and new invitations use its new KeyPackages. A second
    rotation interrupted after the new key was stored is finished at the next start."""
    from mlspy.client import records as rec
    from mlspy.client.sdk import _encode_identity
    from mlspy.group import SigningIdentity

    async def scenario() -> None:
        phone = Client(ds.url, "alice", device="phone", **FAST)
        bob = Client(ds.url, "bob", **FAST)
        await phone.start()
        await bob.start()
        laptop = await _enrol(ds.url, phone, "laptop")
        groups = [await bob.create_group() for _ in range(2)]
        for gid in groups:
            await bob.invite(gid, "alice")
        for device in (phone, laptop):
            await _joined_all(device, groups)
        old = phone.identity

        await phone.rotate_key()
        assert phone.identity.signature_key != old.signature_key
        assert phone.identity.credential == old.credential
        for gid in groups:
            await _until_key(bob, gid, phone.identity.signature_key)
            await phone.send(gid, f"new key in {gid.hex()[:4]}")
            message = await _message(bob, f"new key in {gid.hex()[:4]}")
            assert (message.sender, message.device) == ("alice", "phone")
            assert (await _message(laptop, f"new key in {gid.hex()[:4]}")).device == "phone"
        with pytest.raises(DSRequestError) as info:
            await asyncio.to_thread(DSClient(ds.url, old).login)
        assert info.value.status == 401
        third = await bob.create_group()
        await bob.invite(third, "alice")
        await _joined_all(phone, [third])
        assert _key_of(bob, third, b"alice/phone") == phone.identity.signature_key

        # Interrupted: the next key is stored, the AS never asked. A restart finishes it.
        await phone.stop()
        pending = SigningIdentity.generate(b"alice/phone")
        phone.store.write({rec.NEXT_IDENTITY: (_encode_identity(pending), None)})
        again = Client(ds.url, "alice", device="phone", store=phone.store, **FAST)
        await again.start()
        assert again.identity.signature_key == pending.signature_key
        for gid in groups:
            await _until_key(bob, gid, pending.signature_key)
        await again.send(groups[0], "still me")
        assert (await _message(bob, "still me")).sender == "alice"
        for client in (again, laptop, bob):
            await client.stop()

    asyncio.run(scenario())


def _key_of(client: Client, gid: bytes, identity: bytes) -> bytes | None:
    return next(
        (
            m.signature_key
            for m in client.group(gid).group.members()
            if m.credential.identity == identity
        ),
        None,
    )


async def _until_key(client: Client, gid: bytes, key: bytes, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while _key_of(client, gid, b"alice/phone") != key:
        assert asyncio.get_running_loop().time() < deadline, "the new key never arrived"
        await client.sync()
        await asyncio.sleep(0.1)


def test_nobody_revokes_or_rotates_someone_elses_device(ds: Cluster) -> None:
    """Eve, a registered user, attacks alice's devices over the raw HTTP API: revoking one
    (404: her user has no such device), rotating her own device onto a credential naming
    alice's device (400), rotating onto a key she does not hold (401), rotating onto a key
    already registered (409). Alice's devices keep logging in with their keys."""
    from mlspy.group import SigningIdentity

    phone = DSClient(ds.url, SigningIdentity.generate(b"alice/phone"))
    phone.register()
    phone.login()
    laptop = DSClient(ds.url, SigningIdentity.generate(b"alice/laptop"))
    laptop.register(pairing_code=phone.pairing_code())
    eve = DSClient(ds.url, SigningIdentity.generate(b"eve"))
    eve.register()
    eve.login()

    assert status_of(lambda: eve.revoke_device("laptop")) == 404
    assert status_of(lambda: eve.rotate_key(SigningIdentity.generate(b"alice/laptop"))) == 400
    unheld = SigningIdentity.generate(b"eve")
    stolen = replace(
        unheld, signature_private_key=SigningIdentity.generate(b"eve").signature_private_key
    )
    assert status_of(lambda: eve.rotate_key(stolen)) == 401
    assert status_of(lambda: eve.rotate_key(laptop.identity)) in (400, 409)
    assert {d["device"] for d in phone.devices()} == {"phone", "laptop"}
    laptop.login()
    phone.login()
