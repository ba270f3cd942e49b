"""What the DS keeps, and for how long (``mlspy.ds.retention``), over a real server.

Delivered messages go at the ack that delivers them; the sweep deletes what nobody fetched
within ``retention``, expired KeyPackages, idle groups, spent challenges, tokens and codes; a
group goes when its last member leaves. Each test then checks what members care about: the
group goes on, rejected commits are still undone, nothing undelivered is lost early.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from ds_helpers import Cluster, Member, status_of

from mlspy.ds.service import DeliveryService
from mlspy.group import create_key_package

DAY = 86400.0


def count(service: DeliveryService, table: str, where: str = "", args: tuple[Any, ...] = ()) -> int:
    """Rows in ``table`` (the operator looking at the database)."""
    with service.db.transaction() as tx:
        return int(tx.execute(f"SELECT COUNT(*) FROM {table} {where}", args)[0][0])


def trio(ds: Cluster) -> tuple[Member, Member, Member]:
    alice, bob, carol = (Member.new(ds.url, n) for n in ("alice", "bob", "carol"))
    alice.create()
    alice.add(bob, carol)
    assert bob.sync() == ["joined"] and carol.sync() == ["joined"]
    return alice, bob, carol


def test_a_message_goes_once_every_recipient_acknowledged_it(ds: Cluster) -> None:
    service = ds.services[0]
    alice, bob, carol = trio(ds)
    gid = bob.group.group_id if bob.group else b""
    seq = alice.send(b"hello")
    bob.sync()
    # carol has not fetched it yet: it stays.
    assert count(service, "messages", "WHERE seq = ?", (seq,)) == 1
    carol.sync()
    assert carol.received == [b"hello"]
    assert count(service, "messages", "WHERE seq = ?", (seq,)) == 0
    # Of the group, only its latest commit is kept (to undo it, or answer a retry); the
    # Welcome went with its ack.
    kinds = _kinds(service, gid)
    assert kinds == ["commit"]
    # A message with no recipient is not kept at all.
    solo = Member.new(ds.url, "dave")
    solo.create()
    seq = solo.send(b"to nobody")
    assert count(service, "messages", "WHERE seq = ?", (seq,)) == 0


def _kinds(service: DeliveryService, group_id: bytes) -> list[str]:
    with service.db.transaction() as tx:
        rows = tx.execute("SELECT kind FROM messages WHERE group_id = ? ORDER BY seq", (group_id,))
    return [str(r[0]) for r in rows]


def test_delivered_commits_stay_until_the_retention_sweep(ds: Cluster) -> None:
    """A committer whose answer was lost asks later whether its commit won, possibly after
    newer commits: delivered commits stay until retention, then the sweep takes them."""
    service = ds.services[0]
    alice, bob, carol = trio(ds)
    assert alice.group is not None
    gid = alice.group.group_id
    for _ in range(3):
        out = alice.group.commit([])
        alice.client.submit(gid, out.commit)
        alice.group.merge_pending_commit()
        bob.sync()
        carol.sync()
    kept = _kinds(service, gid)
    assert set(kept) == {"commit"} and len(kept) >= 3  # the add's commit and these three
    alice.send(b"after three commits")
    bob.sync()
    carol.sync()
    assert bob.received[-1] == carol.received[-1] == b"after three commits"
    assert _kinds(service, gid) == kept  # the delivered message went at its ack
    service.sweep(time.time() + service.retention + 60)
    assert _kinds(service, gid) == []


@pytest.mark.parametrize("ds_options", [{"sweep_batch": 2}], ids=["batch2"])
def test_undelivered_messages_go_after_retention(ds: Cluster) -> None:
    """carol never fetches. Within retention her queue is whole; after it, the sweep
    (batches of 2 rows) deletes what she never fetched, and the group goes on."""
    service = ds.services[0]
    alice, bob, carol = trio(ds)
    seqs = [alice.send(f"m{i}".encode()) for i in range(5)]
    bob.sync()
    assert service.sweep(time.time() + service.retention - 60)["messages"] == 0
    assert [i["seq"] for i in carol.client.fetch(carol.last_seq)] == seqs
    done = service.sweep(time.time() + service.retention + 60)
    assert done["messages"] >= 5
    assert count(service, "messages", "WHERE seq IN (?, ?, ?, ?, ?)", tuple(seqs)) == 0
    assert carol.client.fetch(carol.last_seq) == []
    # The members go on (their tokens were swept too: the client logs in again).
    bob.send(b"still here")
    alice.sync()
    carol.sync()
    assert alice.received[-1] == carol.received[-1] == b"still here"


def test_the_sweep_removes_expired_key_packages_and_spent_credentials(ds: Cluster) -> None:
    service = ds.services[0]
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    short = [create_key_package(alice.identity, lifetime=3600) for _ in range(3)]
    alice.client.upload_key_packages(short)
    bob.client.claim_key_package(b"alice")  # a claim record, and a claimed KeyPackage
    alice.client.pairing_code()
    bob.client.create_invite()
    now = time.time()
    stored = count(service, "key_packages")
    # Within their lifetimes nothing goes but what expired.
    assert service.sweep(now)["key_packages"] == 0
    done = service.sweep(now + 2 * 3600)
    assert done["key_packages"] == 3  # the short-lived ones; the 2 x 2 others live on
    assert count(service, "key_packages") == stored - 3
    assert done["challenges"] >= 4 and count(service, "challenges") == 0  # consumed logins
    assert done["tokens"] >= 2 and count(service, "tokens") == 0
    assert done["pairings"] == 1 and count(service, "pairings") == 0
    assert done["key_package_claims"] == 1 and count(service, "key_package_claims") == 0
    assert count(service, "invites") == 1  # a week to use it
    assert service.sweep(now + 9 * DAY)["invites"] == 1
    assert count(service, "invites") == 0
    # Past their 90 days every KeyPackage has gone, claimed or not.
    service.sweep(now + 91 * DAY)
    assert count(service, "key_packages") == 0
    assert count(service, "key_package_times") == 0
    # Everyone logs in again and goes on.
    alice.client.login()
    alice.client.upload_key_packages([create_key_package(alice.identity)])
    assert bob.client.claim_key_package(b"alice")


def test_a_group_goes_when_its_last_member_leaves(ds: Cluster) -> None:
    service = ds.services[0]
    alice, bob, carol = trio(ds)
    assert alice.group is not None
    gid = alice.group.group_id
    alice.send(b"queued for everyone")
    for m in (alice, bob):
        m.client.leave_group(gid)
    assert count(service, "groups", "WHERE group_id = ?", (gid,)) == 1  # carol is on it
    carol.client.leave_group(gid)
    for table in ("groups", "group_members", "group_undo", "group_meta", "messages"):
        assert count(service, table, "WHERE group_id = ?", (gid,)) == 0, table
    assert status_of(lambda: alice.client.group_info(gid)) == 404


def test_an_idle_group_goes_after_group_retention(ds: Cluster) -> None:
    service = ds.services[0]
    alice, bob, _ = trio(ds)
    assert alice.group is not None
    gid = alice.group.group_id
    assert service.sweep(time.time() + 300 * DAY)["groups"] == 0
    assert service.sweep(time.time() + service.group_retention + DAY)["groups"] == 1
    assert count(service, "groups", "WHERE group_id = ?", (gid,)) == 0
    assert status_of(lambda: bob.client.group_info(gid)) == 404


def test_undo_still_works_when_delivered_messages_are_gone(ds: Cluster) -> None:
    """Once someone but its committer spoke in the new epoch — a message everyone fetched,
    so deleted — a commit stands; a commit the members fetched (and acknowledged) but
    reject is still undone."""
    service = ds.services[0]
    alice, bob, carol = trio(ds)
    assert alice.group is not None
    gid = alice.group.group_id
    epoch = alice.group.epoch
    out = alice.group.commit([])
    alice.client.submit(gid, out.commit)
    alice.group.merge_pending_commit()
    bob.sync()
    carol.sync()
    bob.send(b"I follow the new epoch")
    alice.sync()
    carol.sync()
    assert count(service, "messages", "WHERE group_id = ? AND kind = 'application'", (gid,)) == 0
    assert status_of(lambda: carol.client.reject_commit(gid, epoch)) == 409
    # A further commit, fetched and acknowledged, then rejected: undone.
    out = alice.group.commit([])
    alice.client.submit(gid, out.commit)
    alice.group.merge_pending_commit()
    for m in (bob, carol):
        items = m.client.fetch(m.last_seq)
        m.client.ack([i["seq"] for i in items])
    assert bob.client.reject_commit(gid, epoch + 1) > 0
    assert count(service, "groups", "WHERE group_id = ? AND epoch = ?", (gid, epoch + 1)) == 1
