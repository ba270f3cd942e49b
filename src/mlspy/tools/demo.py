"""``mlspy demo``: a real conversation over an embedded Delivery Service, narrated.

An embedded DS (SQLite in a temporary directory) listens on loopback; alice (a phone and a
laptop), bob, carol and dave are SDK clients in this process talking to it over HTTP and
WebSocket. bob creates a group and invites alice (both her devices) and carol; they chat
(alice from her laptop: her phone shows it as hers, from the laptop); bob updates his keys;
alice enrols a tablet, which her phone adds to the group by itself, then revokes it, and her
phone removes it; alice removes carol; dave asks to join and alice lets him in; bob and dave
race for an epoch, which the SDK resolves; dave says goodbye.

Every step is checked, not only shown: each message must be decrypted by every device that
should receive it, as from its sender's device; after each commit every member must reach the
new epoch with the same roster; at the end every member must hold the same epoch
authenticator. The narration is what each device's application was told (``describe``). A
failed check ends the demo with exit status 1 and one line saying what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlspy.client import Client, Event
from mlspy.client.events import EpochChanged, Joined, JoinRequest, Message, Removed, describe
from mlspy.client.who import member_devices
from mlspy.crypto import CipherSuite
from mlspy.ds.app import create_app
from mlspy.ds.client import DSClient, DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import Joins, MembershipPolicy
from mlspy.tools.tree_picture import render_text
from mlspy.tree.math import LeafIndex, NodeIndex, left, level, right, root
from mlspy.tree.ratchet_tree import RatchetTree

WAIT = 15.0  # seconds a device may take to see what a step should show it
POLL = 0.2  # the clients' receive loops: WebSocket wake-ups, else a fetch this often
WIDE = 120  # columns: a tree picture wider than this is drawn one node a line

Say = Callable[[str, dict[str, Any]], None]


class DemoFailed(Exception):
    """A check failed: a device did not see what it should have, or saw something else."""


def who(user: str, device: str) -> str:
    """A user's device as people read it: ``alice (laptop)``; ``bob`` for a bare name."""
    return f"{user} ({device})" if device else user


def label(client: Client) -> str:
    return who(client.name, client.device)


def _describe(event: Event, me: str) -> str:
    """What ``describe`` says to user ``me`` (a device added by another of its user's
    devices is not told that "you added you")."""
    if isinstance(event, Joined) and event.by == me:
        members = ", ".join(event.members)
        return f"you joined the group (your other device added this one); members: {members}"
    return describe(event, me=me)


async def _until(client: Client, match: Callable[[Event], bool], what: str) -> list[Event]:
    """Read ``client``'s events until one matches (skipping, and returning, the others on
    the way): the events read, the match last."""
    seen: list[Event] = []
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            event = await client.next_event(max(left, 0.001))
        except TimeoutError:
            raise DemoFailed(f"{label(client)} did not see {what} within {WAIT:g}s") from None
        seen.append(event)
        if match(event):
            return seen


def tree_text(tree: RatchetTree) -> str:
    """The ratchet tree as ``mlspy tree`` draws it, root on top; if that is wider than a
    terminal, one node a line (root first, each node's children below it, indented)."""
    text = render_text(tree)
    if max(len(line) for line in text.splitlines()) <= WIDE:
        return text
    lines: list[str] = []

    def walk(x: NodeIndex, lead: str, branch: str, below: str) -> None:
        if level(x) == 0:
            leaf = tree.leaf(LeafIndex(x >> 1))
            name = (leaf.credential.identity or b"?").decode(errors="replace") if leaf else "_"
            lines.append(f"{lead}{branch}{name}   (leaf {x >> 1})")
            return
        node = tree.parent(x)
        name = node.encryption_key[:2].hex() if node is not None else "_"
        if node is not None and node.unmerged_leaves:
            name += "[" + ",".join(map(str, node.unmerged_leaves)) + "]"
        lines.append(f"{lead}{branch}{name}")
        walk(left(x), lead + below, "├─ ", "│  ")
        walk(right(x), lead + below, "└─ ", "   ")

    walk(root(tree.n_leaves), "", "", "")
    return "\n".join(lines)


def _roster(client: Client, gid: bytes) -> set[str]:
    g = client.group(gid).group
    return {who(user, d) for user, devices in member_devices(g).items() for d in devices}


