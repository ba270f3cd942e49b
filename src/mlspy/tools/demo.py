"""``mlspy demo``: a real conversation over an embedded Delivery Service, narrated.

An embedded DS (SQLite in a temporary directory) listens on loopback; alice, bob, carol and
dave are SDK clients in this process talking to it over HTTP and WebSocket. The script creates a
group, invites, chats, updates, removes, lets dave join by external commit, and stages a commit
race that the SDK resolves — printing each epoch, the members and the ratchet tree.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlspy.client import Client, Event, JoinRequest, Message
from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import Joins, MembershipPolicy
from mlspy.tools.tree_picture import render_text


async def _until(client: Client, kind: str) -> Event:
    while True:
        event = await client.next_event(timeout=15)
        if event.kind == kind:
            return event


async def _message(client: Client) -> Message:
    event = await _until(client, "message")
    assert isinstance(event, Message)
    return event


async def _scenario(
    url: str, say: Callable[[str, dict[str, Any]], None], invite: Callable[[], str]
) -> dict[str, Any]:
    names = ("alice", "bob", "carol", "dave")
    # Names are accounts: the embedded DS registers invited names only, and its operator
    # (this process) mints each user a single-use invite code.
    clients = {n: Client(url, n, poll_interval=0.2, invite_code=invite()) for n in names}
    for c in clients.values():
        await c.start()
    alice, bob, carol, dave = (clients[n] for n in names)
    try:

        def state(title: str) -> None:
            g = alice.group(gid).group
            say(
                title,
                {
                    "epoch": g.epoch,
                    "members": list(alice.members(gid)),
                    "epoch_authenticator": g.epoch_authenticator.hex()[:16],
                    "tree": render_text(g.tree),
                },
            )

        gid = await alice.create_group(policy=MembershipPolicy(Joins.request))
        say(
            "alice creates a closed group that takes requests to join",
            {"group_id": gid.hex()[:16]},
        )
        state("epoch 0")
        await alice.invite(gid, "bob")
        await alice.invite(gid, "carol")
        await _until(bob, "joined")
        await _until(carol, "joined")
        state("alice invited bob and carol (KeyPackages claimed from the DS, Welcomes delivered)")
        await bob.send(gid, "hi everyone, bob here")
        m = await _message(carol)
        say("bob -> group (encrypted)", {"carol decrypted": f"{m.sender}: {m.text}"})
        await carol.send(gid, "hello bob!")
        m = await _message(alice)
        say("carol -> group", {"alice decrypted": f"{m.sender}: {m.text}"})
        await bob.update(gid)
        await alice.sync()
        state("bob updates his keys (empty commit with a fresh path)")
        await alice.remove(gid, "carol")
        await _until(carol, "removed")
        state("alice removes carol (carol sees the removal)")
        await dave.request_join(gid)
        request = await _until(alice, "join_request")
        assert isinstance(request, JoinRequest)
        await alice.approve(gid, request.user)
        await _until(dave, "joined")
        await bob.sync()
        state("dave asks to join; alice approves (nothing from outsiders is committed unasked)")
        # A race: bob and dave commit for the same epoch; the DS accepts one, the SDK of the
        # other processes the winner and retries its intent.
        await asyncio.gather(bob.invite(gid, "carol"), dave.update(gid))
        await _until(carol, "joined")
        for c in (alice, bob, dave):
            await c.sync()
        state("bob (re-invites carol) and dave (update) raced for one epoch; both landed in turn")
        await dave.send(gid, "great to be here")
        for c in (alice, bob, carol):
            m = await _message(c)
        auths = {
            n: clients[n].group(gid).group.epoch_authenticator.hex()[:16]
            for n in names
            if gid in clients[n].group_ids()
        }
        agree = len(set(auths.values())) == 1
        summary = {
            "epoch": alice.group(gid).group.epoch,
            "members": list(alice.members(gid)),
            "epoch_authenticators": auths,
            "all agree": agree,
        }
        say("summary", summary)
        return summary
    finally:
        for c in clients.values():
            await c.stop()


def run(as_json: bool = False) -> int:
    transcript: list[dict[str, Any]] = []
    start = time.perf_counter()

    def say(title: str, details: dict[str, Any]) -> None:
        transcript.append({"step": title, **details})
        if as_json:
            return
        print(f"\n== {title}")
        for key, value in details.items():
            if key == "tree":
                print("   ratchet tree (as alice sees it):")
                print("\n".join("     " + line for line in str(value).splitlines()))
            else:
                print(f"   {key}: {value}")

    with tempfile.TemporaryDirectory(prefix="mlspy-demo-") as tmp:
        service = DeliveryService(SQLiteDatabase(Path(tmp) / "ds.sqlite"), registration="invite")
        with InProcessServer(create_app(service)) as server:
            if not as_json:
                print(f"mlspy demo: embedded Delivery Service at {server.url} (SQLite in {tmp})")
            summary = asyncio.run(_scenario(server.url, say, lambda: service.create_invite()[0]))
    elapsed = time.perf_counter() - start
    if as_json:
        print(json.dumps({"transcript": transcript, "seconds": round(elapsed, 2)}, indent=2))
    else:
        verdict = "all members agree" if summary["all agree"] else "DISAGREEMENT"
        print(f"\nfinished in {elapsed:.1f}s: {verdict}")
    return 0 if summary["all agree"] else 1
