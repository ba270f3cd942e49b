"""Issue 15, attacks 1-3, over a real Delivery Service (SQLite, and two nodes on PostgreSQL):
who gets into a group, and who can stall it.

1. An outsider who knows a closed group's id asks to be added (a new-member Add proposal, raw
   HTTP): the DS refuses; in a group that takes requests, the members' SDKs do not commit it
   until the application approves; a removed member comes back only when re-added. With the
   SDK's rules hook admitting everything, the outsider gets in (the attack, mechanism off).
2. A member of an encrypted-handshake group (where the DS cannot look) adds a leaf that
   borrows another user's name: members validating against the AS (the SDK's default) reject
   it, report it, the DS undoes the commit, and the insider is removed. Without the AS check
   the members accept the impostor.
3. An outsider pushes an external commit with a corrupted confirmation tag into an open group:
   the DS cannot check it and accepts it; the members reject and report it, the DS undoes it,
   and the group commits and talks again at once. With reports disabled the group is frozen.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
from ds_helpers import Cluster, Member, status_of

from mlspy.client import Client, Event
from mlspy.ds.client import ASCredentialValidator, DSRequestError
from mlspy.errors import UsageError
from mlspy.group import (
    Group,
    GroupConfig,
    Joins,
    MembershipPolicy,
    QueuedProposal,
    SigningIdentity,
    StagedCommit,
    create_key_package,
    join_external,
    new_member_add_proposal,
)
from mlspy.messages import MLSMessage, WireFormat

FAST = {"poll_interval": 0.1}


async def until(client: Client, kind: str, timeout: float = 10) -> Event:
    while True:
        event = await client.next_event(timeout)
        if event.kind == kind:
            return event


async def talk(sender: Client, receiver: Client, gid: bytes, text: str) -> None:
    await sender.send(gid, text)
    while True:
        event = await until(receiver, "message")
        if event.text == text:
            return


def outsider_request(eve: Member, gid: bytes, epoch: int) -> bytes:
    """Eve's request to join: an Add of her own KeyPackage (new_member_proposal)."""
    bundle = create_key_package(eve.identity)
    eve.bundles.append(bundle)
    return new_member_add_proposal(
        gid, epoch, bundle.key_package, eve.identity.signature_private_key
    )


def eve_got_in(eve: Member) -> bool:
    """Whether eve received a Welcome (and so could read the group)."""
    return any(item["kind"] == "welcome" for item in eve.client.fetch(0))


class AdmitAll:
    """An application rule that commits whatever is pending: the hook switched off."""

    def admit(self, group: Group, proposal: QueuedProposal) -> bool:
        return True


# --- 1. Closed groups stay closed ------------------------------------------------------------


def test_an_outsider_cannot_get_into_a_closed_group(ds: Cluster) -> None:
    async def scenario() -> None:
        async with Client(ds.url, "alice", **FAST) as alice, Client(ds.url, "bob", **FAST) as bob:
            gid = await alice.create_group()  # the default: invite only
            await alice.invite(gid, "bob")
            await until(bob, "joined")
            eve = Member.new(ds.url, "eve")
            epoch = alice.group(gid).group.epoch
            request = outsider_request(eve, gid, epoch)
            assert status_of(lambda: eve.client.submit(gid, request)) == 403
            # Nor may she join by external commit, or read the roster.
            assert status_of(lambda: eve.client.group_info(gid)) == 404
            await talk(alice, bob, gid, "only us")
            assert not eve_got_in(eve)
            assert set(bob.members(gid)) == {"alice", "bob"}

    asyncio.run(scenario())


