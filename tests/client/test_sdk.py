"""The client SDK over a real Delivery Service on loopback: every hard case."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlspy.client import Client, Event
from mlspy.ds.app import create_app
from mlspy.ds.client import DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import TOKEN_TTL, DeliveryService
from mlspy.errors import UsageError
from mlspy.storage import MemoryStore, SQLiteStore


async def _until(client: Client, kind: str, timeout: float = 10) -> Event:
    while True:
        event = await client.next_event(timeout)
        if event.kind == kind:
            return event


async def _invite(creator: Client, group_id: bytes, *members: Client) -> None:
    """``creator`` invites each member in turn; each has joined when this returns."""
    for member in members:
        await creator.invite(group_id, member.name)
        await _until(member, "joined")


def test_chat_invite_remove(server: InProcessServer) -> None:
    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
            Client(server.url, "carol", poll_interval=0.2) as carol,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob, carol)
            await bob.send(gid, "hi all")
            msg = await _until(carol, "message")
            assert (msg.sender, msg.text) == ("bob", "hi all")
            await alice.remove(gid, "carol")
            await _until(carol, "removed")
            assert carol.group_ids() == []
            removed = await _until(bob, "member_removed")
            assert (removed.user, removed.by) == ("carol", "alice")  # type: ignore[attr-defined]
            assert set(bob.members(gid)) == {"alice", "bob"}

    asyncio.run(scenario())


def test_commit_race_is_resolved_and_intent_retried(server: InProcessServer) -> None:
    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
            Client(server.url, "carol", poll_interval=0.2) as carol,
            Client(server.url, "dave", poll_interval=0.2) as dave,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob)
            # alice and bob both commit for the same epoch; one loses, catches up, retries.
            await asyncio.gather(alice.invite(gid, "carol"), bob.invite(gid, "dave"))
            await _until(carol, "joined")
            await _until(dave, "joined")
            await alice.sync()
            await bob.sync()
            a, b = alice.group(gid).group, bob.group(gid).group
            assert a.epoch == b.epoch == 3
            assert a.epoch_authenticator == b.epoch_authenticator
            assert set(alice.members(gid)) == {"alice", "bob", "carol", "dave"}

    asyncio.run(scenario())


def test_offline_catch_up_and_restart(server: InProcessServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        bob_store = SQLiteStore(tmp_path / "bob.db")
        async with Client(server.url, "alice", poll_interval=0.2) as alice:
            gid = await alice.create_group()
            async with Client(server.url, "bob", store=bob_store) as bob:
                await _invite(alice, gid, bob)
            # bob is offline for 20 epochs and 20 messages.
            for i in range(20):
                await alice.update(gid)
                await alice.send(gid, f"message {i}")
            async with Client(server.url, "bob", store=bob_store) as bob:
                texts = []
                while len(texts) < 20:
                    event = await bob.next_event()
                    if event.kind == "message":
                        texts.append(event.text)
                assert texts == [f"message {i}" for i in range(20)]
                assert bob.group(gid).group.epoch_authenticator == (
                    alice.group(gid).group.epoch_authenticator
                )

    asyncio.run(scenario())


def test_state_loss_rejoin_by_external_commit(server: InProcessServer) -> None:
    async def scenario() -> None:
        bob_store = MemoryStore()
        async with Client(server.url, "alice", poll_interval=0.2) as alice:
            gid = await alice.create_group()
            async with Client(server.url, "bob", store=bob_store) as bob:
                await _invite(alice, gid, bob)
                # bob loses the group's state (but keeps his identity).
                bob.groups.delete_group(gid)
                assert bob.group_ids() == []
                await bob.join_external(gid, resync=True)
                await alice.sync()
                assert alice.members(gid).count("bob") == 1  # the stale leaf was removed
                await bob.send(gid, "back again")
                msg = await _until(alice, "message")
                assert msg.text == "back again"

    asyncio.run(scenario())


def test_key_packages_are_replenished(server: InProcessServer) -> None:
    async def scenario() -> None:
        async with (
            Client(server.url, "alice") as alice,
            Client(server.url, "bob", key_packages=1) as bob,
        ):
            assert await asyncio.to_thread(bob.ds.count_key_packages) == (1, True)
            gid = await alice.create_group()
            await _invite(alice, gid, bob)
            assert await asyncio.to_thread(bob.ds.count_key_packages) == (1, True)

    asyncio.run(scenario())


def test_last_resort_key_package_is_rotated(server: InProcessServer) -> None:
    async def scenario() -> None:
        async with (
            Client(server.url, "alice") as alice,
            Client(server.url, "bob", key_packages=0) as bob,
        ):
            before = {b.ref() for b in bob.groups.key_packages()}
            gid = await alice.create_group()
            await alice.invite(gid, "bob")  # only the last-resort KeyPackage is there
            await _until(bob, "joined")
            after = {b.ref() for b in bob.groups.key_packages() if b.is_last_resort}
            assert after - before  # a fresh last-resort one was made and uploaded
            assert await asyncio.to_thread(bob.ds.count_key_packages) == (0, True)

    asyncio.run(scenario())


# --- Our own commit whose answer is lost ------------------------------------------------------
# The DS does not echo our messages, so the answer to the submission is how a client learns its
# commit won. These tests lose that answer: the DS accepts the commit but the client sees a
# transport error.


def _lose_answers(client: Client, count: int, *, deliver_first: bool = True) -> list[str]:
    """Make the next ``count`` submissions fail with a timeout; with ``deliver_first`` the
    first of them still reaches the DS (only its answer is lost). Whether they go on the
    WebSocket or over HTTP (``Client._post`` chooses)."""
    real = client._post
    calls: list[str] = []

    async def submit(*args: Any, **kwargs: Any) -> int:
        if len(calls) < count:
            reached = deliver_first and not calls
            calls.append("delivered" if reached else "lost")
            if reached:
                await real(*args, **kwargs)
            raise httpx.ReadTimeout("answer lost")
        calls.append("ok")
        return await real(*args, **kwargs)

    client._post = submit  # type: ignore[method-assign]
    return calls


def test_lost_answer_is_retried_and_the_accepted_commit_merged(server: InProcessServer) -> None:
    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
        ):
            gid = await alice.create_group()
            calls = _lose_answers(alice, 1)
            await alice.invite(gid, "bob")
            # The retry resubmits the same bytes; the DS answers with the accepted one.
            assert calls == ["delivered", "ok"]
            await _until(bob, "joined")
            assert alice.group(gid).group.epoch == bob.group(gid).group.epoch == 1
            assert alice.store.keys("outbox/") == []
            await bob.send(gid, "after the lost answer")
            assert (await _until(alice, "message")).text == "after the lost answer"

    asyncio.run(scenario())


@pytest.mark.parametrize("reached_ds", [True, False], ids=["accepted", "never_sent"])
def test_undecided_commit_is_settled_after_restart(
    server: InProcessServer, tmp_path: Path, reached_ds: bool
) -> None:
    """The DS stays unreachable for every retry, and the client restarts: the commit is
    resubmitted from the outbox (with its Welcome), merged whether or not it had arrived."""

    async def scenario() -> None:
        alice_store = SQLiteStore(tmp_path / "alice.db")
        async with Client(server.url, "bob", poll_interval=0.2) as bob:
            async with Client(server.url, "alice", store=alice_store) as alice:
                gid = await alice.create_group()
                calls = _lose_answers(alice, 3, deliver_first=reached_ds)
                with pytest.raises(httpx.TransportError):
                    await alice.invite(gid, "bob")
                assert calls == ["delivered" if reached_ds else "lost", "lost", "lost"]
                assert alice.group(gid).group.pending_commit is not None
                assert alice.store.keys("outbox/") == [f"outbox/{gid.hex()}"]
            async with Client(server.url, "alice", store=alice_store, poll_interval=0.2) as alice:
                assert alice.store.keys("outbox/") == []
                assert alice.group(gid).group.pending_commit is None
                await _until(bob, "joined")
                a, b = alice.group(gid).group, bob.group(gid).group
                assert a.epoch == b.epoch == 1
                assert a.epoch_authenticator == b.epoch_authenticator
                await alice.send(gid, "settled")
                assert (await _until(bob, "message")).text == "settled"

    asyncio.run(scenario())


def test_undecided_commit_that_lost_the_race_is_dropped(
    server: InProcessServer, tmp_path: Path
) -> None:
    """While alice's commit is undecided, bob's commit wins the epoch: alice's resubmission
    is refused (409), she drops her commit and follows bob's."""

    async def scenario() -> None:
        alice_store = SQLiteStore(tmp_path / "alice.db")
        async with (
            Client(server.url, "bob", poll_interval=0.2) as bob,
            Client(server.url, "carol", poll_interval=0.2) as carol,
        ):
            async with Client(server.url, "alice", store=alice_store) as alice:
                gid = await alice.create_group()
                await _invite(alice, gid, bob)
                _lose_answers(alice, 3, deliver_first=False)
                with pytest.raises(httpx.TransportError):
                    await alice.update(gid)
            await bob.invite(gid, "carol")  # bob's commit takes epoch 1 -> 2
            await _until(carol, "joined")
            async with Client(server.url, "alice", store=alice_store, poll_interval=0.2) as alice:
                assert alice.store.keys("outbox/") == []
                a, b = alice.group(gid).group, bob.group(gid).group
                assert a.epoch == b.epoch == 2
                assert a.epoch_authenticator == b.epoch_authenticator
                assert set(alice.members(gid)) == {"alice", "bob", "carol"}

    asyncio.run(scenario())


