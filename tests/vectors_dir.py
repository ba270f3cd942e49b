"""Where the official MLS test vectors live, and loading them for parametrized tests.

The directory is ``$MLS_TEST_VECTORS`` or, by default, ``../shared/mls-test-vectors`` beside
the checkout. A missing directory or file is a visible skip with its reason — never a silent
pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.structures import ParameterSet

from mlspy.vectors.runner import entry_name as entry_id

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VECTORS_DIR = REPO_ROOT / ".." / "shared" / "mls-test-vectors"


def vectors_dir() -> Path:
    """The configured test-vector directory (it may not exist)."""
    configured = os.environ.get("MLS_TEST_VECTORS")
    return Path(configured) if configured else DEFAULT_VECTORS_DIR


def _missing_reason(path: Path) -> str:
    return (
        f"MLS test vector file {path} not found (set MLS_TEST_VECTORS to the directory "
        "holding the official mls-implementations test vectors)"
    )


def load_vectors(name: str) -> list[dict[str, Any]]:
    """Load one vector file; skip the calling module, with the reason, when it is missing.

    Call it at module level (collection time).
    """
    path = vectors_dir() / name
    if not path.is_file():
        pytest.skip(_missing_reason(path), allow_module_level=True)
    with path.open(encoding="utf-8") as f:
        data: list[dict[str, Any]] = json.load(f)
    return data


def vector_params(name: str) -> list[ParameterSet]:
    """One ``pytest.param(entry, id=...)`` per entry of a vector file; when the file is
    missing, a single parameter marked skip with the reason."""
    path = vectors_dir() / name
    if not path.is_file():
        return [
            pytest.param(
                None, id=f"{name}-missing", marks=pytest.mark.skip(reason=_missing_reason(path))
            )
        ]
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    entries = data if isinstance(data, list) else [data]
    return [pytest.param(e, id=entry_id(i, e)) for i, e in enumerate(entries)]
