"""A real Delivery Service on loopback, per test: SQLite in a temporary directory, and — when
``MLSPY_TEST_POSTGRES`` names a database (``.ci/run`` starts one) — two DS nodes sharing one
PostgreSQL database, with clients spread over both nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ds_helpers import POSTGRES, Cluster

from mlspy.ds.app import create_app
from mlspy.ds.db import PostgresDatabase, SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not POSTGRES, reason="MLSPY_TEST_POSTGRES is not set (.ci/run sets it)"
        ),
    ),
]


def _reset_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for table in (
            "queue",
            "messages",
            "group_undo",
            "rejected_commits",
            "group_members",
            "groups",
            "key_packages",
            "key_package_claims",
            "tokens",
            "challenges",
            "clients",
            "accounts",
            "invites",
            "devices",
            "pairings",
            "client_aliases",
            # retention, quotas, stateless challenges (issue 18)
            "ds_secrets",
            "quota_usage",
            "message_usage",
            "key_package_times",
            "group_meta",
        ):
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")


@pytest.fixture
def ds_options() -> dict[str, Any]:
    """Options of the DS under test (a test parametrizes ``ds_options`` to change them)."""
    return {}


@pytest.fixture(params=BACKENDS)
def ds(
    request: pytest.FixtureRequest, tmp_path: Path, ds_options: dict[str, Any]
) -> Iterator[Cluster]:
    if request.param == "sqlite":
        service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"), **ds_options)
        with InProcessServer(create_app(service)) as server:
            yield Cluster([server], [service])
        return
    assert POSTGRES is not None
    _reset_postgres(POSTGRES)
    nodes = [DeliveryService(PostgresDatabase(POSTGRES), **ds_options) for _ in range(2)]
    with (
        InProcessServer(create_app(nodes[0])) as a,
        InProcessServer(create_app(nodes[1])) as b,
    ):
        yield Cluster([a, b], nodes)
    for node in nodes:
        node.db.close()
