"""The terminal chat, driven by Textual's test pilot against a real DS: users chat, invite,
remove, leave and update, told in plain words; short group ids; the input focused at start;
history across restarts; a second device linked with a pairing code, listed and revoked;
a server with a self-signed certificate (``--ca``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from textual.widgets import Input, Static

from mlspy.cli import main
from mlspy.ds.server import InProcessServer
from mlspy.storage import SQLiteStore
from mlspy.tools.chat import HISTORY_LINES, SHORT_ID, ChatApp, History
from x509_helpers import self_signed_server


def _log(app: ChatApp) -> str:
    return "\n".join(app.transcript)


def _last(app: ChatApp, start: str) -> str:
    """The rest of the last line of the log that starts with ``start``."""
    lines = [line for line in _log(app).splitlines() if line.startswith(start)]
    return lines[-1][len(start) :].strip() if lines else ""


def _members(app: ChatApp) -> str:
    return str(app.query_one("#members", Static).content)


async def _wait(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def _type(pilot: object, app: ChatApp, text: str) -> None:
    box = app.query_one("#input", Input)
    box.value = text
    await pilot.press("enter")  # type: ignore[attr-defined]


async def _connected(*apps: ChatApp) -> None:
    await _wait(lambda: all("connected as" in _log(app) for app in apps))


async def _created(pilot: object, app: ChatApp, how: str = "") -> bytes:
    """``/create``; the new group's full id, read from the line the chat shows."""
    before = _log(app).count("created group")
    await _type(pilot, app, f"/create {how}".strip())
    await _wait(lambda: _log(app).count("created group") > before)
    full = re.findall(
        r"created group \w+ \(\w+\); its full id, for others .*: ([0-9a-f]{64})", _log(app)
    )
    return bytes.fromhex(full[-1])


def test_two_users_chat_invite_remove(server: InProcessServer) -> None:
    async def scenario() -> None:
        alice, bob = ChatApp(server.url, "alice"), ChatApp(server.url, "bob")
        async with alice.run_test() as pa, bob.run_test() as pb:
            await _connected(alice, bob)
            gid = await _created(pa, alice)
            assert gid.hex()[:SHORT_ID] in _members(alice)
            await _type(pa, alice, "/invite bob")
            await _wait(lambda: "you joined the group" in _log(bob))
            await _wait(lambda: "you added bob" in _log(alice))
            await _type(pb, bob, "hello alice")
            await _wait(lambda: "bob: hello alice" in _log(alice))
            assert "me: hello alice" in _log(bob)
            await _type(pa, alice, "hi bob")
            await _wait(lambda: "alice: hi bob" in _log(bob))
            members = _members(alice)
            assert "alice (you)" in members and "bob" in members
            await _type(pa, alice, "/tree")
            await _wait(lambda: "(leaf indices)" in _log(alice))
            await _type(pa, alice, "/remove bob")
            await _wait(lambda: "alice removed you from the group" in _log(bob))
            await _wait(lambda: "you removed bob" in _log(alice))
            await _type(pb, bob, "still here?")
            await _wait(lambda: "no group yet" in _log(bob))
            await _type(pa, alice, "/nonsense")
            await _wait(lambda: "unknown command" in _log(alice))

    asyncio.run(scenario())


