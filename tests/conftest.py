"""Shared fixtures: where the official test vectors are."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def vectors_dir() -> Path:
    """``$MLS_TEST_VECTORS`` or ``../shared/mls-test-vectors`` beside the checkout."""
    env = os.environ.get("MLS_TEST_VECTORS")
    return Path(env) if env else ROOT.parent / "shared" / "mls-test-vectors"


@cache
def load_vectors(name: str) -> list[Any] | None:
    path = vectors_dir() / name
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


def vector_params(name: str) -> list[Any]:
    """pytest params, one per entry, with ids like ``suite3-7``; a visible skip if missing."""
    from mlspy.vectors.runner import entry_name

    entries = load_vectors(name)
    if entries is None:
        reason = f"test vectors not found: {vectors_dir() / name} (set MLS_TEST_VECTORS)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="missing")]
    return [pytest.param(e, id=entry_name(i, e)) for i, e in enumerate(entries)]
