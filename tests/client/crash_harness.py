"""SDK clients that are killed (SIGKILL) at chosen store-write points or at random times,
for the crash-loop test and ``benchmarks/crash_loop.py``.

A *zygote* subprocess imports mlspy once and forks one child per command, so a run costs a
fork, not an interpreter start. A child opens the actor's SQLite store with a write hook,
starts the :class:`~mlspy.client.Client` without receiving, receives what is queued (unless
the command is a receive itself: ``sync`` over HTTP, ``push`` over the WebSocket), then
*arms* the hook and performs the command, taking
the events it produced like an application (``async for event in client.events()``). Armed,
the hook kills the child at the ``k``-th write's ``begin``/``written``/``committed`` point;
or a timer kills it at a random moment.

Everything the application saw goes to a JSON-lines log that survives the kill: each event
(``id``, kind, text), each message whose ``send()`` returned, and — observed before
processing — the (epoch, leaf, generation) and digest of every application message received,
to find a reused key and nonce.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlspy.client import Client, Event
from mlspy.group import GroupConfig
from mlspy.messages import ContentType, MLSMessage, WireFormat
from mlspy.protection import decrypt_sender_data
from mlspy.storage import SQLiteStore

HERE = Path(__file__).resolve()
Note = Callable[[dict[str, Any]], None]


def event_record(event: Event) -> dict[str, Any]:
    return {
        "t": "event",
        "id": event.id,
        "kind": event.kind,
        "gid": event.group_id.hex(),
        "text": getattr(event, "text", ""),
        "sender": getattr(event, "sender", ""),
        "epoch": event.epoch,
    }


def config(mode: str) -> GroupConfig:
    """The clients' group configuration for a handshake mode ("public" or "private")."""
    wire = WireFormat.mls_private_message if mode == "private" else WireFormat.mls_public_message
    return GroupConfig(handshake_wire_format=wire)


class Observed(Client):
    """A client that notes, before processing, the key position and digest of every
    application message it receives."""

    note: Note = staticmethod(lambda record: None)

    async def _handle(self, item: dict[str, Any]) -> bool:
        gid = item["group_id"]
        with contextlib.suppress(Exception):  # not ours to judge: the client does
            pm = MLSMessage.decode(item["data"]).private_message
            if pm is not None and pm.content_type == ContentType.application:
                group = self.group(gid).group
                state = group.state
                epoch = state.epoch if pm.epoch == state.epoch.epoch else None
                epoch = epoch or state.past.epochs.get(pm.epoch)  # a late message
                if epoch is not None:
                    sd = decrypt_sender_data(
                        group.cipher_suite, pm, epoch.secrets.sender_data_secret
                    )
                    self.note(
                        {
                            "t": "key",
                            "gid": gid.hex(),
                            "epoch": pm.epoch,
                            "leaf": sd.leaf_index,
                            "gen": sd.generation,
                            "sha": hashlib.sha256(item["data"]).hexdigest(),
                        }
                    )
        return await super()._handle(item)


# --- The child: one command of one actor ---------------------------------------------------


def _child(cmd: dict[str, Any]) -> None:  # pragma: no cover - runs in a forked child

    log: IO[str] = open(cmd["log"], "a")  # noqa: SIM115 - written until the process dies

    def note(record: dict[str, Any]) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()  # in the kernel once write() returns: a SIGKILL loses nothing after

    armed = False
    writes = 0
    kill = cmd.get("kill") or {}

    def hook(at: str) -> None:
        nonlocal writes
        if not armed:
            return
        if at == "begin":
            writes += 1
        if writes == kill.get("write") and at == kill.get("point"):
            os.kill(os.getpid(), signal.SIGKILL)

    async def drain(client: Client) -> None:
        async def consume() -> None:
            async for event in client.events():  # acknowledged when the loop moves on
                note(event_record(event))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consume(), cmd.get("drain", 0.05))

    if cmd.get("forgetful"):
        # The checks' own check: a sender whose advanced ratchet never reaches its store
        # sends the next message with a key and nonce it used already.
        from mlspy.storage import StoredGroup

        StoredGroup._save_ratchets = lambda self, extra=None: None  # type: ignore[method-assign]

    async def run() -> dict[str, Any]:
        nonlocal armed
        store = SQLiteStore(cmd["db"], on_write=hook)
        client = Observed(
            cmd["server"],
            cmd["name"],
            store=store,
            key_packages=2,
            config=config(cmd["mode"]),
            device=cmd.get("device", ""),
            pairing_code=cmd.get("pairing"),
        )
        client.note = note
        if "after" in kill:
            armed = True
            delay = float(kill["after"])
            threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        await client.start(receive=False)
        op, args = cmd["op"], cmd.get("args", [])
        if op not in ("sync", "push"):
            await client.sync()
            await drain(client)
        armed = True
        out: dict[str, Any] = {}
        if op == "talk":  # the random loop: receive, send, sometimes commit
            gid = bytes.fromhex(args[0])
            rng = random.Random(args[2])
            for i in range(int(args[1])):
                await client.sync()
                await drain(client)
                text = f"{cmd['name']}-{args[2]}-{i}"
                await client.send(gid, text)
                note({"t": "sent", "gid": gid.hex(), "text": text})
                if rng.random() < 0.15:
                    await client.update(gid)
        else:
            out = await _op(client, op, args, note)
        await drain(client)
        out["groups"] = {
            gid.hex(): [
                client.group(gid).group.epoch,
                client.group(gid).group.epoch_authenticator.hex(),
            ]
            for gid in client.group_ids()
        }
        await asyncio.to_thread(client.ds.close)
        return out

    result = asyncio.run(run())
    Path(cmd["result"]).write_text(json.dumps(result))