def test_who_did_what_in_plain_words(server: InProcessServer) -> None:
    """Adds, an update, a removal and a committed request to leave, as each member reads
    them; alice commits bob's request to leave, and still reads that he left."""

    async def scenario() -> None:
        alice, bob, carol = (ChatApp(server.url, name) for name in ("alice", "bob", "carol"))
        async with alice.run_test() as pa, bob.run_test() as pb, carol.run_test() as pc:
            await _connected(alice, bob, carol)
            await _created(pa, alice)
            await _type(pa, alice, "/invite bob")
            await _wait(lambda: "you joined the group" in _log(bob))
            await _type(pa, alice, "/invite carol")
            await _wait(lambda: "alice added carol" in _log(bob))
            await _wait(lambda: "you joined the group" in _log(carol))
            await _wait(lambda: "carol" in _members(bob))

            await _type(pc, carol, "/update")
            await _wait(lambda: "carol updated their keys" in _log(alice))
            await _wait(lambda: "carol updated their keys" in _log(bob))
            await _wait(lambda: "you updated your keys" in _log(carol))

            await _type(pa, alice, "/remove carol")
            await _wait(lambda: "alice removed carol" in _log(bob))
            await _wait(lambda: "alice removed you from the group" in _log(carol))
            await _wait(lambda: "you removed carol" in _log(alice))

            await _type(pb, bob, "/leave")
            await _wait(lambda: "bob left the group" in _log(alice))
            await _wait(lambda: "you left the group" in _log(bob))
            assert "removed bob" not in _log(alice)
            await _wait(lambda: "bob" not in _members(alice))
            await _type(pa, alice, "/members")
            await _wait(lambda: "members of" in _log(alice))

    asyncio.run(scenario())


def test_input_focused_at_start(server: InProcessServer) -> None:
    async def scenario() -> None:
        alice = ChatApp(server.url, "alice")
        async with alice.run_test() as pilot:
            box = alice.query_one("#input", Input)
            assert alice.focused is box
            await pilot.press("h", "i")
            assert box.value == "hi"
            await _connected(alice)
            assert alice.focused is box

    asyncio.run(scenario())


def test_short_group_ids(server: InProcessServer) -> None:
    """The chat shows short ids; /join takes one of a group the chat has shown (here: its
    full id in a message), refuses an unknown or an ambiguous one, and takes a full id;
    /switch moves between our groups by short id."""

    async def scenario() -> None:
        alice, bob = ChatApp(server.url, "alice"), ChatApp(server.url, "bob")
        async with alice.run_test() as pa, bob.run_test() as pb:
            await _connected(alice, bob)
            public = await _created(pa, alice, "open")
            short = public.hex()[:SHORT_ID]
            assert f"created group {short} (open)" in _log(alice)

            await _type(pb, bob, f"/join {short}")
            await _wait(lambda: f"unknown group id {short}" in _log(bob))

            private = await _created(pa, alice)
            await _type(pa, alice, "/invite bob")
            await _wait(lambda: f"[{private.hex()[:SHORT_ID]}] you joined the group" in _log(bob))
            await _type(pa, alice, f"come to {public.hex()}")
            await _wait(lambda: f"alice: come to {public.hex()}" in _log(bob))

            await _type(pb, bob, f"/join {short}")
            await _wait(lambda: f"[{short}] you joined the group" in _log(bob))
            await _wait(lambda: f"* [{short}] bob joined the group" in _log(alice))
            assert bob.group_id == public
            await _type(pb, bob, "hello, open group")
            await _wait(lambda: f"[{short}] bob: hello, open group" in _log(alice))

            # /switch by short id (alice's current group is the private one).
            await _type(pa, alice, f"/switch {short}")
            await _wait(lambda: f"now in group {short}" in _log(alice))
            assert alice.group_id == public and short in _members(alice)

            # Ambiguous and malformed ids; a full id of a group nobody knows yet.
            alice.known.update({bytes.fromhex("ab" * 32), bytes.fromhex("ab" * 16 + "cd" * 16)})
            await _type(pa, alice, "/join abab")
            await _wait(lambda: "ambiguous group id abab: 2 known groups" in _log(alice))
            assert f"({'ab' * 16}a, {'ab' * 16}c)" in _log(alice)
            await _type(pa, alice, "/request nothex")
            await _wait(lambda: "not a group id" in _log(alice))
            other = await _created(pb, bob, "open")
            await _type(pa, alice, f"/join {other.hex()}")
            await _wait(lambda: f"[{other.hex()[:SHORT_ID]}] you joined the group" in _log(alice))

    asyncio.run(scenario())


