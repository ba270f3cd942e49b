"""``mlspy bench-ds`` / ``benchmarks/ds_load.py``: the Delivery Service under an open-loop
load, from generator processes separate from the server's.

Theory of operation. The DS runs as its own process(es) (``ds_servers``); the parent makes
real MLS groups through it (``ds_setup``), then hands tokens to ``--procs`` generator
processes (``ds_traffic``) that own the receivers' WebSockets and the senders' HTTP
connections. For each rate the parent encrypts each sender's messages beforehand (the DS never
decrypts application messages, so encryption must not pace the generator), the generators send
them on a fixed schedule whatever the answers, and latency runs from each message's *scheduled*
time to its receipt by each receiver — a DS that falls behind shows as growing latency, not as
a slower generator. ``--kill`` SIGKILLs a node in the middle of each point and restarts it;
every message the DS acknowledged must still reach every receiver of its group.

``--commit-every N`` makes every N-th message of each sender a commit: an empty commit with a
path (a self-update), sent with its GroupInfo as the SDK sends its commits. The parent makes
it while encrypting, merges it at once (with one sender per group, the DS takes its commits
in order) and encrypts what follows in the new epoch; the report gives the commits' latencies
apart, among them commit-to-all-delivered (a commit's latest receiver).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

from mlspy.bench import ds_dbstats, ds_report
from mlspy.bench.ds_servers import Node, start_nodes, stop_nodes
from mlspy.bench.ds_setup import BenchGroup, build_groups
from mlspy.bench.ds_traffic import (
    Expect,
    ReceiverSpec,
    Run,
    SenderSpec,
    WorkerSpec,
    worker_main,
)
from mlspy.group import Group

T = TypeVar("T")

START_DELAY = 1.0  # seconds between handing a point's messages over and its first send
READY_TIMEOUT = 600.0
# File descriptors beyond the sockets counted in ``_raise_fd_limit``: files, pipes, the DS's
# database and logs, the Python runtime's own.
FD_MARGIN = 1024


class Generators:
    """The generator processes, spawned (not forked: the parent holds threads and sockets)."""

    def __init__(self, specs: Sequence[WorkerSpec]) -> None:
        context = multiprocessing.get_context("spawn")
        self.specs = list(specs)
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for spec in specs:
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(spec, child), daemon=True)
            self.conns.append(parent)
            self.procs.append(proc)

    def __enter__(self) -> Generators:
        for proc in self.procs:
            proc.start()
        self.gather("ready", READY_TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop", None))
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()

    def send(self, messages: Sequence[tuple[str, Any]]) -> None:
        for conn, message in zip(self.conns, messages, strict=True):
            conn.send(message)

    def gather(self, tag: str, timeout: float = 3600.0) -> list[Any]:
        out = []
        deadline = time.monotonic() + timeout
        for conn, proc in zip(self.conns, self.procs, strict=True):
            while not conn.poll(0.5):
                if not proc.is_alive():
                    raise RuntimeError(f"a generator process died (exit code {proc.exitcode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a generator process did not answer {tag!r} in time")
            got, value = conn.recv()
            assert got == tag, (got, tag)
            out.append(value)
        return out


def worker_specs(
    groups: Sequence[BenchGroup], urls: Sequence[str], args: argparse.Namespace
) -> list[WorkerSpec]:
    """Senders round-robin over the processes by group; receivers round-robin one by one, so
    a single large group spreads over all of them."""
    senders: list[list[SenderSpec]] = [[] for _ in range(args.procs)]
    receivers: list[list[ReceiverSpec]] = [[] for _ in range(args.procs)]
    for g in groups:
        url = urls[g.sender.node]
        senders[g.index % args.procs].append(
            SenderSpec(g.index, g.index, url, g.sender.token, g.group_id)
        )
    flat = [(g.index, r) for g in groups for r in g.receivers]
    for i, (group, r) in enumerate(flat):
        ws_url = urls[r.node].replace("http", "ws", 1)
        receivers[i % args.procs].append(ReceiverSpec(group, ws_url, r.token))
    return [
        WorkerSpec(senders[p], receivers[p], args.timeout, args.connections, args.submit)
        for p in range(args.procs)
    ]


@dataclass(frozen=True)
class Bodies:
    """A point's request bodies, encrypted beforehand."""

    step: float
    interval: float
    bodies: dict[int, list[bytes]]  # by sender
    commits: dict[int, frozenset[int]]  # by sender: the positions in ``bodies`` of commits
    commit_bytes: int  # the commits' MLS messages, in all (not their GroupInfos)