class _Demo:
    def __init__(
        self,
        url: str,
        say: Say,
        invite: Callable[[], str],
        messages: list[dict[str, Any]],
        cipher_suite: int = 1,
    ) -> None:
        self.url, self.say, self.invite = url, say, invite
        self.cipher_suite = cipher_suite
        self.clients: list[Client] = []  # every device started, in order
        self.members: list[Client] = []  # the devices that should be in the group now
        self.gid = b""
        self.messages = messages  # each message sent, and who decrypted it

    # --- People and devices ---------------------------------------------------------------

    async def user(self, name: str, device: str = "") -> Client:
        """A new user (the embedded DS registers invited names only: its operator, this
        process, mints each a single-use invite code)."""
        return await self._start(
            Client(
                self.url,
                name,
                device=device,
                poll_interval=POLL,
                invite_code=self.invite(),
                cipher_suite=self.cipher_suite,
            )
        )

    async def enrol(self, existing: Client, device: str) -> Client:
        """A further device of ``existing``'s user, with a pairing code from ``existing``."""
        code = await existing.pairing_code()
        new = Client(
            self.url,
            existing.name,
            device=device,
            poll_interval=POLL,
            pairing_code=code,
            cipher_suite=self.cipher_suite,
        )
        return await self._start(new)

    async def _start(self, client: Client) -> Client:
        await client.start()
        self.clients.append(client)
        return client

    async def refused(self, revoked: Client) -> str:
        """A revoked device's key no longer logs in to the DS."""
        ds = DSClient(self.url, revoked.identity)
        try:
            await asyncio.to_thread(ds.login)
        except DSRequestError as exc:
            return f"refused ({exc.status})"
        finally:
            ds.close()
        raise DemoFailed(f"{label(revoked)} was revoked, but it still logs in")

    async def stop(self) -> None:
        for c in self.clients:
            await c.stop()

    # --- Watching what each device is told -------------------------------------------------

    async def watch(
        self,
        waits: Sequence[tuple[Client, Callable[[Event], bool], str]],
        *,
        tell_last: bool = True,
    ) -> tuple[dict[str, list[str]], list[Event]]:
        """Wait, at each device at once, for the event that ends the step there: what each
        was told, in words (``describe``; ``tell_last``: the last event's too), and the
        events that ended it."""
        # Every device is waited for to the end (no wait is left running when one fails).
        results = await asyncio.gather(
            *(_until(c, match, what) for c, match, what in waits), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            if all(isinstance(e, DemoFailed) for e in errors):
                raise DemoFailed("; ".join(map(str, errors)))
            raise next(e for e in errors if not isinstance(e, DemoFailed))
        seen = [r for r in results if not isinstance(r, BaseException)]
        told: dict[str, list[str]] = {}
        for (client, _, _), events in zip(waits, seen, strict=True):
            told_events = events if tell_last else events[:-1]
            words = [w for e in told_events if (w := _describe(e, client.name))]
            if words:
                told[label(client)] = words
        return told, [events[-1] for events in seen]

    async def settle(
        self,
        title: str,
        epoch: int,
        *,
        removed: Sequence[Client] = (),
        told_before: dict[str, list[str]] | None = None,
        shown: dict[str, Any] | None = None,
    ) -> None:
        """Every device of the group reaches ``epoch`` (joined or moved on), each removed
        one is told so, and all members see the same roster: ours (``self.members``).
        ``told_before``: what the devices were told earlier in the step; ``shown``: more
        to show."""
        gid = self.gid

        def reached(e: Event) -> bool:
            return isinstance(e, Joined | EpochChanged) and e.group_id == gid and e.epoch == epoch

        def gone(e: Event) -> bool:
            return isinstance(e, Removed) and e.group_id == gid

        waits = [(c, reached, f"epoch {epoch}") for c in self.members]
        waits += [(c, gone, "its removal") for c in removed]
        told, _ = await self.watch(waits)
        if told_before:
            told = {
                device: told_before.get(device, []) + told.get(device, [])
                for device in [*told_before, *(d for d in told if d not in told_before)]
            }
        expected = {label(c) for c in self.members}
        for c in self.members:
            if (roster := _roster(c, gid)) != expected:
                raise DemoFailed(
                    f"at epoch {epoch} {label(c)} sees the members {sorted(roster)}, "
                    f"not {sorted(expected)}"
                )
        self.state(title, told=told, **(shown or {}))

    def state(self, title: str, **more: Any) -> None:
        """The step's title, what the devices were told, and the group as bob sees it."""
        g = self.members[0].group(self.gid).group
        devices = member_devices(g)
        details = {k: v for k, v in more.items() if v}
        details |= {
            "epoch": g.epoch,
            "devices": [who(user, d) for user, ds in devices.items() for d in ds],
            "epoch_authenticator": g.epoch_authenticator.hex()[:16],
            "tree": tree_text(g.tree),
        }
        self.say(title, details)

    # --- Messages, checked at every recipient ------------------------------------------------

    async def message(self, sender: Client, text: str) -> None:
        """``sender`` sends ``text``; every other device of the group must decrypt exactly
        that text, as from ``sender``'s user and device."""
        gid = self.gid
        recipients = [c for c in self.members if c is not sender]
        await sender.send(gid, text)

        def this(e: Event) -> bool:
            return isinstance(e, Message) and e.group_id == gid and e.text == text

        told, ends = await self.watch(
            [(c, this, f"the message {text!r}") for c in recipients], tell_last=False
        )
        decrypted: dict[str, dict[str, str]] = {}
        for client, event in zip(recipients, ends, strict=True):
            assert isinstance(event, Message)
            if (event.sender, event.device) != (sender.name, sender.device):
                raise DemoFailed(
                    f"{label(client)} decrypted {text!r} as from "
                    f"{who(event.sender, event.device)}, not from {label(sender)}"
                )
            decrypted[label(client)] = {
                "sender": event.sender,
                "device": event.device,
                "text": event.text,
            }
        check = {
            "text": text,
            "sender": sender.name,
            "device": sender.device,
            "recipients": [label(c) for c in recipients],
            "decrypted": decrypted,
        }
        self.messages.append(check)
        details = {"told": told} if told else {}  # told before it: nothing, in this demo
        self.say(f"{label(sender)} -> group: {text!r}", details | {"decrypted": decrypted})

    # --- The conversation -------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        phone = await self.user("alice", "phone")
        laptop = await self.enrol(phone, "laptop")
        bob, carol, dave = [await self.user(n) for n in ("bob", "carol", "dave")]
        self.say(
            "alice has two devices: her phone, and her laptop enrolled with a pairing code "
            "from the phone",
            {"alice's devices": await laptop.devices()},
        )

        gid = self.gid = await bob.create_group(policy=MembershipPolicy(Joins.request))
        self.members = [bob]
        self.state(
            "bob creates a closed group that takes requests to join", group_id=gid.hex()[:16]
        )

        await bob.invite(gid, "alice")
        await bob.invite(gid, "carol")
        self.members = [bob, phone, laptop, carol]
        await self.settle(
            "bob invites alice (all her devices) and carol: KeyPackages claimed at the DS, "
            "Welcomes delivered",
            bob.group(gid).group.epoch,
        )

        await self.message(bob, "hi everyone, bob here")
        await self.message(carol, "hello bob!")
        await self.message(laptop, "hi both, I'm on my laptop")

        await bob.update(gid)
        await self.settle(
            "bob updates his keys (an empty commit with a fresh path)", bob.group(gid).group.epoch
        )

        epoch = bob.group(gid).group.epoch
        tablet = await self.enrol(laptop, "tablet")
        self.members.append(tablet)
        await self.settle(
            "alice enrols a tablet (a pairing code from her laptop); her phone adds it to the "
            "group by itself",
            epoch + 1,
        )
        await self.message(tablet, "and now from my tablet")

        epoch = bob.group(gid).group.epoch
        await tablet.stop()  # lost
        await laptop.revoke("tablet")
        self.members.remove(tablet)
        await self.settle(
            "alice loses her tablet and revokes it from her laptop; her phone removes it from "
            "the group",
            epoch + 1,
            shown={
                "alice's devices": await laptop.devices(),
                "the tablet logs in": await self.refused(tablet),
            },
        )
        await self.message(phone, "my tablet is gone, I'm on my phone")

        await laptop.remove(gid, "carol")
        self.members.remove(carol)
        await self.settle(
            "alice removes carol (from her laptop)", laptop.group(gid).group.epoch, removed=[carol]
        )

        await dave.request_join(gid)

        def request(e: Event) -> bool:
            return isinstance(e, JoinRequest) and e.group_id == gid and e.user == "dave"

        told, _ = await self.watch([(c, request, "dave's request") for c in self.members])
        await phone.approve(gid, "dave")
        self.members.append(dave)
        await self.settle(
            "dave asks to join; alice approves from her phone (nothing from outsiders is "
            "committed unasked)",
            phone.group(gid).group.epoch,
            told_before=told,
        )

        # A race: bob and dave commit for the same epoch; the DS accepts one, the SDK of the
        # other processes the winner and retries its intent.
        epoch = bob.group(gid).group.epoch
        await asyncio.gather(bob.invite(gid, "carol"), dave.update(gid))
        self.members.append(carol)
        await self.settle(
            "bob (re-invites carol) and dave (updates) raced for one epoch; both landed in turn",
            epoch + 2,
        )
        await self.message(dave, "great to be here")

        auths = {label(c): c.group(gid).group.epoch_authenticator.hex()[:16] for c in self.members}
        agree = len(set(auths.values())) == 1
        summary = {
            "epoch": bob.group(gid).group.epoch,
            "members": list(bob.members(gid)),
            "devices": [label(c) for c in self.members],
            "messages checked": len(self.messages),
            "epoch_authenticators": auths,
            "all agree": agree,
        }
        self.say("summary", summary)
        return summary


async def _scenario(
    url: str,
    say: Say,
    invite: Callable[[], str],
    messages: list[dict[str, Any]],
    cipher_suite: int = 1,
) -> dict[str, Any]:
    demo = _Demo(url, say, invite, messages, cipher_suite)
    try:
        return await demo.run()
    finally:
        await demo.stop()


def _print(title: str, details: dict[str, Any]) -> None:
    print(f"\n== {title}")
    for key, value in details.items():
        if key == "tree":
            print("   ratchet tree (as bob sees it):")
            print("\n".join("     " + line for line in str(value).splitlines()))
        elif key == "told":
            for device, words in value.items():
                for line in words:
                    print(f"   {device + ':':<16} {line}")
        elif key == "decrypted":
            for device, m in value.items():
                print(
                    f"   {device + ':':<16} decrypted  {who(m['sender'], m['device'])}: {m['text']}"
                )
        elif isinstance(value, dict):
            print(f"   {key}:")
            for k, v in value.items():
                print(f"     {k}: {v}")
        elif isinstance(value, list):
            print(f"   {key}: {', '.join(map(str, value))}")
        else:
            print(f"   {key}: {value}")


def run(as_json: bool = False, cipher_suite: int = 1) -> int:
    transcript: list[dict[str, Any]] = []
    start = time.perf_counter()

    def say(title: str, details: dict[str, Any]) -> None:
        transcript.append({"step": title, **details})
        if not as_json:
            _print(title, details)

    failure = ""
    summary: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlspy-demo-") as tmp:
        service = DeliveryService(SQLiteDatabase(Path(tmp) / "ds.sqlite"), registration="invite")
        with InProcessServer(create_app(service)) as server:
            if not as_json:
                print(f"mlspy demo: embedded Delivery Service at {server.url} (SQLite in {tmp})")
                print(f"cipher suite: {CipherSuite(cipher_suite).name} (0x{cipher_suite:04x})")
            try:
                summary = asyncio.run(
                    _scenario(
                        server.url,
                        say,
                        lambda: service.create_invite()[0],
                        messages,
                        cipher_suite,
                    )
                )
            except DemoFailed as exc:
                failure = f"check failed: {exc}"
    if not failure and not summary["all agree"]:
        failure = "check failed: the members disagree on the epoch authenticator"
    elapsed = time.perf_counter() - start
    if as_json:
        doc = {
            "cipher_suite": cipher_suite,
            "transcript": transcript,
            "messages": messages,
            "ok": not failure,
            "seconds": round(elapsed, 2),
        }
        if failure:
            doc["error"] = failure
        print(json.dumps(doc, indent=2))
    elif not failure:
        print(
            f"\nfinished in {elapsed:.1f}s: {len(messages)} messages decrypted by "
            "every recipient, as from their senders; all members agree"
        )
    if failure:
        print(f"mlspy demo: {failure}", file=sys.stderr)
        return 1
    return 0
