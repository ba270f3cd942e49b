"""End to end over loopback: registration, KeyPackages, ordering, fan-out, Welcome release."""

from __future__ import annotations

import threading

import pytest
from ds_helpers import Cluster, Member

from mlspy.ds.client import DSConflict, DSRequestError


def test_group_life_over_the_ds(ds: Cluster) -> None:
    alice, bob, carol = (Member.new(ds.url, n) for n in ("alice", "bob", "carol"))
    alice.create()
    alice.add(bob, carol)
    assert bob.sync() == ["joined"] and carol.sync() == ["joined"]
    assert bob.group and carol.group and alice.group
    assert bob.group.epoch_authenticator == alice.group.epoch_authenticator
    bob.send(b"hello from bob")
    alice.sync()
    carol.sync()
    assert alice.received == [b"hello from bob"] == carol.received
    assert bob.sync() == []  # no echo of our own messages


def test_identity_binding_and_tokens(ds: Cluster) -> None:
    Member.new(ds.url, "dave")
    impostor = Member.__new__(Member)
    from mlspy.ds.client import DSClient
    from mlspy.group import SigningIdentity

    other_key = SigningIdentity.generate(b"dave")
    client = DSClient(ds.url, other_key)
    with pytest.raises(DSRequestError) as info:
        client.register()
    assert info.value.status == 409  # the identity is bound to another key
    with pytest.raises(DSRequestError) as info:
        client.login()
    assert info.value.status == 401
    del impostor


def test_concurrent_claims_of_one_key_package(ds: Cluster) -> None:
    owner = Member.new(ds.url, "owner", key_packages=1)
    claimers = [Member.new(ds.url, f"claimer{i}", key_packages=0) for i in range(8)]
    results: list[bytes | Exception] = []

    def claim(m: Member) -> None:
        try:
            results.append(m.client.claim_key_package(b"owner"))
        except Exception as exc:  # the losers get 404
            results.append(exc)

    threads = [threading.Thread(target=claim, args=(m,)) for m in claimers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if isinstance(r, bytes)]
    assert len(won) == 1
    assert all(isinstance(r, DSRequestError) and r.status == 404 for r in results if r not in won)
    assert owner.client.count_key_packages() == (0, False)


def test_ten_members_commit_the_same_epoch(ds: Cluster) -> None:
    members = [Member.new(ds.url, f"m{i}") for i in range(10)]
    members[0].create()
    members[0].add(*members[1:])
    for m in members[1:]:
        m.sync()
    outs = [m.group.commit() for m in members if m.group]  # type: ignore[union-attr]
    results: list[int | Exception] = [0] * 10

    def submit(i: int) -> None:
        g = members[i].group
        assert g is not None
        try:
            results[i] = members[i].client.submit(g.group_id, outs[i].commit)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in enumerate(results) if isinstance(r, int)]
    assert len(winners) == 1
    for i, r in enumerate(results):
        if i != winners[0]:
            assert isinstance(r, DSConflict) and r.epoch == 2
    # Losers recover: drop their pending commit and process the winner's.
    w = winners[0]
    members[w].group.merge_pending_commit()  # type: ignore[union-attr]
    for i, m in enumerate(members):
        if i != w:
            assert m.group is not None
            m.group.clear_pending_commit()
            m.sync()
    auths = {m.group.epoch_authenticator for m in members if m.group}
    assert len(auths) == 1
    members[3].send(b"after the race")
    members[5].sync()
    assert members[5].received == [b"after the race"]


def test_welcome_of_a_losing_commit_is_never_delivered(ds: Cluster) -> None:
    alice, bob, carol, dave = (Member.new(ds.url, n) for n in ("alice", "bob", "carol", "dave"))
    alice.create()
    alice.add(bob)
    bob.sync()
    # bob commits first (empty); alice's add of carol for the same epoch loses.
    assert bob.group is not None and alice.group is not None
    out_b = bob.group.commit()
    bob.client.submit(bob.group.group_id, out_b.commit)
    bob.group.merge_pending_commit()
    with pytest.raises(DSConflict):
        alice.add(carol)
    alice.group.clear_pending_commit()
    assert carol.sync() == []  # the losing Welcome never reaches carol
    alice.sync()
    alice.add(dave)  # after catching up, alice's next add wins
    assert dave.sync() == ["joined"]


def test_offline_member_catches_up_in_order(ds: Cluster) -> None:
    alice, bob = Member.new(ds.url, "alice"), Member.new(ds.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()
    assert alice.group is not None
    for _i in range(50):
        out = alice.group.commit()
        alice.client.submit(alice.group.group_id, out.commit)
        alice.group.merge_pending_commit()
        alice.send(b"epoch %d" % alice.group.epoch)
    bob.sync()
    assert bob.group is not None and bob.group.epoch == alice.group.epoch == 51
    assert bob.received == [b"epoch %d" % e for e in range(2, 52)]
    assert bob.group.epoch_authenticator == alice.group.epoch_authenticator


def test_resubmitted_accepted_commit_is_idempotent(ds: Cluster) -> None:
    """A sender whose answer was lost resubmits the same commit: the DS answers with the
    original sequence number and queues nothing twice; anything else for that epoch is 409."""
    alice, bob = (Member.new(ds.url, n) for n in ("alice", "bob"))
    alice.create()
    alice.add(bob)
    assert bob.sync() == ["joined"]
    assert alice.group is not None and bob.group is not None
    gid = alice.group.group_id
    out = alice.group.commit([], force_path=True)
    seq = alice.client.submit(gid, out.commit)
    assert alice.client.submit(gid, out.commit) == seq
    alice.group.clear_pending_commit()
    other = alice.group.commit([], force_path=True)  # a different commit for the same epoch
    with pytest.raises(DSConflict):
        alice.client.submit(gid, other.commit)
    with pytest.raises(DSConflict):
        bob.client.submit(gid, out.commit)  # the same bytes from another member
    events = bob.sync()
    assert len(events) == 1 and bob.group.epoch == 2