def test_refusal_after_a_lost_answer_keeps_the_commit(server: InProcessServer) -> None:
    """The first attempt reached the DS but its answer was lost; the retries are refused
    (429 here). That says nothing about the first attempt, so the commit stays in the outbox
    and the next receive settles it."""

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=60) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob)
            real = alice._post
            attempts: list[int] = []

            async def submit(*args: Any, **kwargs: Any) -> int:
                attempts.append(1)
                if len(attempts) == 1:
                    await real(*args, **kwargs)
                    raise httpx.ReadTimeout("answer lost")
                raise DSRequestError(429, {"error": "slow down"})

            alice._post = submit  # type: ignore[method-assign]
            with pytest.raises(DSRequestError):
                await alice.update(gid)
            assert alice.group(gid).group.pending_commit is not None
            assert alice.store.keys("outbox/") == [f"outbox/{gid.hex()}"]
            await _until(bob, "epoch")  # the DS did accept alice's commit
            await bob.send(gid, "in the epoch of alice's commit")
            await bob.update(gid)
            # Receiving waits while alice's commit is undecided: every message from here on
            # needs it merged first.
            with pytest.raises(DSRequestError):
                await alice.sync()
            alice._post = real  # type: ignore[method-assign]
            await alice.sync()
            assert alice.store.keys("outbox/") == []
            a, b = alice.group(gid).group, bob.group(gid).group
            assert a.epoch == b.epoch == 3 and a.epoch_authenticator == b.epoch_authenticator
            message = await _until(alice, "message")
            assert message.text == "in the epoch of alice's commit"

    asyncio.run(scenario())


