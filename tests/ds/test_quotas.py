"""Per-user quotas (``mlspy.ds.quotas``) over a real server: a user — all its devices
together — may keep so many undelivered bytes (then 429 until recipients fetch), groups
(then 413 until some go) and unclaimed KeyPackages (then 413 until some are claimed)."""

from __future__ import annotations

import pytest
from ds_helpers import Cluster, Member

from mlspy.ds.client import DSClient, DSRequestError
from mlspy.ds.service import DeliveryService
from mlspy.group import SigningIdentity, create_key_package


def second_device(ds: Cluster, first: Member, device: str) -> Member:
    """Another device of ``first``'s user, enrolled with a pairing code."""
    identity = SigningIdentity.generate(first.name.encode() + b"/" + device.encode())
    client = DSClient(ds.url, identity)
    client.register(pairing_code=first.client.pairing_code())
    client.login()
    m = Member(f"{first.name}/{device}", client, identity)
    m.bundles = [create_key_package(identity)]
    client.upload_key_packages(m.bundles)
    return m


def refused(fn: object) -> DSRequestError:
    with pytest.raises(DSRequestError) as info:
        fn()  # type: ignore[operator]
    return info.value


def used(service: DeliveryService, account: bytes) -> int:
    """The user's stored-bytes counter, checked against what it counts."""
    with service.db.transaction() as tx:
        counter = tx.execute("SELECT bytes FROM quota_usage WHERE account = ?", (account,))
        actual = tx.execute(
            "SELECT COALESCE(SUM(LENGTH(m.data)), 0) FROM message_usage u "
            "JOIN messages m ON m.seq = u.seq WHERE u.account = ?",
            (account,),
        )
    value = int(counter[0][0]) if counter else 0
    assert value == int(actual[0][0]), "the counter drifted from the messages it counts"
    return value


@pytest.mark.parametrize("ds_options", [{"quota_bytes": 3 << 20}], ids=["3MiB"])
def test_a_user_cannot_pile_up_megabytes_nobody_fetches(ds: Cluster) -> None:
    """Messages of 1 MB to a recipient who does not fetch: the fourth is 429 (with a
    ``Retry-After``), whichever of the user's devices sends it; once the recipient fetched,
    the user sends again."""
    service = ds.services[0]
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()
    laptop = second_device(ds, alice, "laptop")
    laptop.create()
    laptop.add(Member.new(ds.url, "carol"))  # carol does not fetch either
    big = b"x" * 1_000_000
    alice.send(big)
    alice.send(big)
    laptop.send(big)
    error = refused(lambda: alice.send(big))
    assert error.status == 429, error.body
    assert "quota" in error.body["error"] and "fetched" in error.body["error"]
    assert error.body.get("retry_after", 60) > 0
    assert refused(lambda: laptop.send(big)).status == 429  # the same user
    # Another user is not affected.
    bob.send(b"hi")
    before = used(service, b"alice")
    assert before > 3_000_000
    bob.sync()
    assert bob.received[-2:] == [big, big]
    assert used(service, b"alice") < before - 2_000_000
    alice.send(big)
    alice.send(big)


@pytest.mark.parametrize("ds_options", [{"quota_bytes": 200_000}], ids=["200k"])
def test_the_stored_bytes_counter_follows_every_deletion(ds: Cluster) -> None:
    """Acks, the last member leaving and the sweep all give the bytes back."""
    service = ds.services[0]
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()
    kept = used(service, b"alice")  # alice's latest commit (it had no recipient)
    # One message larger than the whole quota: 413 (waiting would not help).
    error = refused(lambda: alice.send(b"w" * 250_000))
    assert error.status == 413 and "quota" in error.body["error"], error.body
    assert used(service, b"alice") == kept
    for _ in range(3):
        alice.send(b"y" * 50_000)
    assert used(service, b"alice") > kept + 150_000
    bob.sync()
    assert used(service, b"alice") == kept
    alice.send(b"z" * 50_000)
    assert alice.group is not None
    for m in (alice, bob):
        m.client.leave_group(alice.group.group_id)
    assert used(service, b"alice") == 0


@pytest.mark.parametrize("ds_options", [{"quota_groups": 2}], ids=["2groups"])
def test_a_user_creates_so_many_groups(ds: Cluster) -> None:
    alice = Member.new(ds.url, "alice")
    laptop = second_device(ds, alice, "laptop")
    alice.create()
    first = alice.group
    alice.create()
    error = refused(laptop.create)
    assert error.status == 413, error.body
    assert "2 groups" in error.body["error"] and "leave" in error.body["error"]
    # Another user has their own quota.
    Member.new(ds.url, "bob").create()
    assert first is not None
    alice.client.leave_group(first.group_id)  # the last one out: the group goes
    laptop.create()


@pytest.mark.parametrize("ds_options", [{"quota_key_packages": 4}], ids=["4kps"])
def test_a_user_stores_so_many_key_packages(ds: Cluster) -> None:
    alice = Member.new(ds.url, "alice")  # 2 uploaded
    laptop = second_device(ds, alice, "laptop")  # 1 more, same user
    alice.client.upload_key_packages([create_key_package(alice.identity)])
    error = refused(
        lambda: laptop.client.upload_key_packages([create_key_package(laptop.identity)])
    )
    assert error.status == 413, error.body
    assert "quota is 4" in error.body["error"]
    # Uploading again what the DS has is not more.
    alice.client.upload_key_packages(alice.bundles)
    # A claim makes room.
    bob = Member.new(ds.url, "bob")
    bob.client.claim_key_package(b"alice")
    laptop.client.upload_key_packages([create_key_package(laptop.identity)])
