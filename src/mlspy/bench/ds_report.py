"""The figures of one rate point of ``mlspy bench-ds``, its table row, and the saturation
point.

With commits (``--commit-every``) the row's counts (offered, accepted, errors, losses) cover
every submission, commits included, while its latencies are the application messages' alone;
the commits' own figures go in the row's ``commits`` and on a second line under it."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from mlspy.bench.ds_traffic import REFUSED, TIMEOUT, TRANSPORT, Received, Sent

# The saturation point: the highest offered rate served with p99 below this and no error.
P99_GOAL_MS = 100.0
# Sends the generator started this late (p99) may be the generator's doing, not the DS's.
LAG_WARNING_MS = 10.0

COLUMNS = (
    ("rate/s", 8, "rate", "g"),
    ("offered/s", 10, "offered_per_s", ".1f"),
    ("accepted/s", 11, "accepted_per_s", ".1f"),
    ("deliv/s", 9, "delivered_per_s", ".0f"),
    ("p50 ms", 8, "p50_ms", ".1f"),
    ("p99 ms", 8, "p99_ms", ".1f"),
    ("max ms", 8, "max_ms", ".1f"),
    ("non2xx", 7, "non_2xx", "d"),
    ("tmout", 6, "timeouts", "d"),
    ("conn", 5, "connection_errors", "d"),
    ("lost", 5, "lost", "d"),
    ("dup", 5, "duplicates", "d"),
    ("srv cpu%", 9, "server_cpu_percent", ".0f"),
    ("gen cpu%", 9, "generator_cpu_percent", ".0f"),
    ("lag99 ms", 9, "send_lag_p99_ms", ".1f"),
)


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def point(
    rate: float,
    window: tuple[float, float],
    sent: Sequence[Sent],
    received: Sequence[Received],
    cpu: dict[str, float | None],
    commits: bool = False,
) -> dict[str, Any]:
    """One row: rates over the measured window; latencies of the application messages
    scheduled in it (every receiver's delivery); errors, losses and repeats over the whole
    point; with ``commits``, the commits' figures (:func:`commit_figures`)."""
    start, end = window
    seconds = end - start
    records = [r for s in sent for r in s.records]
    measured = [r for r in records if start <= r[1] < end]
    latencies = sorted(x for r in received for x in r.latencies_ms)
    lags = sorted(x * 1000 for s in sent for x in s.lags)
    outcomes = Counter(min(r[2], 0) for r in records)
    kinds: Counter[str] = Counter()
    for s in sent:
        kinds.update(s.kinds)
    row: dict[str, Any] = {
        "rate": rate,
        "offered_per_s": len(measured) / seconds,
        "accepted_per_s": sum(1 for r in measured if r[2] >= 0) / seconds,
        "delivered_per_s": sum(r.delivered_in_window for r in received) / seconds,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "non_2xx": outcomes[REFUSED],
        "errors_by_kind": dict(kinds),
        "timeouts": outcomes[TIMEOUT],
        "connection_errors": outcomes[TRANSPORT],
        "lost": sum(r.lost for r in received),
        "duplicates": sum(r.duplicates for r in received),
        "messages": len(records),
        "acknowledged": sum(1 for r in records if r[2] >= 0),
        "deliveries_owed": sum(r.expected for r in received),
        "reconnects": sum(r.reconnects for r in received),
        "send_lag_p99_ms": percentile(lags, 0.99),
        **cpu,
    }
    if commits:
        late = sum(s.late_commits for s in sent)
        row["commits"] = commit_figures(window, records, kinds, received, late)
    return row


def commit_figures(
    window: tuple[float, float],
    records: Sequence[tuple[int, float, int, bool]],
    kinds: Counter[str],
    received: Sequence[Received],
    late: int = 0,
) -> dict[str, Any]:
    """The commits of a point: how many were submitted and accepted (``late``: answered
    after the timeout, though accepted), refusals (409s apart: the epoch moved under the
    sender), lost deliveries, receipts filed under the wrong kind;
    and the latencies of those scheduled in the window — ``to_all``: per commit, its latest
    receiver's (commit-to-all-delivered), of the commits every receiver got; ``delivery``:
    every receiver's."""
    start, end = window
    ours = [r for r in records if r[3]]
    incomplete = set().union(*(r.commits_incomplete for r in received))
    last: dict[int, float] = {}
    for r in received:
        for seq, ms in r.commit_last_ms.items():
            last[seq] = max(ms, last.get(seq, ms))
    to_all = sorted(ms for seq, ms in last.items() if seq not in incomplete)
    each = sorted(x for r in received for x in r.commit_latencies_ms)
    return {
        "submitted": len(ours),
        "in_window": sum(1 for r in ours if start <= r[1] < end),
        "acknowledged": sum(1 for r in ours if r[2] >= 0),
        "late": late,
        "refused": sum(1 for r in ours if r[2] == REFUSED),
        "conflicts": kinds["commit 409"],
        "timeouts": sum(1 for r in ours if r[2] == TIMEOUT),
        "connection_errors": sum(1 for r in ours if r[2] == TRANSPORT),
        "lost": sum(r.commits_lost for r in received),
        "misfiled": sum(r.misfiled for r in received),
        "to_all_count": len(to_all),
        "to_all_p50_ms": percentile(to_all, 0.50),
        "to_all_p99_ms": percentile(to_all, 0.99),
        "to_all_max_ms": to_all[-1] if to_all else None,
        "delivery_p50_ms": percentile(each, 0.50),
        "delivery_p99_ms": percentile(each, 0.99),
        "delivery_max_ms": each[-1] if each else None,
    }


def errors(row: dict[str, Any]) -> int:
    return int(row["non_2xx"] + row["timeouts"] + row["connection_errors"] + row["lost"])


def saturation(rows: Sequence[dict[str, Any]]) -> float | None:
    """The highest rate offered with p99 under ``P99_GOAL_MS`` and no error at all."""
    good = [
        r["rate"]
        for r in rows
        if r["p99_ms"] is not None and r["p99_ms"] < P99_GOAL_MS and errors(r) == 0
    ]
    return max(good) if good else None


def header() -> str:
    return " ".join(f"{name:>{width}}" for name, width, _, _ in COLUMNS)


def line(row: dict[str, Any]) -> str:
    cells = []
    for _, width, key, spec in COLUMNS:
        value = row.get(key)
        cells.append(f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}")
    return " ".join(cells)


def commit_line(row: dict[str, Any]) -> str:
    """The second line of a point with commits: counts, then latencies in ms."""
    c = row["commits"]

    def ms(key: str) -> str:
        value = c[key]
        return "-" if value is None else f"{value:.1f}"

    return (
        f"{'commits':>8}: {c['submitted']} submitted, {c['acknowledged']} accepted "
        f"({c['late']} late), "
        f"{c['refused']} refused ({c['conflicts']} x 409), {c['timeouts']} timed out, "
        f"{c['lost']} deliveries lost | to all receivers (n={c['to_all_count']}) "
        f"p50 {ms('to_all_p50_ms')} p99 {ms('to_all_p99_ms')} max {ms('to_all_max_ms')} | "
        f"per delivery p50 {ms('delivery_p50_ms')} p99 {ms('delivery_p99_ms')} "
        f"max {ms('delivery_max_ms')}"
    )


def footer(rows: Sequence[dict[str, Any]]) -> list[str]:
    best = saturation(rows)
    out = [
        f"saturation: {best:g} msg/s (the highest offered rate with p99 < {P99_GOAL_MS:g} ms "
        "and no errors)"
        if best is not None
        else f"saturation: none of the rates had p99 < {P99_GOAL_MS:g} ms and no errors"
    ]
    # The generator's own lateness is part of every latency it measures: worth a word when
    # it is a noticeable part of the p99.
    late = [
        r
        for r in rows
        if (lag := r["send_lag_p99_ms"] or 0) > LAG_WARNING_MS and lag > 0.1 * (r["p99_ms"] or 0)
    ]
    for r in late:
        out.append(
            f"note: at {r['rate']:g} msg/s the generator itself started sends up to "
            f"{r['send_lag_p99_ms']:.0f} ms late (lag99), a noticeable part of the p99: try "
            "--procs, or a quieter machine"
        )
    return out