def test_unsent_pending_commit_is_dropped_at_start(server: InProcessServer, tmp_path: Path) -> None:
    """A pending commit with no outbox entry was never sent (they are stored together):
    after a restart it is forgotten instead of blocking every later commit."""

    async def scenario() -> None:
        alice_store = SQLiteStore(tmp_path / "alice.db")
        async with Client(server.url, "bob", poll_interval=0.2) as bob:
            async with Client(server.url, "alice", store=alice_store) as alice:
                gid = await alice.create_group()
                await _invite(alice, gid, bob)
                alice.group(gid).commit([])  # made outside the SDK, never sent
            async with Client(server.url, "alice", store=alice_store, poll_interval=0.2) as alice:
                assert alice.group(gid).group.pending_commit is None
                await alice.update(gid)
                await _until(bob, "epoch")
                assert bob.group(gid).group.epoch == alice.group(gid).group.epoch == 2

    asyncio.run(scenario())


def test_expired_token_is_renewed(tmp_path: Path) -> None:
    """Bearer tokens live an hour; a client running longer logs in again by itself."""
    now = [time.time()]
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.db"), clock=lambda: now[0])

    async def scenario(url: str) -> None:
        async with (
            Client(url, "alice", poll_interval=0.2) as alice,
            Client(url, "bob", poll_interval=0.2) as bob,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob)
            old = alice.ds.token
            now[0] += TOKEN_TTL + 1
            await alice.send(gid, "an hour later")
            assert alice.ds.token != old
            assert (await _until(bob, "message")).text == "an hour later"

    with InProcessServer(create_app(service)) as s:
        asyncio.run(scenario(s.url))


