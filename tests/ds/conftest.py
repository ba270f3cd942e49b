"""A real Delivery Service on loopback, per test (SQLite in a temporary directory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService


@pytest.fixture
def ds(tmp_path: Path) -> Iterator[InProcessServer]:
    service = DeliveryService(SQLiteDatabase(tmp_path / "ds.sqlite"))
    with InProcessServer(create_app(service)) as server:
        server.service = service  # type: ignore[attr-defined]
        yield server
