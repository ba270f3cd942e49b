"""ruff and mypy --strict are part of the test suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed; run pip install -e '.[test]'"
    return found


def _run(*args: str) -> None:
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_check() -> None:
    _run(_tool("ruff"), "check", "src", "tests", "benchmarks", "fuzz")


def test_ruff_format() -> None:
    _run(_tool("ruff"), "format", "--check", "src", "tests", "benchmarks", "fuzz")


def test_mypy_strict() -> None:
    _run(_tool("mypy"), "--strict", "src/mlspy")
