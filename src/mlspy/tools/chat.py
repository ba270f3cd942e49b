"""``mlspy chat``: an interactive end-to-end encrypted terminal chat (Textual) over a DS.

The chat speaks of people: a user has devices (``mlspy.users``), groups hold users, and
every event is shown in plain words — who did what to whom (``mlspy.client.events.describe``:
"alice added carol", "carol left the group", "bob updated their keys", "me (from laptop):
hi" for a message from another device of our own user). The members panel lists the
current group's users and their devices.

Type a line to send it to the current group; commands:

* ``/create [invite|request|open]`` a group (its membership policy: invite only by default;
  ``request`` lets outsiders ask, a member ``/approve``s; ``open`` lets anyone join by
  external commit), ``/invite USER`` (every device of the user), ``/remove USER``,
  ``/leave``, ``/request GROUP`` (ask to join), ``/approve USER``, ``/join GROUP`` (external
  join of an open group), ``/switch GROUP`` (talk in another of our groups), ``/groups``,
  ``/members``, ``/tree``, ``/update`` (fresh keys), ``/code`` (a single-use invite code for
  a friend to register with), ``/help``.
* Devices of our user: ``/devices`` lists them, ``/link`` shows a pairing code for a new one
  (``mlspy chat --server URL --user NAME --device NAME --pair CODE`` on it: our devices then
  add it to every group of ours), ``/revoke DEVICE`` revokes one (it is removed from every
  group).

Group ids: the chat shows the short id of a group (its first 16 hex digits). A command that
takes a GROUP accepts the full 64-hex id, or a short id (any leading part of the id) of a
group the chat knows: ours, and those it has shown (created, joined, in an event, a full id
seen in a message, or in the history).

Names are accounts: a new name may need an invite code (``mlspy chat --invite CODE``); the
name's recovery secret is shown once, when it is made; ``--recover SECRET`` takes the name
over on a new device after every old one (its key) was lost. ``--ca FILE`` trusts a server's
self-signed certificate (or private CA). With ``--state FILE`` the chat keeps the lines it
showed in ``FILE.history`` (JSON lines, readable by the user only) and shows the last
``HISTORY_LINES`` of them at start; secrets and codes are never kept there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Input, RichLog, Static

from mlspy.client import (
    Client,
    EpochChanged,
    Event,
    Joined,
    JoinRequest,
    MemberAdded,
    MemberRemoved,
    Message,
    Removed,
    member_devices,
)
from mlspy.client.events import describe
from mlspy.errors import MLSError
from mlspy.group import Group, Joins, MembershipPolicy
from mlspy.storage import Store
from mlspy.tools.tree_picture import render_text
from mlspy.users import split_identity

SHORT_ID = 16  # hex digits of a group id the chat shows
HISTORY_LINES = 200  # lines of history shown at start
HISTORY_COMPACT = 2000  # past this many lines, the history file keeps the last HISTORY_LINES
_HEX = re.compile(r"[0-9a-f]+")
_FULL_ID = re.compile(r"\b[0-9a-fA-F]{64}\b")

HELP = """commands (GROUP: a short group id the chat shows, or the full 64-hex id):
  /create [invite|request|open]  a new group: invited only (default), ask to join, anyone
  /invite USER  add every device of USER     /remove USER  remove every device of USER
  /request GROUP  ask to join    /approve USER  let a requester in    /leave
  /join GROUP  join an open group    /switch GROUP  talk in another of yours    /groups
  /members  /tree  /update (fresh keys)    /code  an invite code for a friend
  /devices  your devices    /link  a pairing code for a new device    /revoke DEVICE  revoke one
  /help — anything else is sent to the current group"""


def short_id(group_id: bytes) -> str:
    """The short id the chat shows for a group: its first ``SHORT_ID`` hex digits."""
    return group_id.hex()[:SHORT_ID]


def _shared(a: str, b: str) -> int:
    """How many leading characters two strings share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _device_label(device: str) -> str:
    return device or "(unnamed)"


