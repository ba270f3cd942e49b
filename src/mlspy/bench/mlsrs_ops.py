"""mls-rs's side of the group benchmark, through its Python binding (``mls_rs_uniffi``).

The binding exposes commits, adds, removes, Welcome joins and application messages on suite
0x0001; it has no external commit, so that cell stays empty."""

from __future__ import annotations

import importlib
import os
from functools import partial
from typing import Any

from mlspy.bench.timing import Timer


def available() -> bool:
    try:
        importlib.import_module("mls_rs_uniffi")
    except ImportError:
        return False
    return True


class _Rs:
    def __init__(self) -> None:
        self.m: Any = importlib.import_module("mls_rs_uniffi")
        self.count = 0

    def client(self, tree_in_welcome: bool = True) -> Any:
        m = self.m
        self.count += 1
        keys = m.generate_signature_keypair(m.CipherSuite.CURVE25519_AES128)
        storage = m.client_config_default().group_state_storage
        config = m.ClientConfig(
            group_state_storage=storage, use_ratchet_tree_extension=tree_in_welcome
        )
        return m.Client(b"rs-%d" % self.count, keys, config)


def _apply(groups: list[Any], commit: Any) -> None:
    for g in groups:
        g.process_incoming_message(commit)


def build(size: int, shape: str) -> tuple[Any, Any, Any, list[Any]]:
    """(rs, a, b, clients): ``a`` commits, ``b`` processes; same shapes as mlspy's build."""
    rs = _Rs()
    clients = [rs.client() for _ in range(size)]
    a = clients[0].create_group(os.urandom(16))
    out = a.add_members([c.generate_key_package_message() for c in clients[1:]])
    a.process_incoming_message(out.commit_message)
    welcome = out.welcome_message
    if shape == "sparse":
        b = clients[1].join_group(None, welcome).group
        victims = list(range(2, size, 16))[: max(0, size // 16)] if size > 3 else []
        if victims:
            out = a.remove_members([clients[v].signing_identity() for v in victims])
            _apply([a, b], out.commit_message)
        return rs, a, b, clients
    live = [a] + [c.join_group(None, welcome).group for c in clients[1:]]
    committers = live[0::2]
    followers = [*committers, live[1]]
    for g in committers:
        out = g.commit()
        _apply(followers, out.commit_message)
    return rs, a, live[1], clients


def time_operations(
    size: int, shape: str, timer: Timer, big_payload: int = 10_000
) -> dict[str, float]:
    rs, a, b, clients = build(size, shape)
    results: dict[str, float] = {}

    def rounds(make: Any) -> tuple[float, float]:
        creates, processes = [], []
        for _ in range(timer.repeat):
            out, t_create = timer.once(make)
            _, t_process = timer.once(partial(b.process_incoming_message, out.commit_message))
            a.process_incoming_message(out.commit_message)
            creates.append(t_create)
            processes.append(t_process)
        return timer.median(creates), timer.median(processes)

    results["commit create"], results["commit process"] = rounds(lambda: a.commit())
    joins: list[float] = []
    newcomers: list[Any] = []

    def add() -> Any:
        c = rs.client()
        newcomers.append(c)
        return a.add_members([c.generate_key_package_message()])

    adds: list[Any] = []

    def add_and_keep() -> Any:
        out = add()
        adds.append(out)
        return out

    results["add create"], results["add process"] = rounds(add_and_keep)
    for c, out in zip(newcomers, adds, strict=True):
        joins.append(timer.once(partial(c.join_group, None, out.welcome_message))[1])
    results["join (Welcome)"] = timer.median(joins)
    removable = clients[2:] + newcomers

    def remove() -> Any:
        victim = removable.pop()
        return a.remove_members([victim.signing_identity()])

    results["remove create"], results["remove process"] = rounds(remove)
    for label, n in (("100 B", 100), ("10 KB", big_payload)):
        payload = b"x" * n
        messages, enc = [], []
        for _ in range(timer.repeat):
            m, t = timer.once(partial(a.encrypt_application_message, payload))
            messages.append(m)
            enc.append(t)
        dec = [timer.once(partial(b.process_incoming_message, m))[1] for m in messages]
        results[f"app encrypt {label}"] = timer.median(enc)
        results[f"app decrypt {label}"] = timer.median(dec)
    return results
