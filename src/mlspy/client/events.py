"""What the SDK tells the application, one frozen class per kind of event, each naming who
did what to whom — people (users), with their devices where it matters (``mlspy.users``).

Every event has the group it happened in, the epoch it happened at, and ``id``: the number
the client's inbox gave it (events are numbered in the order they happened; one delivered
again after a crash has the same id). ``kind`` names the class for code that dispatches on
strings. Events are stored in the client's inbox until the application acknowledges them
(``inbox.py``), encoded by :func:`encode` / :func:`decode`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mlspy.errors import DecodeError


@dataclass(frozen=True)
class Event:
    """The base of every event."""

    kind: ClassVar[str] = ""
    group_id: bytes
    epoch: int
    id: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class Message(Event):
    """``sender``'s ``device`` sent application data (perhaps another device of our own
    user: then ``sender`` is our user name)."""

    kind: ClassVar[str] = "message"
    sender: str
    device: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


@dataclass(frozen=True)
class Joined(Event):
    """We joined the group (by a Welcome, or by external commit). ``by``: who added us,
    where the SDK knows it (empty for now: a Welcome's GroupInfo names its signer, but the
    joined state does not keep it)."""

    kind: ClassVar[str] = "joined"
    members: tuple[str, ...]
    by: str = ""


@dataclass(frozen=True)
class MemberAdded(Event):
    """``by`` added ``user`` (these ``devices`` of theirs)."""

    kind: ClassVar[str] = "member_joined"
    user: str
    devices: tuple[str, ...]
    by: str

    @property
    def sender(self) -> str:
        return self.user


@dataclass(frozen=True)
class MemberRemoved(Event):
    """``by`` removed ``user`` (every device of theirs)."""

    kind: ClassVar[str] = "member_removed"
    user: str
    by: str

    @property
    def sender(self) -> str:
        return self.user


@dataclass(frozen=True)
class MemberLeft(Event):
    """``user`` left (asked to be removed; ``by`` committed it)."""

    kind: ClassVar[str] = "member_left"
    user: str
    by: str

    @property
    def sender(self) -> str:
        return self.user


@dataclass(frozen=True)
class DeviceAdded(Event):
    """A new ``device`` of ``user``, a member already, was added by ``by``."""

    kind: ClassVar[str] = "device_added"
    user: str
    device: str
    by: str


@dataclass(frozen=True)
class DeviceRemoved(Event):
    """``device`` of ``user`` (who stays a member) was removed by ``by`` (revoked)."""

    kind: ClassVar[str] = "device_removed"
    user: str
    device: str
    by: str


@dataclass(frozen=True)
class KeysUpdated(Event):
    """``user``'s ``device`` refreshed its keys (a commit with nothing else in it)."""

    kind: ClassVar[str] = "keys_updated"
    user: str
    device: str


@dataclass(frozen=True)
class EpochChanged(Event):
    """A commit by ``by``'s ``device`` moved the group to ``epoch``: its members now. Comes
    after the events that say what the commit did (added, removed, left, keys updated)."""

    kind: ClassVar[str] = "epoch"
    members: tuple[str, ...]
    by: str
    device: str = ""

    @property
    def sender(self) -> str:
        return self.by


@dataclass(frozen=True)
class Removed(Event):
    """``by`` removed us (or committed our request to leave)."""

    kind: ClassVar[str] = "removed"
    by: str = ""


@dataclass(frozen=True)
class JoinRequest(Event):
    """``user`` asks to join (``Client.approve`` lets them in)."""

    kind: ClassVar[str] = "join_request"
    user: str

    @property
    def sender(self) -> str:
        return self.user


def _device(user: str, device: str, me: str) -> str:
    owner = "your" if user == me else f"{user}'s"
    return f"{owner} device {device!r}" if device else f"{owner} device"


def describe(event: Event, me: str = "") -> str:
    """The event in plain words, as a person reads it (``me``: our user name). Empty for
    an event that says nothing new to a person (the epoch after the events of a commit)."""

    def who(user: str) -> str:
        return "you" if user == me else user

    if isinstance(event, Message):
        if event.sender == me:
            return f"me (from {event.device or 'my other device'}): {event.text}"
        return f"{event.sender}: {event.text}"
    if isinstance(event, Joined):
        by = f" ({who(event.by)} added you)" if event.by else ""
        return f"you joined the group{by}; members: {', '.join(event.members)}"
    if isinstance(event, MemberAdded):
        many = f" ({len(event.devices)} devices)" if len(event.devices) > 1 else ""
        return f"{who(event.by)} added {who(event.user)}{many}"
    if isinstance(event, MemberRemoved):
        return f"{who(event.by)} removed {who(event.user)}"
    if isinstance(event, MemberLeft):
        return f"{who(event.user)} left the group"
    if isinstance(event, DeviceAdded):
        return f"{who(event.by)} added {_device(event.user, event.device, me)}"
    if isinstance(event, DeviceRemoved):
        return f"{who(event.by)} removed {_device(event.user, event.device, me)}"
    if isinstance(event, KeysUpdated):
        return "you updated your keys" if event.user == me else f"{event.user} updated their keys"
    if isinstance(event, Removed):
        return f"{who(event.by)} removed you from the group" if event.by else "you left the group"
    if isinstance(event, JoinRequest):
        return f"{who(event.user)} asks to join the group"
    return ""


KINDS: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        Message,
        Joined,
        MemberAdded,
        MemberRemoved,
        MemberLeft,
        DeviceAdded,
        DeviceRemoved,
        KeysUpdated,
        EpochChanged,
        Removed,
        JoinRequest,
    )
}


def encode(event: Event) -> bytes:
    """JSON: the kind and the fields (bytes as hex, tuples as lists)."""
    out: dict[str, Any] = {"kind": event.kind}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        out[f.name] = value.hex() if isinstance(value, bytes) else value
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


def decode(data: bytes) -> Event:
    try:
        raw = json.loads(data)
        cls = KINDS[raw.pop("kind")]
        args: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = raw.pop(f.name) if f.name in raw else None
            if value is None:
                continue
            if f.type in ("bytes",):
                value = bytes.fromhex(value)
            elif isinstance(value, list):
                value = tuple(value)
            args[f.name] = value
        if raw:
            raise ValueError(f"unknown fields {sorted(raw)}")
        return cls(**args)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecodeError(f"stored event: {exc}") from None


__all__ = [
    "KINDS",
    "DeviceAdded",
    "DeviceRemoved",
    "EpochChanged",
    "Event",
    "JoinRequest",
    "Joined",
    "KeysUpdated",
    "MemberAdded",
    "MemberLeft",
    "MemberRemoved",
    "Message",
    "Removed",
    "decode",
    "describe",
    "encode",
]
