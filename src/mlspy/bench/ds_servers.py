"""Delivery Service processes for ``mlspy bench-ds``: ``mlspy serve`` as operators run it, one
process per node, on a shared SQLite file or PostgreSQL database; SIGKILL and restart; CPU
time read from ``/proc``.

The nodes run with the defaults of ``mlspy serve`` (logging included, to a file) but for the
per-client and per-address limits and the connection cap, which are raised: the generator's
few clients stand for thousands of users, each of whom would stay under the limits, and the
benchmark measures the DS's work, not its throttles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

# Limits no benchmark client reaches (``[limits]`` of ``mlspy serve``, docs/deploy.md).
SERVER_CONFIG = """\
max_connections = 100000

[limits]
max_sockets_per_client = 16
requests_per_second = 1000000.0
request_burst = 1000000
bytes_per_second = 1000000000
byte_burst = 1000000000
anonymous_per_second = 1000000.0
anonymous_burst = 1000000
"""
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (``mlspy serve --workers``' workers)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu_seconds(pid: int) -> float | None:
    """:func:`cpu_seconds` of ``pid`` and its children."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(c) or 0.0 for c in children(pid))


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a process (all its threads), or None when it is gone
    or there is no ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Node:
    """One ``mlspy serve`` process on a fixed port and database; it can be killed and started
    again on both."""

    def __init__(self, port: int, database: str, config: Path, log: Path, workers: int = 1) -> None:
        self.port, self.database, self.config, self.log_path = port, database, config, log
        self.workers = workers
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._dead_cpu = 0.0  # CPU seconds of killed processes of this node

    def start(self) -> None:
        code = "from mlspy.cli import main; main()"
        args = ["serve", "--config", str(self.config), "--port", str(self.port)]
        args += ["--database", self.database, "--registration", "open"]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        self._log = self._log or self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=self._log, stderr=self._log
        )
        self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the DS on port {self.port} did not start; its log: {self.log_path}")

    def cpu_seconds(self) -> float:
        """CPU seconds of this node since it first started, killed processes included."""
        now = tree_cpu_seconds(self.proc.pid) if self.proc is not None else None
        return self._dead_cpu + (now or 0.0)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as a power cut or the OOM killer."""
        if self.proc is None:
            return
        self._dead_cpu += tree_cpu_seconds(self.proc.pid) or 0.0
        for worker in children(self.proc.pid):  # the whole server, workers and all
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def start_nodes(count: int, database: str, scratch: Path, workers: int = 1) -> list[Node]:
    """``count`` nodes on ``database`` (a SQLite path or a PostgreSQL URL), started one after
    the other so the first creates the schema alone."""
    config = scratch / "serve.toml"
    config.write_text(SERVER_CONFIG)
    nodes: list[Node] = []
    try:
        for i in range(count):
            node = Node(free_port(), database, config, scratch / f"node{i}.log", workers)
            nodes.append(node)
            node.start()
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: list[Node]) -> None:
    for node in nodes:
        node.stop()
