"""``mlspy serve`` with ``workers > 1``: several server processes behind one listening socket.

One Python process answers requests on one core. The supervisor (this module) forks
``workers`` processes that each listen on the port with ``SO_REUSEPORT``: the kernel spreads
new connections over them evenly (by a hash of the client's address and port), with no
thundering herd on one shared socket. Each opens its own database connections (SQLite in
WAL mode lets processes share the file, each with its own group commit; PostgreSQL nodes are
stateless).
Workers tell each other what they queued and which tokens ended over Unix datagram sockets in
a private directory (``wakebus.py``), so a WebSocket held by one worker hears of a message
another worker accepted.

The supervisor restarts a worker that dies (a crash loses nothing acknowledged: every answer
follows a durable commit), and on SIGINT/SIGTERM stops them all (graceful shutdown).
Per-process state: the per-client limits and socket caps, the token cache and ``/metrics``
are each worker's own (a client spread over N workers gets up to N times the rate).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from mlspy.ds.config import Settings

log = logging.getLogger("mlspy.ds.workers")

# A worker that dies this soon after its start is failing at start-up: wait before the next.
QUICK_DEATH = 2.0
PR_SET_PDEATHSIG = 1  # prctl(2)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that other workers may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    return sock


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (even by SIGKILL), so no worker
    outlives it holding the port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# Builds one worker's ASGI app and uvicorn keywords from the settings and the wake directory
# (passed in by ``server.py``, which this module does not import).
AppFactory = Callable[[Settings, str], tuple[Any, dict[str, Any]]]


def _worker(settings: Settings, wake_dir: str, make_app: AppFactory) -> None:
    """One worker: its own socket, service and app, serving until told to stop (uvicorn
    handles SIGINT/SIGTERM)."""
    _die_with_parent()
    sock = bind(settings.host, settings.port)
    app, options = make_app(settings, wake_dir)
    for key in ("host", "port"):
        options.pop(key)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    server.run(sockets=[sock])


def run_workers(settings: Settings, make_app: AppFactory) -> None:
    """Supervise ``settings.workers`` workers until SIGINT/SIGTERM; each builds its app with
    ``make_app`` after the fork."""
    wake_dir = tempfile.mkdtemp(prefix="mlspy-workers-")
    context = multiprocessing.get_context("fork")
    procs: dict[int, tuple[Any, float]] = {}
    stopping = False

    def start(slot: int) -> None:
        proc = context.Process(
            target=_worker, args=(settings, wake_dir, make_app), name=f"mlspy-ds-{slot}"
        )
        proc.start()
        procs[slot] = (proc, time.monotonic())

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for slot in range(settings.workers):
            start(slot)
        print(
            f"mlspy serve: {settings.workers} worker processes "
            f"({', '.join(str(p.pid) for p, _ in procs.values())})",
            file=sys.stderr,
            flush=True,
        )
        while not stopping:
            time.sleep(0.2)
            for slot, (proc, started) in list(procs.items()):
                if proc.is_alive() or stopping:
                    continue
                log.warning(
                    "worker %d (pid %s) exited with %s: restarting", slot, proc.pid, proc.exitcode
                )
                if time.monotonic() - started < QUICK_DEATH:
                    time.sleep(QUICK_DEATH)
                start(slot)
    finally:
        for proc, _ in procs.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc, _ in procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(wake_dir, ignore_errors=True)


__all__ = ["AppFactory", "bind", "run_workers"]