async def _op(client: Any, op: str, args: list[Any], note: Any) -> dict[str, Any]:
    """One SDK operation of the crash-loop test."""
    gid = bytes.fromhex(args[0]) if args and op not in ("invite_to",) else b""
    if op == "sync":
        await client.sync()
    elif op == "push":
        await _push(client)
    elif op == "send":
        await client.send(gid, args[1])
        note({"t": "sent", "gid": args[0], "text": args[1]})
    elif op == "update":
        await client.update(gid)
    elif op == "invite":
        await client.invite(gid, args[1])
    elif op == "remove":
        await client.remove(gid, args[1])
    elif op == "leave":
        await client.leave(gid)
    elif op == "join_external":
        await client.join_external(gid)
    elif op == "create":
        return {"gid": (await client.create_group()).hex()}
    elif op == "replenish":
        await client.replenish(rotate_last_resort=True)
    elif op == "approve":
        await client.approve(gid, args[1])
    else:
        raise SystemExit(f"unknown op {op}")
    return {}


async def _push(client: Any) -> None:
    """Receive over the WebSocket alone (no HTTP fetch, no HTTP ack) until the DS's queue for
    us is empty: our acks on the socket took effect. A socket that ends is an error."""
    session = asyncio.create_task(client._push_session())
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while await asyncio.to_thread(client.ds.fetch, 0):  # looks, acknowledges nothing
            if session.done():
                raise RuntimeError(f"the WebSocket ended: {session.result()}")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("the queue never emptied")
            await asyncio.sleep(0.05)
    finally:
        session.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await session


def zygote() -> None:  # pragma: no cover - the subprocess's main loop
    """Read commands (JSON lines) on stdin; fork a child for each; answer its fate."""
    for line in sys.stdin:
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(cmd)
            except BaseException as exc:  # reported to the parent, which fails the test
                Path(cmd["result"]).write_text(json.dumps({"error": repr(exc)}))
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        fate = "killed" if killed else ("ok" if os.WEXITSTATUS(status) == 0 else "error")
        sys.stdout.write(json.dumps({"fate": fate}) + "\n")
        sys.stdout.flush()


# --- The parent: actors and what their logs show -------------------------------------------


@dataclass
class Actor:
    """One SDK client in a SQLite store, run command by command in forked children."""

    name: str
    server: str
    workdir: Path
    mode: str = "public"  # the handshake wire format: "public" or "private"
    device: str = ""  # a device of user ``name`` (mlspy.users); "" is the bare name
    pairing: str | None = None  # the pairing code of a further device (its first run)
    runs: int = 0
    kills: int = 0
    _proc: Any = None

    def __post_init__(self) -> None:
        import subprocess

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, str(HERE), "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def db(self) -> Path:
        return self.workdir / f"{self.name}.db"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def run(
        self, op: str, *args: Any, kill: dict[str, Any] | None = None, forgetful: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """Run one command: ("ok" | "killed" | "error", the child's result)."""
        result = self.workdir / "result.json"
        result.unlink(missing_ok=True)
        cmd = {
            "server": self.server,
            "name": self.name,
            "db": str(self.db),
            "log": str(self.log),
            "result": str(result),
            "op": op,
            "args": list(args),
            "kill": kill,
            "forgetful": forgetful,
            "mode": self.mode,
            "device": self.device,
            "pairing": self.pairing,
        }
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(cmd) + "\n")
        self._proc.stdin.flush()
        fate = json.loads(self._proc.stdout.readline())["fate"]
        self.runs += 1
        self.kills += fate == "killed"
        out = json.loads(result.read_text()) if result.exists() else {}
        return fate, out

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
            self._proc = None


@dataclass
class Findings:
    """What the logs show: losses, duplicates and reused keys."""

    sent: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    reused: list[tuple[str, int, int, int]] = field(default_factory=list)
    observed: int = 0  # key positions (epoch, leaf, generation) seen by the receivers


def findings(
    senders: dict[str, list[dict[str, Any]]], receivers: dict[str, list[dict[str, Any]]], gid: str
) -> Findings:
    """Every message a sender's ``send()`` returned for must reach every receiver's
    application exactly once: once per event id (an event delivered again after a crash has
    the same id), never under two ids."""
    out = Findings()
    keys: dict[tuple[str, int, int, int], set[str]] = {}
    for records in list(senders.values()) + list(receivers.values()):
        for r in records:
            if r["t"] == "key":
                keys.setdefault((r["gid"], r["epoch"], r["leaf"], r["gen"]), set()).add(r["sha"])
    out.reused = sorted(k for k, shas in keys.items() if len(shas) > 1)
    out.observed = len(keys)
    for receiver, records in receivers.items():
        ids_by_text: dict[str, set[int]] = {}
        for r in records:
            if r["t"] == "event" and r["kind"] == "message" and r["gid"] == gid:
                ids_by_text.setdefault(r["text"], set()).add(r["id"])
        for sender, sent_records in senders.items():
            if sender == receiver:
                continue
            for r in sent_records:
                if r["t"] != "sent" or r["gid"] != gid:
                    continue
                out.sent += 1
                ids = ids_by_text.get(r["text"], set())
                if not ids:
                    out.lost.append(f"{sender}->{receiver}: {r['text']}")
                elif len(ids) > 1:
                    out.duplicated.append(f"{sender}->{receiver}: {r['text']}")
                else:
                    out.delivered += 1
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["zygote"]:
        zygote()
