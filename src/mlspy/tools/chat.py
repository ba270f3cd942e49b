"""``mlspy chat``: an interactive end-to-end encrypted terminal chat (Textual) over a DS.

Type a line to send it to the current group; commands: ``/create [invite|request|open]``
(the group's membership policy: invite only by default; ``request`` lets outsiders ask, a
member ``/approve``s; ``open`` lets anyone join by external commit), ``/invite USER``,
``/request GROUP`` (ask to join, group id in hex), ``/approve USER``, ``/join GROUP``
(external join of an open group), ``/remove USER``, ``/leave``, ``/members``, ``/tree``,
``/update``, ``/code`` (a single-use invite code for a friend to register with), ``/help``.

Names are accounts: a new name may need an invite code (``mlspy chat --invite CODE``); the
name's recovery secret is shown once, when it is made; ``--recover SECRET`` takes the name
over on a new device after the old one (its key) was lost.
"""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Input, RichLog, Static

from mlspy.client import Client, Event, Joined, JoinRequest, Message, Removed
from mlspy.client.events import describe
from mlspy.errors import MLSError
from mlspy.group import Joins, MembershipPolicy
from mlspy.storage import Store
from mlspy.tools.tree_picture import render_text

HELP = (
    "commands: /create [invite|request|open]  /invite USER  /request GROUP_HEX  "
    "/approve USER  /join GROUP_HEX  /remove USER  /leave  /members  /tree  /update  /code  "
    "/help "
    "— anything else is sent to the group"
)


class ChatApp(App[None]):
    CSS = """
    #log { width: 3fr; border: round $accent; }
    #members { width: 1fr; border: round $secondary; padding: 0 1; }
    """
    TITLE = "mlspy chat"

    def __init__(
        self,
        server: str,
        user: str,
        *,
        store: Store | None = None,
        invite_code: str | None = None,
        recovery_secret: str | None = None,
    ) -> None:
        super().__init__()
        self.client = Client(server, user, store=store, poll_interval=0.3, invite_code=invite_code)
        self.user = user
        self.recover_with = recovery_secret
        self.group_id: bytes | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield RichLog(id="log", wrap=True, markup=False)
            yield Static("", id="members")
        yield Input(placeholder=f"{self.user}: message or /command", id="input")
        yield Footer()

    @property
    def log_view(self) -> RichLog:
        return self.query_one("#log", RichLog)

    def say(self, text: str) -> None:
        self.log_view.write(text)

    async def on_mount(self) -> None:
        self.sub_title = self.user
        try:
            if self.recover_with:
                rejoined = await self.client.recover(self.recover_with)
                self.say(f"* recovered the name {self.user}: rejoined {len(rejoined)} group(s)")
            else:
                await self.client.start()
        except Exception as exc:  # e.g. the server is not reachable, or needs an invite
            self.say(f"cannot connect: {exc}")
            return
        ids = self.client.group_ids()
        if ids:
            self.group_id = ids[0]
        self.say(f"connected as {self.user}. {HELP}")
        if self.client.new_recovery_secret:
            self.say(
                f"* your recovery secret (shown once: write it down): "
                f"{self.client.new_recovery_secret} — if you lose this device, "
                f"`mlspy chat --user {self.user} --recover SECRET` on a new one takes your "
                "name back"
            )
        self.refresh_members()
        self.run_worker(self.pump_events(), exclusive=True)

    async def on_unmount(self) -> None:
        await self.client.stop()

    async def pump_events(self) -> None:
        async for event in self.client.events():
            self.show(event)

    def show(self, event: Event) -> None:
        if isinstance(event, Joined):
            self.group_id = event.group_id
        elif isinstance(event, Removed) and event.group_id == self.group_id:
            self.group_id = None
        line = describe(event, me=self.client.name)
        if isinstance(event, JoinRequest):
            line += f": /approve {event.user} to let them in"
        if line:
            self.say(line if isinstance(event, Message) else f"* {line}")
        self.refresh_members()

    def refresh_members(self) -> None:
        view = self.query_one("#members", Static)
        if self.group_id is None or self.group_id not in self.client.group_ids():
            view.update("(no group)")
            return
        group = self.client.group(self.group_id).group
        names = "\n".join(self.client.members(self.group_id))
        view.update(f"group {self.group_id.hex()[:8]}\nepoch {group.epoch}\n\n{names}")

    async def on_input_submitted(self, message: Input.Submitted) -> None:
        text = message.value.strip()
        message.input.value = ""
        if not text:
            return
        try:
            await self.handle(text)
        except (MLSError, ValueError) as exc:
            self.say(f"! {exc}")
        self.refresh_members()

    async def handle(self, text: str) -> None:
        if not text.startswith("/"):
            gid = self._need_group()
            await self.client.send(gid, text)
            self.say(f"{self.user}: {text}")
            return
        command, _, arg = text.partition(" ")
        arg = arg.strip()
        if command == "/help":
            self.say(HELP)
        elif command == "/create" and arg in ("", "invite", "request", "open"):
            policy = MembershipPolicy(Joins[arg or "invite"])
            self.group_id = await self.client.create_group(policy=policy)
            self.say(f"* created group {self.group_id.hex()} ({policy.joins.name})")
        elif command == "/request" and arg:
            await self.client.request_join(bytes.fromhex(arg))
            self.say("* asked to join: a member approves")
        elif command == "/approve" and arg:
            approved = await self.client.approve(self._need_group(), arg)
            self.say(f"* approved {arg}" if approved else f"! no request from {arg}")
        elif command == "/invite" and arg:
            await self.client.invite(self._need_group(), arg)
            self.say(f"* invited {arg}")
        elif command == "/join" and arg:
            gid = bytes.fromhex(arg)
            await self.client.join_external(gid)
            self.group_id = gid
        elif command == "/remove" and arg:
            await self.client.remove(self._need_group(), arg)
            self.say(f"* removed {arg}")
        elif command == "/leave":
            await self.client.leave(self._need_group())
            self.say("* asked the group to remove you")
        elif command == "/members":
            self.say("members: " + ", ".join(self.client.members(self._need_group())))
        elif command == "/tree":
            group = self.client.group(self._need_group()).group
            self.say(render_text(group.tree))
        elif command == "/code":
            code = await asyncio.to_thread(self.client.ds.create_invite)
            self.say(f"* invite code for a friend (single use): {code} (mlspy chat --invite)")
        elif command == "/update":
            await self.client.update(self._need_group())
            self.say("* updated your keys")
        else:
            self.say(f"! unknown command or missing argument: {text}. {HELP}")

    def _need_group(self) -> bytes:
        if self.group_id is None:
            raise ValueError("no group yet: /create one or wait for an invitation")
        return self.group_id


def run(
    server: str,
    user: str,
    store_path: str | None = None,
    *,
    invite_code: str | None = None,
    recovery_secret: str | None = None,
) -> None:
    store = None
    if store_path:
        from mlspy.storage import SQLiteStore

        store = SQLiteStore(store_path)
    ChatApp(
        server, user, store=store, invite_code=invite_code, recovery_secret=recovery_secret
    ).run()
