"""SQLite group commit and read connections (``ds/db.py``): transactions of many threads share
COMMITs, yet each returns only once its writes are durable; a failing body undoes its own
writes only; readers see committed state and never wait for the writer."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from mlspy.ds.db import SQLiteDatabase


def committed_names(path: Path) -> set[str]:
    """What another connection (another process, after a crash) sees."""
    with sqlite3.connect(path) as conn:
        return {str(r[0]) for r in conn.execute("SELECT name FROM ds_secrets")}


def put(db: SQLiteDatabase, name: str) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO ds_secrets (name, value) VALUES (?, ?)", (name, b"v"))


def wait_for_waiters(db: SQLiteDatabase, n: int) -> None:
    deadline = time.monotonic() + 10
    while db.waiting < n:
        assert time.monotonic() < deadline, "the other threads never queued"
        time.sleep(0.005)


def test_concurrent_transactions_share_commits_and_all_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "ds.sqlite"
    db = SQLiteDatabase(path)
    seen_late: list[str] = []

    def writer(t: int) -> None:
        for i in range(25):
            name = f"{t}-{i}"
            put(db, name)
            # Returned: durable, so visible to any other connection at once.
            if name not in committed_names(path):
                seen_late.append(name)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
    bodies, commits = db.bodies, db.commits
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert seen_late == []
    assert len(committed_names(path)) == 16 * 25
    assert db.bodies - bodies == 16 * 25
    # Sharing happened: fewer syncs than transactions (each alone would take one).
    assert db.commits - commits < 16 * 25
    db.close()


def test_a_failing_body_undoes_only_its_own_writes(tmp_path: Path) -> None:
    path = tmp_path / "ds.sqlite"
    db = SQLiteDatabase(path)
    errors: list[BaseException] = []

    def failing() -> None:
        try:
            with db.transaction() as tx:
                tx.execute("INSERT INTO ds_secrets (name, value) VALUES ('bad', x'00')")
                raise ValueError("refused after writing")
        except ValueError as exc:
            errors.append(exc)

    first_commits = db.commits
    with db.transaction() as tx:
        tx.execute("INSERT INTO ds_secrets (name, value) VALUES ('first', x'00')")
        # Two more transactions queue behind this one: all three share the open batch.
        others = [threading.Thread(target=failing), threading.Thread(target=put, args=(db, "ok"))]
        for th in others:
            th.start()
        wait_for_waiters(db, 2)
    assert "first" in committed_names(path)
    for th in others:
        th.join()
    assert [str(e) for e in errors] == ["refused after writing"]
    assert committed_names(path) == {"first", "ok"}
    assert db.commits - first_commits == 1  # the three shared one COMMIT
    db.close()


def test_readers_see_committed_state_without_waiting_for_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "ds.sqlite"
    db = SQLiteDatabase(path)
    put(db, "before")
    read: list[set[str]] = []

    def reader() -> None:
        with db.read() as tx:
            read.append({str(r[0]) for r in tx.execute("SELECT name FROM ds_secrets")})

    with db.transaction() as tx:
        tx.execute("INSERT INTO ds_secrets (name, value) VALUES ('during', x'00')")
        th = threading.Thread(target=reader)
        start = time.monotonic()
        th.start()
        th.join(timeout=5)
        assert not th.is_alive(), "the reader waited for the writer"
        assert time.monotonic() - start < 5
    assert read == [{"before"}]  # not what is uncommitted
    reader()
    assert read[-1] == {"before", "during"}
    db.close()
