"""The terminal chat, driven by Textual's test pilot against a real DS: two users chat, an
invite, a removal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.widgets import RichLog, Static

from mlspy.ds.server import InProcessServer
from mlspy.tools.chat import ChatApp


def _log(app: ChatApp) -> str:
    return "\n".join(line.text for line in app.query_one("#log", RichLog).lines)


async def _wait(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def _type(pilot: object, app: ChatApp, text: str) -> None:
    box = app.query_one("#input")
    box.value = text  # type: ignore[attr-defined]
    await pilot.press("enter")  # type: ignore[attr-defined]


def test_two_users_chat_invite_remove(server: InProcessServer) -> None:
    async def scenario() -> None:
        alice, bob = ChatApp(server.url, "alice"), ChatApp(server.url, "bob")
        async with alice.run_test() as pa, bob.run_test() as pb:
            await _wait(lambda: "connected" in _log(alice) and "connected" in _log(bob))
            await _type(pa, alice, "/create")
            await _wait(lambda: "created group" in _log(alice))
            await _type(pa, alice, "/invite bob")
            await _wait(lambda: "you joined the group" in _log(bob))
            await _type(pb, bob, "hello alice")
            await _wait(lambda: "bob: hello alice" in _log(alice))
            await _type(pa, alice, "hi bob")
            await _wait(lambda: "alice: hi bob" in _log(bob))
            members = str(alice.query_one("#members", Static).content)
            assert "alice" in members and "bob" in members
            await _type(pa, alice, "/tree")
            await _wait(lambda: "(leaf indices)" in _log(alice))
            await _type(pa, alice, "/remove bob")
            await _wait(lambda: "alice removed you" in _log(bob))
            await _type(pb, bob, "still here?")
            await _wait(lambda: "no group yet" in _log(bob))
            await _type(pa, alice, "/nonsense")
            await _wait(lambda: "unknown command" in _log(alice))

    asyncio.run(scenario())