@pytest.mark.parametrize("rules", ["default", "admit-all"])
def test_a_join_request_waits_for_approval(ds: Cluster, rules: str) -> None:
    """A group that takes requests: the DS passes eve's request on, and the members' SDKs do
    not commit it by themselves (even when they send, which commits pending proposals);
    once alice approves, eve joins. With a rule that admits everything, eve is let in by the
    first member to act — the attack the default rule stops."""

    async def scenario() -> None:
        kw: dict[str, Any] = dict(FAST)
        if rules == "admit-all":
            kw["rules"] = AdmitAll()
        async with (
            Client(ds.url, "alice", **kw) as alice,
            Client(ds.url, "bob", **kw) as bob,
            Client(ds.url, "eve", **FAST) as eve,
        ):
            gid = await alice.create_group(policy=MembershipPolicy(Joins.request))
            await alice.invite(gid, "bob")
            await until(bob, "joined")
            await eve.request_join(gid)
            request = await until(bob, "join_request")
            assert request.sender == "eve"
            await until(alice, "join_request")
            await talk(bob, alice, gid, "who is eve?")
            if rules == "admit-all":
                await until(eve, "joined")
                return
            assert eve.group_ids() == []
            assert set(bob.members(gid)) == {"alice", "bob"}
            assert await alice.approve(gid, "eve")
            await until(eve, "joined")
            # bob speaks once he has processed the commit that added eve: a message of the
            # epoch before it is one she cannot read (she joined after it).
            assert (await until(bob, "member_joined")).user == "eve"  # type: ignore[attr-defined]
            await talk(bob, eve, gid, "welcome eve")

    asyncio.run(scenario())


def test_a_removed_member_returns_only_when_re_added(ds: Cluster) -> None:
    async def scenario() -> None:
        async with Client(ds.url, "alice", **FAST) as alice, Client(ds.url, "bob", **FAST) as bob:
            gid = await alice.create_group()
            await alice.invite(gid, "bob")
            await until(bob, "joined")
            await alice.remove(gid, "bob")
            await until(bob, "removed")
            # Bob tries the ways back in: a request, an external commit (raw HTTP).
            info = alice.group(gid).group.group_info()
            _group, commit = _external_commit_ignoring_policy(info, bob.identity)
            assert status_of(lambda: bob.ds.submit(gid, commit)) == 403
            with pytest.raises(DSRequestError) as refused:
                await bob.request_join(gid)
            assert refused.value.status == 403
            with pytest.raises(DSRequestError):
                await bob.join_external(gid)
            assert set(alice.members(gid)) == {"alice"}
            await alice.invite(gid, "bob")
            await until(bob, "joined")
            await talk(alice, bob, gid, "welcome back")

    asyncio.run(scenario())


def _external_commit_ignoring_policy(info: bytes, identity: SigningIdentity) -> tuple[Group, bytes]:
    """An external commit from a client that ignores the group's policy (as an attacker's
    would): built against the GroupInfo with the policy extension stripped locally."""
    from mlspy.group.public_group import PublicGroup

    public = PublicGroup.from_group_info(info)
    assert public.members()
    # A well-behaved mlspy joiner refuses (MP-02); the attacker's client does not care, and
    # the DS is the one that must refuse. Reuse the library with the policy check bypassed.
    import mlspy.group.commit_validate as cv

    saved = cv.check_external_join
    cv.check_external_join = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return join_external(info, identity)
    finally:
        cv.check_external_join = saved


# --- 2. Names are bound end to end (encrypted handshakes) -------------------------------------


def _encrypted_member(url: str, name: str, *, validate: bool) -> Member:
    m = Member.new(url, name)
    m.config = GroupConfig(  # type: ignore[attr-defined]
        handshake_wire_format=WireFormat.mls_private_message,
        credential_validator=ASCredentialValidator(m.client) if validate else None,
    )
    return m