def untrusted_certificate(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a TLS certificate the client does not trust."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def connect_problem(exc: BaseException) -> str:
    """What went wrong, with what to do about it when the server's certificate is not
    trusted (the DS's own refusals say what to do: an invite code, a pairing code...)."""
    if untrusted_certificate(exc):
        return (
            f"the server's TLS certificate is not trusted ({exc}); if the server uses a "
            "self-signed certificate or a private CA, pass that certificate with --ca FILE"
        )
    return str(exc) or type(exc).__name__


class History:
    """The lines the chat showed, kept in a file of their own next to the state (JSON
    lines: the text, when, and the group it was about), created readable by the user only.
    A line cut short by a crash is dropped when the file is read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[dict[str, Any]]:
        """The last ``HISTORY_LINES`` records (rewriting a file grown past
        ``HISTORY_COMPACT`` lines, or with a broken line, to them)."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        records: list[dict[str, Any]] = []
        broken = bool(raw) and not raw.endswith("\n")
        for line in raw.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                broken = True
                continue
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                records.append(record)
        last = records[-HISTORY_LINES:]
        if broken or len(records) > HISTORY_COMPACT:
            self._rewrite(last)
        return last

    def add(self, text: str, group: bytes | None) -> None:
        record: dict[str, Any] = {"at": int(time.time()), "text": text}
        if group is not None:
            record["group"] = group.hex()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        os.replace(temporary, self.path)


class ChatApp(App[None]):
    CSS = """
    #log { width: 3fr; border: round $accent; }
    #members { width: 1fr; border: round $secondary; padding: 0 1; }
    """
    TITLE = "mlspy chat"
    AUTO_FOCUS = "#input"

    def __init__(
        self,
        server: str,
        user: str,
        *,
        store: Store | None = None,
        invite_code: str | None = None,
        recovery_secret: str | None = None,
        device: str = "",
        pairing_code: str | None = None,
        verify: bool | str = True,
        history: str | Path | None = None,
        cipher_suite: int = 1,
    ) -> None:
        """A chat as ``user``'s ``device`` (``""``: the user's first device, named by the
        bare user name; a further one registers with a ``pairing_code`` from ``/link``).
        ``verify``: a CA file trusted for https (or False/True). ``history``: the file
        that keeps the lines shown (``None``: none kept)."""
        super().__init__()
        self.client = Client(
            server,
            user,
            store=store,
            poll_interval=0.3,
            invite_code=invite_code,
            device=device,
            pairing_code=pairing_code,
            verify=verify,
            cipher_suite=cipher_suite,
        )
        self.server_url = server.rstrip("/")
        self.user = user
        # This device, as its credential names it (a stored identity wins over ``device``).
        self.my_device = split_identity(self.client.identity.credential.identity)[1]
        self.recover_with = recovery_secret
        self.group_id: bytes | None = None
        self.known: set[bytes] = set()  # group ids the chat has shown or been given
        self.history = History(Path(history)) if history is not None else None
        self._leaving: set[bytes] = set()  # groups we asked to leave
        self._removing: set[tuple[bytes, str]] = set()  # our /remove USER, per group
        self._held: dict[bytes, list[MemberRemoved]] = {}  # see _hold
        self.transcript: list[str] = []  # every line shown, unwrapped (the log wraps them)

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

    def say(self, text: str, *, keep: bool = True, group: bytes | None = None) -> None:
        """Show a line; ``keep``: also in the history (never a secret, code or listing)."""
        self._write(text)
        if keep and self.history is not None:
            try:
                self.history.add(text, group)
            except OSError as exc:
                self.history = None
                self._write(f"! the history is no longer kept: {exc}")

    def _write(self, text: str, style: str = "") -> None:
        self.transcript.append(text)
        self.log_view.write(Text(text, style) if style else text)

    def _tagged(self, group_id: bytes, line: str, *, always: bool = False) -> str:
        """A line about a group other than the current one starts with its short id."""
        if not always and group_id == self.group_id:
            return line
        mark, line = ("* ", line[2:]) if line.startswith("* ") else ("", line)
        return f"{mark}[{short_id(group_id)}] {line}"

    def _learn_ids(self, text: str) -> None:
        """Full group ids seen in a text: known from now on (their short ids work)."""
        for match in _FULL_ID.findall(text):
            self.known.add(bytes.fromhex(match))

    def _restore_history(self) -> None:
        if self.history is None:
            return
        try:
            records = self.history.load()
        except OSError as exc:
            self.say(f"! cannot read the history: {exc}", keep=False)
            self.history = None
            return
        for record in records:
            self._write(record["text"], "dim")
            group = record.get("group")
            if isinstance(group, str) and len(group) == 64 and _HEX.fullmatch(group):
                self.known.add(bytes.fromhex(group))
            self._learn_ids(record["text"])
        if records:
            self._write(f"— {len(records)} earlier line(s), from {self.history.path} —", "dim")

    def _show_title(self) -> None:
        parts = [self.user]
        if self.my_device:
            parts.append(f"device {self.my_device}")
        if self.group_id is not None:
            parts.append(f"group {short_id(self.group_id)}")
        self.sub_title = " · ".join(parts)

    async def on_mount(self) -> None:
        self.query_one("#input", Input).focus()
        self._show_title()
        self._restore_history()
        restored = bool(self.transcript)
        try:
            if self.recover_with:
                rejoined = await self.client.recover(self.recover_with)
                self.say(f"* recovered the name {self.user}: rejoined {len(rejoined)} group(s)")
            else:
                await self.client.start()
        except Exception as exc:  # e.g. the server is not reachable, or needs an invite
            self.say(f"cannot connect: {connect_problem(exc)}", keep=False)
            return
        ids = self.client.group_ids()
        self.known.update(ids)
        if ids:
            self.group_id = ids[0]
        device = f" (device {self.my_device})" if self.my_device else ""
        self.say(f"connected as {self.user}{device}. /help lists the commands", keep=False)
        if not restored:
            self.say(HELP, keep=False)
        if self.client.new_recovery_secret:
            self.say(
                f"* your recovery secret (shown once: write it down): "
                f"{self.client.new_recovery_secret} — if you lose every device, "
                f"`mlspy chat --user {self.user} --recover SECRET` on a new one takes your "
                "name back",
                keep=False,
            )
        self.refresh_members()
        self.run_worker(self.pump_events(), exclusive=True)

    async def on_unmount(self) -> None:
        await self.client.stop()

    async def pump_events(self) -> None:
        async for event in self.client.events():
            self.show(event)

    def show(self, event: Event) -> None:
        gid = event.group_id
        self.known.add(gid)
        if isinstance(event, Joined):
            self.group_id = gid
        if isinstance(event, MemberRemoved) and self._hold(event):
            return
        if isinstance(event, EpochChanged):
            self._release(event)
        line = self.words(event)
        if line:
            self.say(self._tagged(gid, line, always=isinstance(event, Joined)), group=gid)
        if isinstance(event, Message):
            self._learn_ids(event.text)
        if isinstance(event, Removed):
            self._leaving.discard(gid)
            if gid == self.group_id:
                self.group_id = None
        self.refresh_members()

    def words(self, event: Event) -> str:
        """The line for an event: who did what, in plain words."""
        me = self.client.name
        if isinstance(event, Removed) and event.group_id in self._leaving:
            return "* you left the group"  # our request to leave, committed by a member
        if isinstance(event, MemberAdded) and event.by == event.user != me:
            return f"* {event.user} joined the group"  # by external commit
        line = describe(event, me=me)
        if isinstance(event, JoinRequest):
            line += f": /approve {event.user} to let them in"
        if isinstance(event, Message) or not line:
            return line
        return f"* {line}"

    def _hold(self, event: MemberRemoved) -> bool:
        """A user removed by our user that this chat did not ``/remove``: a request to leave
        that we committed, or a removal by another device of ours. The SDK tells the events
        of a commit of ours as it made them, with a leave counted as a removal; the epoch
        event that follows names the committing device: held until then (``_release``)."""
        if event.by != self.client.name:
            return False
        key = (event.group_id, event.user)
        if key in self._removing:
            self._removing.discard(key)
            return False
        self._held.setdefault(event.group_id, []).append(event)
        return True

    def _release(self, epoch: EpochChanged) -> None:
        ours = epoch.by == self.client.name and epoch.device == self.my_device
        for held in self._held.pop(epoch.group_id, []):
            line = f"{held.user} left the group" if ours else describe(held, me=self.client.name)
            self.say(self._tagged(held.group_id, f"* {line}"), group=held.group_id)

    def refresh_members(self) -> None:
        self._show_title()
        view = self.query_one("#members", Static)
        ids = self.client.group_ids()
        if self.group_id is None or self.group_id not in ids:
            others = f"\n\n{len(ids)} group(s): /groups" if ids else ""
            view.update(f"(no group){others}")
            return
        group = self.client.group(self.group_id).group
        lines = [f"group {short_id(self.group_id)}", f"epoch {group.epoch}", ""]
        lines += self._people(group)
        if len(ids) > 1:
            lines += ["", f"+{len(ids) - 1} other group(s): /groups"]
        view.update("\n".join(lines))

    def _people(self, group: Group) -> list[str]:
        """The users of a group, each with its devices when it has more than one or a
        named one."""
        lines = []
        for user, devices in member_devices(group).items():
            you = " (you)" if user == self.client.name else ""
            if devices == ("",):
                lines.append(f"{user}{you}")
                continue
            many = "s" if len(devices) > 1 else ""
            lines.append(f"{user}{you}: {len(devices)} device{many}")
            lines.append("  " + ", ".join(_device_label(d) for d in devices))
        return lines

    async def on_input_submitted(self, message: Input.Submitted) -> None:
        text = message.value.strip()
        message.input.value = ""
        if not text:
            return
        try:
            await self.handle(text)
        except (MLSError, ValueError, httpx.HTTPError) as exc:
            self.say(f"! {connect_problem(exc)}", keep=False)
        self.refresh_members()

    def resolve(self, text: str) -> bytes:
        """A group id from the full 64-hex id, or from a short id (a leading part of it) of a
        group we know: ours, and those the chat has shown."""
        arg = text.strip().lower()
        if not _HEX.fullmatch(arg) or len(arg) > 64:
            raise ValueError(f"not a group id: {text!r} (a short id the chat shows, or 64 hex)")
        if len(arg) == 64:
            gid = bytes.fromhex(arg)
            self.known.add(gid)
            return gid
        matches = sorted(
            g for g in self.known | set(self.client.group_ids()) if g.hex().startswith(arg)
        )
        if not matches:
            raise ValueError(
                f"unknown group id {arg}: a short id works for groups this chat knows (yours, "
                "and those it has shown); give the full 64-hex id"
            )
        if len(matches) > 1:
            ids = [g.hex() for g in matches]  # sorted: neighbours share the most
            shared = max(_shared(a, b) for a, b in itertools.pairwise(ids))
            width = max(SHORT_ID, shared + 1)
            shown = ", ".join(i[:width] for i in ids)
            raise ValueError(
                f"ambiguous group id {arg}: {len(matches)} known groups start with it "
                f"({shown}); give more of it"
            )
        return matches[0]

    async def handle(self, text: str) -> None:
        if not text.startswith("/"):
            gid = self._need_group()
            await self.client.send(gid, text)
            self.say(f"me: {text}", group=gid)
            self._learn_ids(text)
            return
        command, _, arg = text.partition(" ")
        arg = arg.strip()
        if command == "/help":
            self.say(HELP, keep=False)
        elif command == "/create" and arg in ("", "invite", "request", "open"):
            policy = MembershipPolicy(Joins[arg or "invite"])
            gid = self.group_id = await self.client.create_group(policy=policy)
            self.known.add(gid)
            self.say(
                f"* created group {short_id(gid)} ({policy.joins.name}); its full id, for "
                f"others to /join or /request: {gid.hex()}",
                group=gid,
            )
        elif command == "/request" and arg:
            gid = self.resolve(arg)
            await self.client.request_join(gid)
            self.say(f"* asked to join group {short_id(gid)}: a member approves", group=gid)
        elif command == "/approve" and arg:
            gid = self._need_group()
            approved = await self.client.approve(gid, arg)
            if not approved:
                self.say(f"! no request from {arg}", keep=False)
        elif command == "/invite" and arg:
            gid = self._need_group()
            await self.client.invite(gid, arg)  # the event says "you added USER"
            if arg not in self.client.members(gid):
                self.say(f"! {arg} was not added: no such user, or no device of theirs ready")
        elif command == "/join" and arg:
            gid = self.resolve(arg)
            await self.client.join_external(gid)  # the event says "you joined the group"
            self.group_id = gid
        elif command == "/switch" and arg:
            gid = self.resolve(arg)
            if gid not in self.client.group_ids():
                raise ValueError(f"you are not in group {short_id(gid)}: /join or /request it")
            self.group_id = gid
            members = ", ".join(self.client.members(gid))
            self.say(f"* now in group {short_id(gid)}; members: {members}", keep=False)
        elif command == "/groups":
            self._list_groups()
        elif command == "/remove" and arg:
            gid = self._need_group()
            if arg not in self.client.members(gid):
                raise ValueError(f"{arg} is not a member of this group")
            self._removing.add((gid, arg))
            try:
                await self.client.remove(gid, arg)  # the event says "you removed USER"
            except BaseException:
                self._removing.discard((gid, arg))
                raise
        elif command == "/leave":
            gid = self._need_group()
            self._leaving.add(gid)
            await self.client.leave(gid)
            self.say("* asked the group to remove you (a member commits it)", group=gid)
        elif command == "/members":
            gid = self._need_group()
            people = self._people(self.client.group(gid).group)
            self.say(f"members of {short_id(gid)}:\n" + "\n".join(people), keep=False)
        elif command == "/tree":
            group = self.client.group(self._need_group()).group
            self.say(render_text(group.tree), keep=False)
        elif command == "/code":
            code = await asyncio.to_thread(self.client.ds.create_invite)
            self.say(
                f"* invite code for a friend (single use): {code} (mlspy chat --invite)",
                keep=False,
            )
        elif command == "/update":
            await self.client.update(self._need_group())  # "you updated your keys"
        elif command == "/devices":
            devices = await self.client.devices()
            shown = [
                _device_label(d) + (" (this one)" if d == self.my_device else "") for d in devices
            ]
            self.say(f"your devices: {', '.join(shown)}", keep=False)
        elif command == "/link":
            code = await self.client.pairing_code()
            self.say(
                f"* pairing code for a new device (single use, ten minutes): {code}\n"
                f"  on the new device: mlspy chat --server {self.server_url} --user "
                f"{self.user} --device NAME --pair {code} [--state FILE]\n"
                "  your devices then add it to all your groups",
                keep=False,
            )
        elif command == "/revoke" and arg:
            if arg == self.my_device:
                raise ValueError("that is this device: revoke it from another of your devices")
            await self.client.revoke(arg)
            self.say(f"* revoked your device {arg!r}: it is being removed from your groups")
        else:
            self.say(f"! unknown command or missing argument: {text}. /help lists them", keep=False)

    def _list_groups(self) -> None:
        ids = self.client.group_ids()
        if not ids:
            self.say("no groups yet: /create one or wait for an invitation", keep=False)
            return
        lines = []
        for gid in ids:
            mark = "*" if gid == self.group_id else " "
            lines.append(f"{mark} {short_id(gid)}  {', '.join(self.client.members(gid))}")
        self.say("your groups (* the current one; /switch GROUP):\n" + "\n".join(lines), keep=False)

    def _need_group(self) -> bytes:
        if self.group_id is None:
            raise ValueError(
                "no group yet: /create one, /switch to one of yours, or wait for an invitation"
            )
        return self.group_id


def run(
    server: str,
    user: str,
    store_path: str | None = None,
    *,
    invite_code: str | None = None,
    recovery_secret: str | None = None,
    device: str = "",
    pairing_code: str | None = None,
    ca: str | None = None,
    cipher_suite: int = 1,
) -> None:
    store = None
    history = None
    if store_path:
        from mlspy.storage import SQLiteStore

        store = SQLiteStore(store_path)
        history = f"{store_path}.history"
    app = ChatApp(
        server,
        user,
        store=store,
        invite_code=invite_code,
        recovery_secret=recovery_secret,
        device=device,
        pairing_code=pairing_code,
        verify=ca if ca is not None else True,
        history=history,
        cipher_suite=cipher_suite,
    )
    try:
        app.run()
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