def test_second_client_on_the_same_store_settles_the_commit(
    server: InProcessServer, tmp_path: Path
) -> None:
    """Two Client objects on one store: the second decides on the stored state, so it
    settles the first one's undecided (accepted) commit instead of discarding its entry."""

    async def scenario() -> None:
        path = tmp_path / "alice.db"
        async with Client(server.url, "bob", poll_interval=0.2) as bob:
            first = Client(server.url, "alice", store=SQLiteStore(path), poll_interval=60)
            await first.start()
            gid = await first.create_group()
            await _invite(first, gid, bob)
            second = Client(server.url, "alice", store=SQLiteStore(path), poll_interval=60)
            await second.start()  # its handle on the group has no pending commit
            _lose_answers(first, 3)
            with pytest.raises(httpx.TransportError):
                await first.update(gid)
            await second.sync()
            assert second.store.keys("outbox/") == []
            await _until(bob, "epoch")
            a, b = second.group(gid).group, bob.group(gid).group
            assert a.epoch == b.epoch == 2 and a.epoch_authenticator == b.epoch_authenticator
            await first.stop()
            await second.stop()

    asyncio.run(scenario())


# --- Proposals, Welcomes, the queue and tokens (found in review) ------------------------------


def test_leaving_member_is_removed_by_the_lowest_staying_leaf(server: InProcessServer) -> None:
    """bob asks to leave (a Remove proposal for himself): alice, the lowest leaf staying,
    commits it by herself; nobody is left unable to send."""

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
            Client(server.url, "carol", poll_interval=0.2) as carol,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob, carol)
            await bob.leave(gid)
            with pytest.raises(UsageError, match="asked to leave"):
                await bob.send(gid, "still here?")
            await _until(bob, "removed")
            left = await _until(carol, "member_left")
            assert left.sender == "bob"
            # alice merges her commit when the DS's answer reaches her, which may come after
            # carol got the commit itself.
            for _ in range(100):
                if set(alice.members(gid)) == {"alice", "carol"}:
                    break
                await asyncio.sleep(0.05)
            assert set(alice.members(gid)) == {"alice", "carol"}
            await carol.send(gid, "after bob left")
            assert (await _until(alice, "message")).text == "after bob left"

    asyncio.run(scenario())


def test_sender_commits_pending_proposals_first(server: InProcessServer) -> None:
    """If the member whose turn it is to commit is offline, the next sender commits the
    pending proposals (they forbid sending, RFC 9420 §12.4); removing someone who asked to
    leave commits their request instead of proposing a second Remove."""

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=60) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
            Client(server.url, "carol", poll_interval=0.2) as carol,
            Client(server.url, "dave", poll_interval=0.2) as dave,
        ):
            gid = await alice.create_group()
            for name, member in (("bob", bob), ("carol", carol), ("dave", dave)):
                await alice.invite(gid, name)
                await _until(member, "joined")
            await alice.stop()  # alice (leaf 0) would commit; she is gone
            await dave.leave(gid)
            await carol.sync()
            await carol.send(gid, "committed dave's leaving first")
            await _until(dave, "removed")
            assert (await _until(bob, "message")).text == "committed dave's leaving first"
            assert set(bob.members(gid)) == {"alice", "bob", "carol"}
            await bob.leave(gid)
            await carol.sync()
            await carol.remove(gid, "bob")
            await _until(bob, "removed")
            assert set(carol.members(gid)) == {"alice", "carol"}

    asyncio.run(scenario())