@pytest.mark.parametrize("validate", [True, False], ids=["as-check", "no-check"])
def test_an_insider_cannot_add_a_borrowed_name(ds: Cluster, validate: bool) -> None:
    alice = _encrypted_member(ds.url, "alice", validate=validate)
    bob = _encrypted_member(ds.url, "bob", validate=validate)
    eve = _encrypted_member(ds.url, "eve", validate=False)  # the attacker checks nothing
    bob.group = Group.create(bob.identity, config=bob.config)  # type: ignore[attr-defined]
    bob.client.create_group(bob.group.group_info(), encrypted_handshakes=True)
    kps = [
        MLSMessage.decode(bob.client.claim_key_package(n)).key_package for n in (b"alice", b"eve")
    ]
    out = bob.group.commit(add=[k for k in kps if k is not None])
    bob.client.submit(
        bob.group.group_id,
        out.commit,
        welcome=out.welcome,
        group_info=out.group_info,
        adds=[b"alice", b"eve"],
    )
    bob.group.merge_pending_commit()
    for m in (alice, eve):
        item = next(i for i in m.client.fetch(0) if i["kind"] == "welcome")
        m.group = Group.join(item["data"], m.bundles, config=m.config)  # type: ignore[attr-defined]
        m.client.ack([i["seq"] for i in m.client.fetch(0)])
    gid = bob.group.group_id
    # Eve adds a second "alice": a KeyPackage naming alice, signed with a key of eve's.
    fake = create_key_package(SigningIdentity.generate(b"alice"))
    assert eve.group is not None
    bad = eve.group.commit(add=[fake.key_package])
    eve.client.submit(gid, bad.commit, group_info=bad.group_info)  # the DS cannot look: 200
    eve.group.merge_pending_commit()
    item = bob.client.fetch(0)[-1]
    if not validate:
        staged = bob.group.process(item["data"])
        assert isinstance(staged, StagedCommit)
        bob.group.merge_staged_commit(staged)
        names = sorted(m.identity for m in bob.group.members())
        assert names == [b"alice", b"alice", b"bob", b"eve"]  # the impostor passes as alice
        return
    with pytest.raises(Exception) as rejected:
        bob.group.process(item["data"])
    assert "AS binds identity b'alice' to another signature key" in str(rejected.value)
    bob.client.ack([item["seq"]])
    # Bob reports it; the DS undoes it (nobody spoke in the new epoch) ...
    epoch = bob.group.epoch
    bob.client.reject_commit(gid, epoch)
    assert status_of(lambda: alice.client.reject_commit(gid, epoch)) == 409  # already undone
    # ... and bob removes eve, whose commit the honest members rejected.
    out = bob.group.commit(remove=[eve.group.own_leaf_index])
    bob.client.submit(gid, out.commit, group_info=out.group_info)
    bob.group.merge_pending_commit()
    for item in alice.client.fetch(0):
        if item["kind"] == "message":
            event = alice.group.process(item["data"])  # type: ignore[union-attr]
            if isinstance(event, StagedCommit):
                alice.group.merge_staged_commit(event)  # type: ignore[union-attr]
        alice.client.ack([item["seq"]])
    assert sorted(m.identity for m in alice.group.members()) == [b"alice", b"bob"]  # type: ignore[union-attr]
    bob.send(b"eve is out")
    alice.sync()
    assert alice.received[-1] == b"eve is out"


# --- 3. Nobody can freeze a group ---------------------------------------------------------------


def _corrupted_external_commit(info: bytes, identity: SigningIdentity) -> bytes:
    """A valid external commit but for its confirmation tag (which only members can check;
    the signature does not cover it)."""
    _group, commit = join_external(info, identity)
    msg = MLSMessage.decode(commit)
    pm = msg.public_message
    assert pm is not None and pm.auth.confirmation_tag is not None
    tag = bytes(b ^ 0xFF for b in pm.auth.confirmation_tag)
    return MLSMessage.wrap(replace(pm, auth=replace(pm.auth, confirmation_tag=tag))).encode()


