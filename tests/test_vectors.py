"""One test per official test-vector entry, for every kind mlspy checks.

The expected values come from the vector files; the checkers in ``mlspy.vectors`` compare our
computation with them, check by check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlspy.vectors.check import CheckFailed
from mlspy.vectors.runner import checker_for, kind_of
from vectors_dir import vector_params

FILES = [
    "tree-math",
    "deserialization",
    "crypto-basics",
    "secret-tree",
    "key-schedule",
    "psk_secret",
    "transcript-hashes",
    "message-protection",
    "messages",
    "tree-operations",
    "tree-validation",
    "treekem",
    "welcome",
    "passive-client-welcome",
    "passive-client-handling-commit",
    "passive-client-random",
]

PARAMS = [
    pytest.param(kind_of(Path(f"{name}.json")), p.values[0], id=f"{name}-{p.id}", marks=p.marks)
    for name in FILES
    for p in vector_params(f"{name}.json")
]


@pytest.mark.parametrize(("kind", "entry"), PARAMS)
def test_vector(kind: str, entry: Any) -> None:
    try:
        checker_for(kind)(entry)
    except CheckFailed as exc:  # pragma: no cover - shown only on failure
        pytest.fail(f"{kind}: {exc}")
