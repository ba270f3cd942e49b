"""benchmarks/ds_abuse.py runs (one short scenario) so it cannot rot; no timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_abuse_benchmark_runs_one_short_scenario() -> None:
    env = dict(
        os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    args = ["--duration", "1", "--only", "challenges", "--workers", "2"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ds_abuse.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("challenges |")]
    assert len(rows) == 1, done.stdout
    assert "200 " in rows[0]  # the attacker was answered
