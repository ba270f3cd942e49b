"""mlspy's side of the group benchmark: build groups of a given size and shape, and time the
operations of the table on them."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mlspy.bench.floor import CryptoCosts
from mlspy.bench.timing import Timer
from mlspy.group import (
    Group,
    GroupConfig,
    KeyPackageBundle,
    SigningIdentity,
    StagedCommit,
    create_key_package,
    join_external,
)
from mlspy.messages import Add, MLSMessage, Proposal, Remove
from mlspy.storage import GroupStore, SQLiteStore
from mlspy.tree.math import LeafIndex, NodeIndex, common_ancestor


@dataclass
class Built:
    """A group seen by two live members: ``a`` commits, ``b`` processes."""

    a: Group
    b: Group
    others: list[Group]
    size: int
    cipher_suite: int = 1


def _members(
    n: int, prefix: str, cipher_suite: int = 1
) -> tuple[list[SigningIdentity], list[KeyPackageBundle]]:
    identities = [
        SigningIdentity.generate(f"{prefix}-{i}".encode(), cipher_suite) for i in range(n)
    ]
    return identities, [create_key_package(i) for i in identities]


def _deliver(groups: list[Group], commit: bytes, committer: Group) -> None:
    for g in groups:
        if g is committer:
            g.merge_pending_commit()
        elif g.active:
            staged = g.process(commit)
            assert isinstance(staged, StagedCommit)
            g.merge_staged_commit(staged)


def build(
    size: int, shape: str, config: GroupConfig, seed: int = 7, cipher_suite: int = 1
) -> Built:
    """``sparse``: batch adds then ~1/16 removals; ``full``: every other member commits so no
    parent is blank (affordable up to a few hundred members)."""
    identities, bundles = _members(size, "member", cipher_suite)
    a = Group.create(identities[0], config=config)
    if size == 1:
        return Built(a, a, [], size, cipher_suite)
    out = a.commit([Proposal(Add(b.key_package)) for b in bundles[1:]])
    a.merge_pending_commit()
    if out.welcome is None:  # pragma: no cover - an add commit always has a Welcome
        raise RuntimeError("add commit without Welcome")
    tree = a.tree
    welcome = out.welcome
    if shape == "sparse":
        b = Group.join(welcome, bundles[1], ratchet_tree=tree, config=config)
        rng = random.Random(seed)
        victims = rng.sample(range(2, size), k=max(0, size // 16)) if size > 3 else []
        if victims:
            out = a.commit([Proposal(Remove(v)) for v in victims])
            _deliver([a, b], out.commit, a)
        return Built(a, b, [], size, cipher_suite)
    # Full: members at even leaves commit one after the other; all must stay live.
    live = [a] + [
        Group.join(welcome, bundles[i], ratchet_tree=tree, config=config) for i in range(1, size)
    ]
    committers = [g for g in live if g.own_leaf_index % 2 == 0]
    followers = [*committers, live[1]]
    for g in committers:
        out = g.commit(force_path=True)
        _deliver(followers, out.commit, g)
    return Built(a, live[1], [], size, cipher_suite)


@dataclass
class Measured:
    seconds: dict[str, float]
    floor: dict[str, float]
    # Wire sizes in bytes: a commit with a path, an add's Welcome, a KeyPackage, a GroupInfo.
    sizes: dict[str, int]


def _path_counts(commit: bytes) -> tuple[int, int]:
    """(path nodes, ciphertexts) of a commit message."""
    msg = MLSMessage.decode(commit)
    pm = msg.public_message
    if pm is None or pm.content.commit is None or pm.content.commit.path is None:
        return 0, 0
    nodes = pm.content.commit.path.nodes
    return len(nodes), sum(len(n.encrypted_path_secret) for n in nodes)


def _decrypt_derives(receiver: Group, committer: LeafIndex) -> int:
    """How many node keys ``receiver`` derives for a path from ``committer`` (§7.6)."""
    tree = receiver.tree
    fdp = tree.filtered_direct_path(committer)
    lca = common_ancestor(NodeIndex(2 * receiver.own_leaf_index), NodeIndex(2 * committer))
    return len(fdp) - fdp.index(lca) if lca in fdp else 0


def time_operations(
    built: Built, timer: Timer, config: GroupConfig, costs: CryptoCosts, big_payload: int = 10_000
) -> Measured:
    """Median seconds per operation for one built group, and each one's crypto floor."""
    a, b = built.a, built.b
    suite_id = built.cipher_suite
    seconds: dict[str, float] = {}
    floor: dict[str, float] = {}
    sizes: dict[str, int] = {}

    def commit_round(name: str, make: Callable[[], bytes], path: bool) -> None:
        """Time creating a commit by ``a`` and processing it by ``b``, then merge both."""
        creates: list[float] = []
        processes: list[float] = []
        create_floor: list[float] = []
        process_floor: list[float] = []
        for _ in range(timer.repeat):
            derives = _decrypt_derives(b, a.own_leaf_index) if path else 0
            commit, t_create = timer.once(make)
            staged, t_process = timer.once(partial(b.process, commit))
            creates.append(t_create)
            processes.append(t_process)
            nodes, ciphertexts = _path_counts(commit)
            create_floor.append(costs.cost(sign=2 if nodes else 1, derive=nodes, seal=ciphertexts))
            process_floor.append(
                costs.cost(verify=2 if nodes else 1, open=1 if nodes else 0, derive=derives)
            )
            if not isinstance(staged, StagedCommit) or staged.self_removed:
                raise RuntimeError("benchmark member could not follow the commit")
            b.merge_staged_commit(staged)
            a.merge_pending_commit()
        seconds[f"{name} create"] = timer.median(creates)
        seconds[f"{name} process"] = timer.median(processes)
        floor[f"{name} create"] = timer.median(create_floor)
        floor[f"{name} process"] = timer.median(process_floor)

    def path_commit() -> bytes:
        commit = a.commit(force_path=True).commit
        sizes["commit (path) bytes"] = len(commit)
        return commit

    commit_round("commit", path_commit, path=True)

    joins: list[tuple[bytes, KeyPackageBundle]] = []

    def add() -> bytes:
        bundle = create_key_package(SigningIdentity.generate(b"newcomer", suite_id))
        out = a.commit([Proposal(Add(bundle.key_package))])
        joins.append((out.welcome or b"", bundle))
        sizes["add commit bytes"] = len(out.commit)
        sizes["Welcome bytes"] = len(out.welcome or b"")
        sizes["KeyPackage bytes"] = len(MLSMessage.wrap(bundle.key_package).encode())
        return out.commit

    commit_round("add", add, path=False)
    floor["add create"] += costs.cost(verify=2, sign=1, seal=1)  # KeyPackage, GroupInfo, secrets
    floor["add process"] += costs.cost(verify=2)  # the KeyPackage and its leaf
    seconds["join (Welcome)"] = timer.median(
        [timer.once(partial(Group.join, w, k, config=config))[1] for w, k in joins]
    )
    floor["join (Welcome)"] = costs.cost(verify=len(a.members()) + 1, open=1)

    def remove() -> bytes:
        keep = (0, b.own_leaf_index)
        victim = max(m.leaf_index for m in a.members() if m.leaf_index not in keep)
        return a.commit([Proposal(Remove(victim))]).commit

    commit_round("remove", remove, path=True)

    group_info = a.group_info()
    sizes["GroupInfo (with tree) bytes"] = len(group_info)
    ident = SigningIdentity.generate(b"external", suite_id)
    externals = [
        timer.once(lambda: join_external(group_info, ident, config=config))
        for _ in range(timer.repeat)
    ]
    seconds["join (external)"] = timer.median([t for _, t in externals])
    nodes, ciphertexts = _path_counts(externals[0][0][1])
    floor["join (external)"] = costs.cost(
        verify=len(a.members()) + 1, seal=ciphertexts + 1, derive=nodes + 1, sign=2
    )
    with tempfile.TemporaryDirectory() as tmp:
        groups = GroupStore(SQLiteStore(Path(tmp) / "state.db"))
        stored = groups.adopt(b)
        seconds["state save"] = timer.measure(stored.save)
        seconds["state load"] = timer.measure(lambda: groups.load(b.group_id))
    for label, size in (("100 B", 100), ("10 KB", big_payload)):
        payload = b"x" * size
        messages: list[bytes] = []
        enc_times: list[float] = []
        for _ in range(timer.repeat):
            m, t = timer.once(partial(a.encrypt_application, payload))
            messages.append(m)
            enc_times.append(t)
        dec_times = [timer.once(partial(b.process, m))[1] for m in messages]
        seconds[f"app encrypt {label}"] = timer.median(enc_times)
        seconds[f"app decrypt {label}"] = timer.median(dec_times)
        floor[f"app encrypt {label}"] = costs.sign
        floor[f"app decrypt {label}"] = costs.verify
    return Measured(seconds, floor, sizes)