def test_join_survives_a_failing_top_up(server: InProcessServer) -> None:
    """The DS cannot take the KeyPackage top-up right after a join: the join still counts
    ("joined" is emitted) and the top-up happens on a later receive."""

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
        ):
            gid = await alice.create_group()
            real = bob.ds.count_key_packages
            failures = [1]

            def count(*args: Any, **kwargs: Any) -> tuple[int, bool]:
                if failures:
                    failures.pop()
                    raise httpx.ConnectError("DS unreachable")
                return real(*args, **kwargs)

            bob.ds.count_key_packages = count  # type: ignore[method-assign]
            await alice.invite(gid, "bob")
            joined = await _until(bob, "joined")
            assert joined.group_id == gid and not failures
            await bob.sync()
            assert bob.ds.count_key_packages(1) == (bob.pool_size, True)

    asyncio.run(scenario())


def test_welcome_for_a_replaced_last_resort_key_package(server: InProcessServer) -> None:
    """carol claimed bob's last-resort KeyPackage; bob used it meanwhile (another join) and
    replaced it. carol's Welcome must still reach bob."""

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "carol", poll_interval=0.2) as carol,
            Client(server.url, "bob", poll_interval=0.2, key_packages=0) as bob,
        ):
            first = await alice.create_group()
            second = await carol.create_group()
            claimed = carol.ds.claim_key_package(b"bob", 1)  # the last-resort one
            await alice.invite(first, "bob")
            await _until(bob, "joined")  # and bob rotates his last-resort KeyPackage
            carol.ds.claim_key_package = lambda *a, **k: claimed  # type: ignore[method-assign]
            await carol.invite(second, "bob")
            joined = await _until(bob, "joined")
            assert joined.group_id == second

    asyncio.run(scenario())


def test_messages_processed_before_a_lost_ack_are_not_processed_again(
    server: InProcessServer,
) -> None:
    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "bob", poll_interval=60) as bob,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob)
            real = bob.ds.ack

            def ack(seqs: Any) -> None:
                raise httpx.ReadTimeout("ack lost")

            bob.ds.ack = ack  # type: ignore[method-assign]
            await alice.send(gid, "once")
            # Processed (here, or already by bob's receive loop), but never acknowledged.
            with contextlib.suppress(httpx.ReadTimeout):
                await bob.sync()
            assert (await _until(bob, "message")).text == "once"
            assert bob.store.keys("processed/") != []
            bob.ds.ack = real  # type: ignore[method-assign]
            await bob.sync()
            texts = [e.text for e in bob.inbox.unacknowledged() if e.kind == "message"]
            assert texts == []  # not processed a second time
            assert bob.store.keys("processed/") == []
            assert bob.ds.fetch(0) == []

    asyncio.run(scenario())


def test_concurrent_calls_share_one_renewed_token(tmp_path: Path) -> None:
    import threading

    now = [time.time()]
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.db"), clock=lambda: now[0])
    with InProcessServer(create_app(service)) as s:
        from mlspy.ds.client import DSClient
        from mlspy.group import SigningIdentity

        client = DSClient(s.url, SigningIdentity.generate(b"alice"))
        client.register()
        client.login()
        now[0] += TOKEN_TTL + 1
        errors: list[BaseException] = []

        def fetch() -> None:
            try:
                client.fetch(0)
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=fetch) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def test_replaced_last_resort_key_package_is_deleted_after_its_grace(
    server: InProcessServer,
) -> None:
    """The last-resort KeyPackage bob joined with is replaced at once; its private keys stay
    only for the grace period (a claim of it may be in flight), then go (forward secrecy)."""

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(
                server.url, "bob", poll_interval=0.2, key_packages=0, last_resort_grace=0
            ) as bob,
        ):
            used = [b.ref() for b in bob.groups.key_packages() if b.is_last_resort]
            assert len(used) == 1
            gid = await alice.create_group()
            await _invite(alice, gid, bob)
            await bob.sync()
            left = [b.ref() for b in bob.groups.key_packages() if b.is_last_resort]
            assert len(left) == 1 and left != used
            assert bob.store.keys("retired/") == []

    asyncio.run(scenario())


