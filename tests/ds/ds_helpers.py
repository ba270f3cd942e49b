"""Members talking to a real Delivery Service over loopback."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlspy.ds.client import DSClient, DSRequestError
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import (
    ApplicationMessage,
    Group,
    SigningIdentity,
    StagedCommit,
    create_key_package,
)
from mlspy.messages import Add, MLSMessage, Proposal


def status_of(fn: Callable[[], object]) -> int:
    """The HTTP status a DS call ends with (200 when it succeeds)."""
    try:
        fn()
    except DSRequestError as exc:
        return exc.status
    return 200


class Cluster:
    """One or more DS nodes; each ``url`` access hands out the next node."""

    def __init__(
        self, servers: list[InProcessServer], services: Sequence[DeliveryService] = ()
    ) -> None:
        self.servers = servers
        self.services = list(services)  # the DS objects behind the servers (the operator's)
        self._next = itertools.cycle(range(len(servers)))

    @property
    def url(self) -> str:
        return self.servers[next(self._next)].url

    @property
    def ws_url(self) -> str:
        return self.servers[next(self._next)].ws_url


@dataclass
class Member:
    name: str
    client: DSClient
    identity: SigningIdentity
    group: Group | None = None
    received: list[bytes] = field(default_factory=list)
    last_seq: int = 0

    @classmethod
    def new(cls, url: str, name: str, key_packages: int = 2) -> Member:
        identity = SigningIdentity.generate(name.encode())
        client = DSClient(url, identity)
        client.register()
        client.login()
        m = cls(name, client, identity)
        m.bundles = [create_key_package(identity) for _ in range(key_packages)]
        client.upload_key_packages(m.bundles)
        return m

    bundles: list = field(default_factory=list)  # type: ignore[type-arg]

    def create(self, *, external_joins: bool = False) -> None:
        self.group = Group.create(self.identity)
        self.client.create_group(self.group.group_info(), external_joins=external_joins)

    def add(self, *others: Member) -> int:
        assert self.group is not None
        kps = [
            MLSMessage.decode(self.client.claim_key_package(o.name.encode())).key_package
            for o in others
        ]
        out = self.group.commit([Proposal(Add(kp)) for kp in kps if kp is not None])
        seq = self.client.submit(
            self.group.group_id, out.commit, welcome=out.welcome, group_info=out.group_info
        )
        self.group.merge_pending_commit()
        return seq

    def sync(self) -> list[object]:
        """Fetch, process in order and ack everything queued for us."""
        events: list[object] = []
        items = self.client.fetch(self.last_seq)
        for item in items:
            if item["kind"] == "welcome":
                self.group = Group.join(item["data"], self.bundles)
                events.append("joined")
            else:
                assert self.group is not None
                event = self.group.process(item["data"])
                if isinstance(event, StagedCommit):
                    self.group.merge_staged_commit(event)
                    if event.self_removed:
                        self.group = None
                elif isinstance(event, ApplicationMessage):
                    self.received.append(event.data)
                events.append(event)
            self.last_seq = item["seq"]
        if items:
            self.client.ack([i["seq"] for i in items])
        return events

    def send(self, text: bytes) -> int:
        assert self.group is not None
        return self.client.submit(self.group.group_id, self.group.encrypt_application(text))


def pair(url: str) -> tuple[Member, Member]:
    """alice and bob in one group, bob joined."""
    alice, bob = Member.new(url, "alice"), Member.new(url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()
    return alice, bob


async def open_push(ws_url: str, token: str | None) -> Any:
    """A WebSocket to ``/v1/ws``, authenticated by its first message (never the URL), after
    the server's ``ready`` answer."""
    import json

    import websockets

    sock = await websockets.connect(f"{ws_url}/v1/ws")
    await sock.send(json.dumps({"token": token}))
    ready = json.loads(await sock.recv())
    assert ready.get("ready") is True, ready
    return sock