def encrypt(
    groups: Sequence[BenchGroup],
    rate: float,
    seconds: float,
    payload: int,
    commit_every: int = 0,
) -> Bodies:
    """Every sender's messages for ``seconds`` at ``rate`` in all, as request bodies; the
    senders' slots interleave evenly: sender ``j``'s ``k``-th is due ``j·step + k·interval``
    after the start. With ``commit_every`` N, each sender's N-th, 2N-th, ... message is a
    commit, merged at once: what follows is in its new epoch."""
    step = 1.0 / rate
    interval = len(groups) / rate
    bodies: dict[int, list[bytes]] = {}
    commits: dict[int, frozenset[int]] = {}
    commit_bytes = 0
    for j, g in enumerate(groups):
        # Slots k = 0, 1, ... with j·step + k·interval < seconds.
        count = max(0, math.ceil((seconds - j * step) / interval))
        positions = frozenset(
            k for k in range(count) if commit_every and (k + 1) % commit_every == 0
        )
        out = bodies[g.index] = []
        for k in range(count):  # in order: a commit changes the epoch of what follows
            if k in positions:
                message, body = _self_update(g.group)
                commit_bytes += len(message)
                out.append(body)
            else:
                application = g.group.encrypt_application(os.urandom(payload))
                out.append(b'{"message":"%s"}' % base64.b64encode(application))
        commits[g.index] = positions
    return Bodies(step, interval, bodies, commits, commit_bytes)


def _self_update(group: Group) -> tuple[bytes, bytes]:
    """An empty commit with a path (fresh keys for the sender and its direct path: each of
    the other members gets a path secret encrypted to it), merged; the message and the
    request body that carries it with the new epoch's GroupInfo (the DS keeps the latest
    for joiners, and the SDK sends one with every commit)."""
    out = group.commit(force_path=True)
    group.merge_pending_commit()
    assert out.group_info is not None  # every commit comes with one
    body = b'{"message":"%s","group_info":"%s"}' % (
        base64.b64encode(out.commit),
        base64.b64encode(out.group_info),
    )
    return out.commit, body


