"""Each atheris fuzz target runs for a short budget (fuzz/README.md has the long runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


@pytest.mark.parametrize("target", ["fuzz_mlsmessage", "fuzz_group", "fuzz_welcome"])
def test_fuzz_target_short_budget(target: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(FUZZ / f"{target}.py"), "-runs=5000", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 5000 runs" in proc.stderr
