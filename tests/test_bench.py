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


def test_bench_compares_suites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: suite 1 beside X-Wing and ML-DSA-87 suites, times and wire sizes."""
    args = ["--suite", "1,83,0xf00b", "--sizes", "4", "--shapes", "sparse", "--repeat", "1"]
    assert main([*args, "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "0x0053 MLS_256_XWING_AES256GCM_SHA512_Ed25519" in out and "Welcome bytes" in out
    data = json.loads((tmp_path / "s.json").read_text())["suites"]
    sizes = {s: data[s]["groups"]["sparse"]["4"]["bytes"] for s in ("0x0001", "0x0053", "0xf00b")}
    # An X-Wing key is 1,216 bytes where an X25519 one is 32; an ML-DSA-87 signature 4,627
    # bytes where an Ed25519 one is 64: the PQ suites' messages are that much larger.
    assert sizes["0x0053"]["KeyPackage bytes"] > sizes["0x0001"]["KeyPackage bytes"] + 2 * 1184
    assert sizes["0xf00b"]["KeyPackage bytes"] > sizes["0x0053"]["KeyPackage bytes"] + 2 * 4563
    assert all(data[s]["groups"]["sparse"]["4"]["mlspy"]["commit create"] > 0 for s in data)
    with pytest.raises(SystemExit):
        main(["--suite", "0x9999"])