@pytest.mark.parametrize(
    "ds_options", [{}, {"rejections_per_reporter": 0}], ids=["undo", "no-undo"]
)
def test_an_outsider_cannot_freeze_an_open_group(ds: Cluster, ds_options: dict[str, Any]) -> None:
    undo = ds_options == {}

    async def scenario() -> None:
        async with (
            Client(ds.url, "alice", **FAST) as alice,
            Client(ds.url, "bob", **FAST) as bob,
            Client(ds.url, "carol", **FAST) as carol,
        ):
            gid = await alice.create_group(external_joins=True)
            await alice.invite(gid, "bob")
            await until(bob, "joined")
            eve = Member.new(ds.url, "eve")
            info = eve.client.group_info(gid)  # an open group's GroupInfo is public
            bad = _corrupted_external_commit(info, eve.identity)
            eve.client.submit(gid, bad)  # the DS cannot check the tag: accepted
            started = time.monotonic()
            if not undo:
                with pytest.raises(UsageError, match="could not win a commit"):
                    await asyncio.wait_for(alice.update(gid), 30)
                return
            # The members reject and report it; the DS undoes it; they go on within seconds.
            await alice.sync()
            await bob.sync()
            await alice.invite(gid, "carol")
            await until(carol, "joined")
            await talk(carol, bob, gid, "still here")
            await bob.update(gid)
            await talk(alice, carol, gid, "and moving on")
            assert time.monotonic() - started < 10
            assert set(bob.members(gid)) == {"alice", "bob", "carol"}
            # Eve is on no delivery list, and may not try again for a while.
            assert not any(i["kind"] == "welcome" for i in eve.client.fetch(0))
            again = _corrupted_external_commit(eve.client.group_info(gid), eve.identity)
            assert status_of(lambda: eve.client.submit(gid, again)) == 403

    asyncio.run(scenario())


def test_a_false_report_delays_a_commit_but_the_group_goes_on(ds: Cluster) -> None:
    """Mallory, a member, reports alice's good commit as rejected before anyone speaks in
    the new epoch: the DS undoes it; alice (who had merged it) and bob rejoin the restored
    epoch by resync and the group talks again. Reports are limited per reporter."""

    async def scenario() -> None:
        async with Client(ds.url, "alice", **FAST) as alice, Client(ds.url, "bob", **FAST) as bob:
            gid = await alice.create_group()
            await alice.invite(gid, "bob")
            await until(bob, "joined")
            mallory = Member.new(ds.url, "mallory")
            await alice.invite(gid, "mallory")
            item = next(i for i in mallory.client.fetch(0) if i["kind"] == "welcome")
            mallory.group = Group.join(item["data"], mallory.bundles)
            mallory.client.ack([i["seq"] for i in mallory.client.fetch(0)])
            await bob.sync()
            epoch = alice.group(gid).group.epoch
            await alice.update(gid)  # a good commit ...
            mallory.client.reject_commit(gid, epoch)  # ... that mallory says she rejected
            started = time.monotonic()
            await alice.sync()
            await bob.sync()
            await talk(bob, alice, gid, "still together")
            await talk(alice, bob, gid, "yes")
            assert time.monotonic() - started < 10
            assert {"alice", "bob", "mallory"} <= set(alice.members(gid))

    asyncio.run(scenario())


def test_the_reject_endpoint_refuses_what_it_must(ds: Cluster) -> None:
    """Only a member of the epoch the commit ended may report it, not its committer, only
    for the latest commit and only before members speak in the new epoch; bad bodies 400."""
    import httpx

    alice, bob, eve = (Member.new(ds.url, n) for n in ("alice", "bob", "eve"))
    alice.create()
    alice.add(bob)
    bob.sync()
    assert alice.group is not None
    gid = alice.group.group_id
    out = alice.group.commit()
    alice.client.submit(gid, out.commit, group_info=out.group_info)
    alice.group.merge_pending_commit()
    epoch = alice.group.epoch - 1
    assert status_of(lambda: eve.client.reject_commit(gid, epoch)) == 404  # an outsider
    assert status_of(lambda: alice.client.reject_commit(gid, epoch)) == 403  # its committer
    assert status_of(lambda: bob.client.reject_commit(gid, epoch - 1)) == 409  # not the latest
    for body in ({}, {"epoch": "1"}, {"epoch": True}, {"epoch": -1}, {"epoch": 2**70}):
        r = httpx.post(
            f"{ds.url}/v1/groups/{gid.hex()}/reject",
            json=body,
            headers={"authorization": f"Bearer {bob.client.token}"},
        )
        assert r.status_code == 400, (body, r.text)
    bob.sync()
    bob.send(b"I follow")  # bob speaks in the new epoch: the commit stands
    assert status_of(lambda: bob.client.reject_commit(gid, epoch)) == 409
    alice.sync()
    assert alice.received == [b"I follow"]
