"""Shared pytest configuration.

``tests/`` has no ``__init__.py``; this directory is put on ``sys.path`` so that test modules
in subdirectories can import shared helpers such as :mod:`vectors_dir`. ``vector_params`` is
re-exported for modules that do ``from conftest import vector_params``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlspy.ds.server import InProcessServer

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from vectors_dir import vector_params  # noqa: E402

__all__ = ["vector_params"]


# --- Evidence for docs/validation.md (see tests/parity.py) ----------------------------------

# pytester: the catalogue meta-test runs a small pytest session to show the check bites.
pytest_plugins = ("pytester",)


def pytest_configure(config: pytest.Config) -> None:
    """Fail a run in which a catalogue row's test ran without the evidence it owes: a parity
    check with the public view for a public rule, a rejection carrying the rule's id."""
    from catalogue import rows
    from parity import CatalogueEvidence

    config.pluginmanager.register(CatalogueEvidence(rows), "mlspy-catalogue-evidence")


# --- A real Delivery Service on loopback -----------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    """``mlspy serve``'s app on a SQLite file, over loopback (the client and tool tests)."""
    from mlspy.ds.app import create_app
    from mlspy.ds.db import SQLiteDatabase
    from mlspy.ds.server import InProcessServer
    from mlspy.ds.service import DeliveryService

    with InProcessServer(create_app(DeliveryService(SQLiteDatabase(tmp_path / "ds.db")))) as s:
        yield s
