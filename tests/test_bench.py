"""The benchmark runs at small sizes so it cannot rot; no timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlspy.bench import mlsrs_ops
from mlspy.bench.main import main


def test_bench_small_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sizes", "2,16", "--repeat", "1", "--quiet"]
    args += ["--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")]
    if mlsrs_ops.available():
        args += ["--compare", "mls-rs"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "commit process" in out and "join (Welcome)" in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert set(data["groups"]) == {"sparse", "full"}
    cell = data["groups"]["sparse"]["16"]
    assert cell["mlspy"]["commit create"] > 0
    assert cell["floor"]["app decrypt 100 B"] > 0
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_bench_rejects_bad_sizes() -> None:
    with pytest.raises(SystemExit):
        main(["--sizes", "1,x"])