def test_history_across_restarts(server: InProcessServer, tmp_path: Path) -> None:
    """With a state file, the lines shown come back at the next start (not the secrets),
    and the restarted chat carries on in its group; a group id shown before the restart
    (in a message) still works by its short id."""
    state = tmp_path / "alice.db"
    history = tmp_path / "alice.db.history"

    async def scenario() -> None:
        bob = ChatApp(server.url, "bob")
        store = SQLiteStore(state)
        alice = ChatApp(server.url, "alice", store=store, history=history)
        async with bob.run_test() as pb:
            async with alice.run_test() as pa:
                await _connected(alice, bob)
                assert "recovery secret" in _log(alice)
                public = await _created(pb, bob, "open")
                gid = await _created(pa, alice)
                await _type(pa, alice, "/invite bob")
                await _wait(lambda: "you joined the group" in _log(bob))
                await _type(pb, bob, f"remember me, and join {public.hex()}")
                await _wait(lambda: "bob: remember me" in _log(alice))
                secret = alice.client.new_recovery_secret
                assert secret
            store.close()
            assert history.stat().st_mode & 0o077 == 0
            assert secret not in history.read_text()

            again = ChatApp(server.url, "alice", store=SQLiteStore(state), history=history)
            async with again.run_test() as pa:
                await _connected(again)
                text = _log(again)
                assert text.index("bob: remember me") < text.index("earlier line(s)")
                assert text.index("earlier line(s)") < text.index("connected as")
                assert secret not in text and "recovery secret" not in text
                assert again.group_id == gid
                await _type(pa, again, "back again")
                await _wait(lambda: "alice: back again" in _log(bob))
                await _type(pb, bob, "welcome back")
                await _wait(lambda: "bob: welcome back" in _log(again))
                short = public.hex()[:SHORT_ID]
                await _type(pa, again, f"/join {short}")
                await _wait(lambda: f"[{short}] you joined the group" in _log(again))

    asyncio.run(scenario())


def test_history_keeps_the_last_lines(tmp_path: Path) -> None:
    """The file is cut back to the last lines when it grows, and a line cut short by a
    crash is dropped."""
    history = History(tmp_path / "h")
    for i in range(2100):
        history.add(f"line {i}", None)
    with (tmp_path / "h").open("a") as f:
        f.write('{"text": "cut sh')
    lines = history.load()
    assert len(lines) == HISTORY_LINES and lines[-1]["text"] == "line 2099"
    assert len((tmp_path / "h").read_text().splitlines()) == HISTORY_LINES
    history.add("after", bytes(32))
    last = history.load()[-1]
    assert (last["text"], last["group"]) == ("after", "00" * 32)