def run_point(
    rate: float,
    groups: Sequence[BenchGroup],
    gens: Generators,
    nodes: Sequence[Node],
    args: argparse.Namespace,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Send at ``rate`` for the warm-up and the measured window, drain, and tally."""
    began = time.monotonic()
    made = encrypt(groups, rate, args.warmup + args.duration, args.payload, args.commit_every)
    made_commits = sum(len(c) for c in made.commits.values())
    if made_commits:
        progress(
            f"  encrypted, {made_commits} commits among them ({made.commit_bytes // made_commits}"
            f" B each on average), in {time.monotonic() - began:.1f}s"
        )
    start = time.monotonic() + START_DELAY
    window = (start + args.warmup, start + args.warmup + args.duration)
    gens.send(
        [
            (
                "run",
                Run(
                    start,
                    made.step,
                    made.interval,
                    window,
                    _own(made.bodies, spec),
                    _own(made.commits, spec),
                ),
            )
            for spec in gens.specs
        ]
    )
    killed: dict[str, float] | None = None
    _sleep_until(window[0])
    before = _cpu_sample(nodes)
    if args.kill:
        _sleep_until(window[0] + args.duration / 2)
        killed = _kill_and_restart(nodes[0], start, progress)
    _sleep_until(window[1])
    after = _cpu_sample(nodes)
    sent = gens.gather("sent")
    owed: dict[int, dict[int, float]] = {g.index: {} for g in groups}
    commits: set[int] = set()
    for s in sent:
        for group, due, seq, commit in s.records:
            if seq >= 0:
                owed[group][seq] = due
                if commit:
                    commits.add(seq)
    deadline = time.monotonic() + args.drain
    gens.send(
        [
            (
                "expect",
                Expect(
                    {r.group: owed[r.group] for r in spec.receivers},
                    window,
                    deadline,
                    frozenset(commits),
                ),
            )
            for spec in gens.specs
        ]
    )
    received = gens.gather("received")
    wall = after[2] - before[2]
    server = None if before[0] is None or after[0] is None else after[0] - before[0]
    generator = sum(s.cpu[0] for s in sent) + after[1] - before[1]
    cpu = {
        "server_cpu_percent": None if server is None else 100 * server / wall,
        "generator_cpu_percent": 100 * generator / wall,
    }
    row = ds_report.point(rate, window, sent, received, cpu, args.commit_every > 0)
    if made_commits:
        row["commits"]["message_bytes"] = made.commit_bytes / made_commits
    if killed is not None:
        row["kill"] = killed
    return row


def _own(by_sender: dict[int, T], spec: WorkerSpec) -> dict[int, T]:
    """What belongs to the senders of one generator process."""
    return {s.index: by_sender[s.index] for s in spec.senders}


def _raise_fd_limit(args: argparse.Namespace, progress: Callable[[str], None]) -> None:
    """Raise this process's soft limit on open files so that the generators (which hold a
    WebSocket per receiver plus their HTTP connections) and the DS nodes we start (a socket
    per receiver too) do not run out: they inherit it. A large group needs thousands where
    the usual soft limit is 1024; the hard limit is the ceiling."""
    sockets = args.groups * args.group_size + args.connections * args.nodes
    need = sockets + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < need:
            progress(f"note: open files limited to {new} (hard limit): {need} would be safe")


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _cpu_sample(nodes: Sequence[Node]) -> tuple[float | None, float, float]:
    """(the DS nodes' CPU seconds or None for a server we did not start, the parent's CPU
    seconds, now)."""
    server = sum(n.cpu_seconds() for n in nodes) if nodes else None
    return server, time.process_time(), time.monotonic()


def _kill_and_restart(
    node: Node, start: float, progress: Callable[[str], None]
) -> dict[str, float]:
    at = time.monotonic()
    node.kill()
    node.start()
    back = time.monotonic()
    progress(
        f"  SIGKILLed node :{node.port} at +{at - start:.1f}s, serving again {back - at:.1f}s later"
    )
    return {"at_s": at - start, "restart_s": back - at}


def _servers(
    args: argparse.Namespace, stack: contextlib.ExitStack, progress: Callable[[str], None]
) -> tuple[list[str], list[Node], str]:
    """The DS URLs, the nodes we started (none with ``--url``) and the database kind."""
    if args.url:
        return [u.rstrip("/") for u in args.url.split(",") if u], [], "given URL"
    scratch = Path(tempfile.mkdtemp(prefix="mlspy-bench-ds-"))
    stack.callback(shutil.rmtree, scratch, ignore_errors=True)
    if args.postgres:
        database, kind = args.postgres, "PostgreSQL"
    else:
        folder = Path(args.database_dir) if args.database_dir else scratch
        path = folder / f"mlspy-bench-ds-{os.getpid()}.sqlite"
        if args.database_dir:
            stack.callback(_remove_sqlite, path)
        database, kind = str(path), "SQLite"
        if args.nodes > 1:
            progress(
                "note: nodes on one SQLite file do not wake each other's WebSockets (only "
                "PostgreSQL carries wake-ups between nodes): expect latencies of seconds"
            )
    progress(f"starting {args.nodes} DS node(s) on {kind}")
    nodes = start_nodes(args.nodes, database, scratch, args.workers)
    stack.callback(stop_nodes, nodes)
    return [n.url for n in nodes], nodes, kind


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("rates are numbers, e.g. 50,100,200") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="mlspy bench-ds",
        description="Open-loop load benchmark of the Delivery Service, from generator "
        "processes separate from the server's. One table row per rate; exit status 1 if "
        "any message the DS acknowledged did not reach every receiver.",
    )
    add = p.add_argument
    add(
        "--rates",
        type=_rates,
        default=_rates("50,100,200,400,800,1600"),
        help="messages/s over all senders, comma-separated (default: 50,...,1600)",
    )
    add("--duration", type=float, default=15.0, help="measured seconds per rate (default 15)")
    add("--warmup", type=float, default=2.0, help="unmeasured seconds before each (default 2)")
    add("--groups", type=int, default=20, help="groups, one sender each (default 20)")
    add("--group-size", type=int, default=10, help="members per group (default 10)")
    add("--payload", type=int, default=100, help="application data bytes (default 100)")
    add(
        "--commit-every",
        type=int,
        default=0,
        metavar="N",
        help="make every N-th message of each sender a commit (a self-update with a path) "
        "and report the commits' latencies apart (default 0: no commits)",
    )
    add("--procs", type=int, default=1, help="generator processes (default 1)")
    add(
        "--submit",
        choices=("ws", "http"),
        default="ws",
        help="how senders submit: on a WebSocket each, as the SDK does (ws, the default), "
        "or as HTTP POSTs (http)",
    )
    add(
        "--connections",
        type=int,
        default=256,
        help="HTTP connections per generator process and node, with --submit http (default 256)",
    )
    add(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds after its scheduled time a submission counts as timed out (default 10; "
        "a commit is awaited 6 times as long, and counted late)",
    )
    add(
        "--drain",
        type=float,
        help="seconds to wait for deliveries after a point (default 10; 30 with --kill or "
        "several SQLite nodes)",
    )
    add("--nodes", type=int, default=1, help="DS processes on one database (default 1)")
    add(
        "--workers",
        type=int,
        default=1,
        help="worker processes of each node (mlspy serve --workers; default 1)",
    )
    add(
        "--postgres",
        metavar="URL",
        help="run the DS nodes on this PostgreSQL database (benchmarks/pg_embedded_server.py "
        "starts a throwaway server and prints its URL)",
    )
    add("--database-dir", metavar="DIR", help="where the SQLite file goes (default: a temp dir)")
    add("--url", help="use running DS node(s) (comma-separated URLs; open registration)")
    add(
        "--kill",
        action="store_true",
        help="SIGKILL the first node in the middle of each point and restart it",
    )
    add("--json", action="store_true", help="JSON on stdout (the table goes to stderr)")
    add("--quiet", action="store_true", help="no progress on stderr")
    ds_dbstats.add_arguments(p)
    args = p.parse_args(argv)
    ds_dbstats.check_arguments(p, args)
    if args.group_size < 2 or args.groups < 1:
        p.error("need at least one group of at least two members")
    if args.duration <= 0 or args.warmup < 0 or args.timeout <= 0 or args.payload < 0:
        p.error("--duration and --timeout must be positive, --warmup and --payload not negative")
    if args.commit_every < 0:
        p.error("--commit-every must not be negative")
    if args.procs < 1 or args.nodes < 1 or args.connections < 1 or args.workers < 1:
        p.error("--procs, --nodes and --connections must be at least 1")
    if args.url and (args.postgres or args.database_dir or args.nodes > 1 or args.kill):
        p.error("--url uses running servers: no --postgres, --database-dir, --nodes or --kill")
    if args.url and any(not u.startswith("http://") for u in args.url.split(",") if u):
        p.error("--url takes http:// URLs (the generator speaks plain HTTP/1.1)")
    if args.postgres and args.database_dir:
        p.error("--database-dir is for SQLite: not with --postgres")
    if args.drain is None:
        # A restart, or SQLite nodes that learn of each other's messages only when a
        # socket's timer fires (every 15 s), need longer than a healthy DS.
        slow = args.kill or (args.nodes > 1 and not args.postgres)
        args.drain = 30.0 if slow else 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    table = sys.stderr if args.json else sys.stdout
    rows: list[dict[str, Any]] = []
    _raise_fd_limit(args, progress)
    with contextlib.ExitStack() as stack:
        urls, nodes, kind = _servers(args, stack, progress)
        began = time.monotonic()
        groups = build_groups(urls, args.groups, args.group_size, progress)
        connecting = time.monotonic()
        gens = stack.enter_context(Generators(worker_specs(groups, urls, args)))
        setup = time.monotonic() - began
        progress(
            f"setup: receivers connected, their backlog drained in "
            f"{time.monotonic() - connecting:.1f}s; setup {setup:.1f}s in all"
        )
        dbstats = ds_dbstats.tracker(args, stack, progress)
        print(_describe(args, kind, len(urls)), file=table)
        print(ds_report.header(), file=table, flush=True)
        for rate in args.rates:
            progress(f"rate {rate:g}/s: {args.warmup:g}s warm-up + {args.duration:g}s")
            row = run_point(rate, groups, gens, nodes, args, progress)
            if dbstats is not None:
                dbstats.measure(row)
            rows.append(row)
            print(ds_report.line(row), file=table, flush=True)
            if "commits" in row:
                print(ds_report.commit_line(row), file=table, flush=True)
        for text in ds_report.footer(rows):
            print(text, file=table)
        if dbstats is not None:
            for text in ds_dbstats.report(rows, dbstats.monitor):
                print(text, file=table)
    if args.json:
        config = {k: v for k, v in vars(args).items() if k not in ("json", "quiet", "postgres")}
        config.update(database=kind, nodes=len(urls), cpus=os.cpu_count())
        out = {
            "config": config,
            "setup_s": setup,
            "points": rows,
            "saturation": ds_report.saturation(rows),
            "lost": sum(r["lost"] for r in rows),
        }
        if args.commit_every:
            out["commits_lost"] = sum(r["commits"]["lost"] for r in rows)
            out["commits_refused"] = sum(r["commits"]["refused"] for r in rows)
        print(json.dumps(out, indent=2))
    return 1 if any(r["lost"] for r in rows) else 0


def _describe(args: argparse.Namespace, kind: str, nodes: int) -> str:
    return (
        f"DS: {kind}, {nodes} node(s) x {args.workers} worker(s) | {args.groups} groups x "
        f"{args.group_size} members "
        f"(1 sender, {args.group_size - 1} receivers), {args.payload} B messages submitted "
        f"{'on WebSockets' if args.submit == 'ws' else 'over HTTP'} | "
        f"{args.procs} generator process(es) | {args.duration:g}s per rate after "
        f"{args.warmup:g}s warm-up | {os.cpu_count()} CPUs"
        + (
            f"\ncommits: every {args.commit_every}th message of each sender is a self-update "
            "(with a path and GroupInfo); the latency columns are the application messages', "
            "the commits' are on the line under each row"
            if args.commit_every
            else ""
        )
    )
