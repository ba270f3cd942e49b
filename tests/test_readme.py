"""The README's Python examples run as written (the SDK one against a real DS on loopback)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _run(code: str, cwd: Path) -> str:
    script = cwd / "example.py"
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_library_example(tmp_path: Path) -> None:
    (code,) = [c for c in _examples() if "Group.create" in c]
    _run(code, tmp_path)


def test_sdk_example(tmp_path: Path) -> None:
    (code,) = [c for c in _examples() if "mlspy.client" in c]
    assert 'SERVER = "http://127.0.0.1:8080"' in code
    app = create_app(DeliveryService(SQLiteDatabase(tmp_path / "ds.db")))
    with InProcessServer(app) as server:
        out = _run(code.replace("http://127.0.0.1:8080", server.url), tmp_path)
    assert out == "alice (laptop): hi bob\n"
    for db in ("alice-phone.db", "alice-laptop.db", "bob.db"):
        assert (tmp_path / db).exists()