def test_link_a_device_list_and_revoke(server: InProcessServer) -> None:
    """alice's /link gives a pairing code; her laptop joins with it, is added to her group,
    reads bob's messages, and its messages read as hers on her other devices; /devices lists
    both; /revoke removes the laptop, and bob reads that alice removed her device."""

    async def scenario() -> None:
        alice, bob = ChatApp(server.url, "alice"), ChatApp(server.url, "bob")
        async with alice.run_test() as pa, bob.run_test() as pb:
            await _connected(alice, bob)
            gid = await _created(pa, alice)
            await _type(pa, alice, "/invite bob")
            await _wait(lambda: "you joined the group" in _log(bob))

            wrong = ChatApp(server.url, "alice", device="laptop", pairing_code="AAAA-BBBB-CC")
            async with wrong.run_test():
                await _wait(lambda: "cannot connect" in _log(wrong))
                assert "pairing code is unknown, used or expired" in _log(wrong)

            await _type(pa, alice, "/link")
            await _wait(lambda: "pairing code for a new device" in _log(alice))
            code = re.findall(r"pairing code for a new device .*: (\S+)", _log(alice))[-1]
            assert f"--user alice --device NAME --pair {code}" in _log(alice)

            laptop = ChatApp(server.url, "alice", device="laptop", pairing_code=code)
            async with laptop.run_test() as pl:
                await _connected(laptop)
                await _wait(lambda: "you joined the group" in _log(laptop))
                assert laptop.group_id == gid
                await _wait(lambda: "alice added alice's device 'laptop'" in _log(bob))
                await _wait(lambda: "you added your device 'laptop'" in _log(alice))
                await _wait(lambda: "2 devices" in _members(bob))
                assert "laptop" in _members(bob)

                await _type(pb, bob, "hello both")
                await _wait(lambda: "bob: hello both" in _log(laptop))
                await _wait(lambda: "bob: hello both" in _log(alice))
                await _type(pl, laptop, "from my laptop")
                await _wait(lambda: "me (from laptop): from my laptop" in _log(alice))
                await _wait(lambda: "alice: from my laptop" in _log(bob))

                await _type(pa, alice, "/devices")
                await _wait(lambda: "your devices:" in _log(alice))
                assert "your devices: (unnamed) (this one), laptop" in _log(alice)
                await _type(pl, laptop, "/devices")
                await _wait(lambda: "your devices: (unnamed), laptop (this one)" in _log(laptop))

                await _type(pl, laptop, "/revoke laptop")
                await _wait(lambda: "that is this device" in _log(laptop))
                await _type(pa, alice, "/revoke laptop")
                await _wait(lambda: "revoked your device 'laptop'" in _log(alice))
                await _wait(lambda: "alice removed alice's device 'laptop'" in _log(bob))
                await _wait(lambda: "you removed your device 'laptop'" in _log(alice))
                await _wait(lambda: "laptop" not in _members(bob))
                await _type(pa, alice, "/devices")
                await _wait(lambda: _last(alice, "your devices:") == "(unnamed) (this one)")

    asyncio.run(scenario())


def test_a_self_signed_server_needs_ca(tmp_path: Path) -> None:
    """An https DS with a self-signed certificate: without --ca the chat (and the command,
    before the full screen) says to use --ca; with it the chat connects."""
    from mlspy.ds.app import create_app
    from mlspy.ds.db import SQLiteDatabase
    from mlspy.ds.service import DeliveryService

    cert, key = self_signed_server(tmp_path)
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.db"))
    with InProcessServer(create_app(service), tls_cert=str(cert), tls_key=str(key)) as ds:
        result = CliRunner().invoke(main, ["chat", "--server", ds.url, "--user", "alice"])
        assert result.exit_code != 0
        assert "not trusted" in result.output and "--ca FILE" in result.output

        async def scenario() -> None:
            untrusting = ChatApp(ds.url, "alice")
            async with untrusting.run_test():
                await _wait(lambda: "cannot connect" in _log(untrusting))
                assert "--ca FILE" in _log(untrusting)
            trusting = ChatApp(ds.url, "alice", verify=str(cert))
            async with trusting.run_test():
                await _connected(trusting)

        asyncio.run(scenario())


def test_chat_in_a_post_quantum_suite(server: InProcessServer) -> None:
    """Issue 20: two chats in X-Wing with ML-DSA-87 (``mlspy chat --suite 87``): they talk,
    and their group is in that suite."""

    async def scenario() -> None:
        alice = ChatApp(server.url, "pq-alice", cipher_suite=87)
        bob = ChatApp(server.url, "pq-bob", cipher_suite=87)
        async with alice.run_test() as pa, bob.run_test() as pb:
            await _connected(alice, bob)
            await _created(pa, alice)
            (gid,) = alice.client.group_ids()  # 64 bytes here: the suite's KDF is SHA-512
            await _type(pa, alice, "/invite pq-bob")
            await _wait(lambda: "you joined the group" in _log(bob))
            await _type(pb, bob, "quantum-safe hello")
            await _wait(lambda: "pq-bob: quantum-safe hello" in _log(alice))
            assert alice.client.group(gid).group.cipher_suite.id == 87

    asyncio.run(scenario())
