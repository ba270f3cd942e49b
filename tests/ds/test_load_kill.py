"""The load benchmark at a small size, with the DS process SIGKILLed and restarted midway:
every message the DS acknowledged reaches every other member of its group (nothing lost)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "ds_load.py"


def test_kill_and_restart_loses_nothing() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--clients",
            "12",
            "--groups",
            "3",
            "--seconds",
            "4",
            "--kill",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(
        (line[:28].strip(), line[28:].strip()) for line in proc.stdout.splitlines() if line
    )
    assert lines["lost"] == "0"
    assert int(lines["accepted messages"]) > 0
    assert "DS killed (SIGKILL) at" in lines
