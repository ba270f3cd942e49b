"""``mlspy admin`` over a real database beside a running Delivery Service: revoke a device's
tokens, delete a user, queue depths, users, invite codes, backup while the server writes and
restore into a new file that a new server delivers from."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from ds_helpers import Member, pair, status_of

from mlspy.cli import main
from mlspy.ds.accounts import client_id_of
from mlspy.ds.app import create_app
from mlspy.ds.client import DSClient
from mlspy.ds.db import PostgresDatabase, SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.ds.token_cache import DEFAULT_TTL
from mlspy.group import ApplicationMessage, SigningIdentity


def admin(*args: str) -> Any:
    result = CliRunner().invoke(main, ["admin", *args])
    return result


def admin_json(*args: str) -> Any:
    result = admin(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def refused_soon(url: str, headers: dict[str, str]) -> None:
    """The server trusts a token it read for at most DEFAULT_TTL seconds (token_cache.py):
    a revocation from another process is in force within that time."""
    start = time.monotonic()
    while httpx.get(url + "/v1/queue", headers=headers).status_code != 401:
        assert time.monotonic() - start < DEFAULT_TTL + 1.0, "the revoked token still works"
        time.sleep(0.1)


@pytest.fixture
def sqlite_ds(tmp_path: Path) -> Any:
    db = tmp_path / "ds.sqlite"
    service = DeliveryService(SQLiteDatabase(db))
    with InProcessServer(create_app(service)) as server:
        yield server, str(db)


def test_revoke_tokens_makes_the_next_request_401(sqlite_ds: Any) -> None:
    server, db = sqlite_ds
    alice, _ = pair(server.url)
    old = alice.client.token
    headers = {"authorization": f"Bearer {old}"}
    assert httpx.get(server.url + "/v1/queue", headers=headers).status_code == 200
    doc = admin_json("revoke-tokens", "alice", "--database", db)
    assert doc == {"devices": ["alice"], "tokens_ended": 1}
    refused_soon(server.url, headers)
    # The device still holds its key: it logs in again (revoking the device is the user's).
    alice.send(b"still here")
    # By client id too; an unknown one is "not found" (1), a missing database too.
    assert (
        admin(
            "revoke-tokens", client_id_of(alice.identity.signature_key), "--database", db
        ).exit_code
        == 0
    )
    result = admin("revoke-tokens", "mallory", "--database", db)
    assert result.exit_code == 1 and "no client, identity or user 'mallory'" in result.output
    result = admin("users", "--database", db + ".typo")
    assert result.exit_code == 1 and "no database at" in result.output
    assert not Path(db + ".typo").exists()


def test_delete_user_removes_the_account_and_its_queue_and_says_what_of_groups(
    sqlite_ds: Any,
) -> None:
    server, db = sqlite_ds
    alice, bob = pair(server.url)
    solo = Member.new(server.url, "carol")
    solo.create()  # a group only carol is in: deleted with her
    alice.send(b"one")
    alice.send(b"two")
    assert admin_json("queue-depth", "--client", "bob", "--database", db)["waiting"] == 2
    assert admin("delete-user", "bob", "--database", db).exit_code == 1  # not confirmed
    doc = admin_json("delete-user", "bob", "--yes", "--database", db)
    assert doc["devices"] == ["bob"] and doc["queued_messages_dropped"] == 2
    assert doc["groups_left"] == 1 and doc["groups_deleted"] == []
    doc = admin_json("delete-user", "carol", "--yes", "--database", db)
    assert doc["groups_deleted"] == [solo.group.group_id.hex()]  # type: ignore[union-attr]
    assert [u["user"] for u in admin_json("users", "--database", db)] == ["alice"]
    # bob's binding, tokens and KeyPackages are gone; the group goes on for alice.
    refused_soon(server.url, {"authorization": f"Bearer {bob.client.token}"})
    assert status_of(lambda: bob.client.fetch(0)) == 401
    assert status_of(lambda: alice.client.claim_key_package(b"bob")) == 404
    alice.send(b"three")
    assert admin_json("queue-depth", "--database", db)["waiting"] == 0
    result = admin("delete-user", "bob", "--yes", "--database", db)
    assert result.exit_code == 1 and "no user 'bob'" in result.output


def test_queue_depth_users_and_invites(tmp_path: Path) -> None:
    db = tmp_path / "ds.sqlite"
    service = DeliveryService(SQLiteDatabase(db), registration="invite")
    codes = admin_json("invite", "--count", "2", "--database", str(db))["codes"]
    assert len(codes) == 2
    with InProcessServer(create_app(service)) as server:
        members = []
        for name, code in zip(("alice", "bob"), codes, strict=True):
            identity = SigningIdentity.generate(name.encode())
            client = DSClient(server.url, identity)
            client.register(invite_code=code)
            client.login()
            members.append(Member(name, client, identity))
        for m in members:
            from mlspy.group import create_key_package

            m.bundles = [create_key_package(m.identity)]
            m.client.upload_key_packages(m.bundles)
        alice, bob = members
        alice.create()
        alice.add(bob)
        bob.sync()
        for i in range(3):
            alice.send(b"m%d" % i)
        assert alice.group is not None
        gid = alice.group.group_id.hex()
        doc = admin_json("queue-depth", "--group", gid, "--database", str(db))
        assert doc["waiting"] == 3
        assert [(c["identity"], c["waiting"]) for c in doc["clients"]] == [("bob", 3)]
        text = admin("queue-depth", "--database", str(db)).output
        assert text.splitlines()[0] == "3 message(s) waiting" and "bob" in text
        bob.sync()
        assert admin_json("queue-depth", "--database", str(db))["waiting"] == 0
        config = tmp_path / "mlspy.toml"
        config.write_text(f'database = "{db}"\n')
        users = admin_json("users", "--config", str(config))
        assert [(u["user"], [d["identity"] for d in u["devices"]]) for u in users] == [
            ("alice", ["alice"]),
            ("bob", ["bob"]),
        ]
        assert admin("queue-depth", "--group", "zz", "--database", str(db)).exit_code == 2
        result = admin("queue-depth", "--group", "00" * 16, "--database", str(db))
        assert result.exit_code == 1 and "no group" in result.output


def test_backup_while_the_server_writes_then_restore_and_deliver(sqlite_ds: Any) -> None:
    """A backup taken while messages are being accepted is one consistent snapshot; a DS
    started on its restored copy delivers every message the snapshot had queued."""
    server, db = sqlite_ds
    alice, bob = pair(server.url)
    stop = threading.Event()
    sent: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            alice.send(b"message %d" % i)
            sent.append(i)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(sent) < 10:
            stop.wait(0.05)
        backup = Path(db).parent / "backups" / "ds-backup.sqlite"
        result = admin("backup", "--to", str(backup), "--database", db)
        assert result.exit_code == 0, result.output
        assert "SQLite online backup" in result.output
        at_backup = len(sent)
        while len(sent) < at_backup + 5:  # and the server goes on accepting
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join()
    assert admin("backup", "--to", str(backup), "--database", db).exit_code == 1  # no overwrite
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    queued = admin_json("queue-depth", "--client", "bob", "--database", str(backup))["waiting"]
    assert queued >= 10
    restored = Path(db).parent / "restored.sqlite"
    result = admin("restore", "--from", str(backup), "--database", str(restored))
    assert result.exit_code == 0, result.output
    assert admin("restore", "--from", str(backup), "--database", str(restored)).exit_code == 1
    bad = Path(db).parent / "notes.txt"
    bad.write_text("hello")
    result = admin("restore", "--from", str(bad), "--database", str(Path(db).parent / "x.db"))
    assert result.exit_code == 1 and "not a backup" in result.output

    with InProcessServer(create_app(DeliveryService(SQLiteDatabase(restored)))) as again:
        bob.client = DSClient(again.url, bob.identity)
        bob.client.login()
        events = bob.sync()
    texts = [e.data for e in events if isinstance(e, ApplicationMessage)]
    assert len(texts) == queued
    assert texts == [b"message %d" % i for i in range(queued)]


def test_postgres_revoke_queue_depth_backup_and_restore(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import psycopg

    import pg_embedded

    tools = pg_embedded.client_binaries()  # pg_dump of the embedded server's version first
    if tools is not None:
        monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ.get('PATH', '')}")

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a fresh DS database
        for (table,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall():
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    service = DeliveryService(PostgresDatabase(postgres_url))
    try:
        with InProcessServer(create_app(service)) as server:
            alice, bob = pair(server.url)
            alice.send(b"hello")
            headers = {"authorization": f"Bearer {bob.client.token}"}
            assert (
                admin_json("revoke-tokens", "bob", "--database", postgres_url)["tokens_ended"] == 1
            )
            refused_soon(server.url, headers)
            assert (
                admin_json("queue-depth", "--client", "bob", "--database", postgres_url)["waiting"]
                == 1
            )
            if shutil.which("pg_dump") is None:
                pytest.skip("pg_dump is not installed")
            dump = tmp_path / "ds.dump"
            result = admin("backup", "--to", str(dump), "--database", postgres_url)
            assert result.exit_code == 0, result.output
            assert "pg_dump" in result.output and "mlspy:mlspy@" not in result.output
            admin_json("delete-user", "bob", "--yes", "--database", postgres_url)
            assert [u["user"] for u in admin_json("users", "--database", postgres_url)] == ["alice"]
        service.db.close()
        result = admin("restore", "--from", str(dump), "--database", postgres_url)
        assert result.exit_code == 0, result.output
        service = DeliveryService(PostgresDatabase(postgres_url))
        with InProcessServer(create_app(service)) as server:
            bob.client = DSClient(server.url, bob.identity)
            bob.client.login()
            events = bob.sync()
        assert [e.data for e in events if isinstance(e, ApplicationMessage)] == [b"hello"]
    finally:
        service.db.close()