def test_a_message_delivered_twice_is_recognized_as_processed(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: a message whose key we already spent is one we processed, not an attack:
    it is logged as such, not reported, and the application sees the message once."""

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob)
            data = alice.group(gid).encrypt_application(b"twice")
            alice.ds.submit(gid, data)
            alice.ds.submit(gid, data)  # e.g. a retry whose first answer was lost
            with caplog.at_level(logging.INFO, logger="mlspy.client"):
                assert (await _until(bob, "message")).text == "twice"
                await bob.sync()
            assert [e for e in bob.inbox.unacknowledged() if e.kind == "message"] == []
            assert any("already processed" in r.getMessage() for r in caplog.records)
            assert bob.store.keys("rejected/") == []
            assert bob.ds.fetch(0) == []

    asyncio.run(scenario())


def test_encrypted_handshakes_end_to_end(server: InProcessServer, tmp_path: Path) -> None:
    """Groups whose proposals and commits are PrivateMessages: the SDK names the members it
    adds (the DS cannot read the commit) and confirms its own removal."""
    from mlspy.group import GroupConfig
    from mlspy.messages import WireFormat

    config = GroupConfig(handshake_wire_format=WireFormat.mls_private_message)

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2, config=config) as alice,
            Client(server.url, "bob", poll_interval=0.2, config=config) as bob,
            Client(server.url, "carol", poll_interval=0.2, config=config) as carol,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob, carol)
            await bob.update(gid)
            await _until(carol, "epoch")
            await carol.send(gid, "all private")
            assert (await _until(alice, "message")).text == "all private"
            await carol.leave(gid)  # a PrivateMessage proposal; alice commits it
            await _until(carol, "removed")
            assert carol.group_ids() == []
            await bob.send(gid, "carol is gone")
            assert (await _until(alice, "message")).text == "carol is gone"
            # She confirms her removal (right after the "removed" event, which is stored
            # first): the DS takes her off the delivery list. What was queued for her before
            # she acknowledges on her WebSocket, whose acks take effect a moment later.
            deadline = time.monotonic() + 10
            while carol.store.keys("confirm-removal/") or await asyncio.to_thread(
                carol.ds.fetch, 0
            ):
                assert time.monotonic() < deadline, "carol's removal was never confirmed"
                await asyncio.sleep(0.05)
            await alice.sync()
            a, b = alice.group(gid).group, bob.group(gid).group
            assert a.epoch_authenticator == b.epoch_authenticator
            assert set(alice.members(gid)) == {"alice", "bob"}
        db = SQLiteDatabase(tmp_path / "ds.db")
        with db.transaction() as tx:
            rows = tx.execute("SELECT mode, public_state FROM groups WHERE group_id = ?", (gid,))
        assert str(rows[0][0]).startswith("private") and rows[0][1] is None

    asyncio.run(scenario())


def test_payloads_are_bytes_with_a_text_convenience(server: InProcessServer) -> None:
    from mlspy.client import Message

    async def scenario() -> None:
        async with (
            Client(server.url, "alice", poll_interval=0.2) as alice,
            Client(server.url, "bob", poll_interval=0.2) as bob,
        ):
            gid = await alice.create_group()
            await _invite(alice, gid, bob)
            await alice.send(gid, b"\x00\xffnot text")
            await alice.send(gid, "grüße")
            first, second = await _until(bob, "message"), await _until(bob, "message")
            assert isinstance(first, Message) and isinstance(second, Message)
            assert first.data == b"\x00\xffnot text"
            assert (second.data, second.text) == ("grüße".encode(), "grüße")

    asyncio.run(scenario())
