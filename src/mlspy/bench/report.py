"""Tables, JSON and plots of benchmark results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

Results = dict[str, Any]


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # NaN: not measured
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def table(results: Results) -> str:
    """One block per shape: rows are operations, columns are group sizes. A cell reads
    ``mlspy [xratio to mls-rs] [fxratio to the crypto floor]``."""
    lines: list[str] = []
    for shape, by_size in results["groups"].items():
        sizes = sorted(by_size, key=int)
        ops: list[str] = []
        for size in sizes:
            for op in by_size[size]["mlspy"]:
                if op not in ops:
                    ops.append(op)
        lines.append(f"\n{shape} trees (median of {results['repeat']} runs)")
        header = f"{'operation':22}" + "".join(f"{size + ' members':>30}" for size in sizes)
        lines.append(header)
        lines.append("-" * len(header))
        for op in ops:
            cells = []
            for size in sizes:
                cell = by_size[size]
                ours = cell["mlspy"].get(op, float("nan"))
                text = _fmt(ours)
                theirs = cell.get("mls-rs", {}).get(op)
                if theirs:
                    text += f" x{ours / theirs:.2f}"
                floor = cell.get("floor", {}).get(op)
                if floor:
                    text += f" fx{ours / floor:.2f}"
                cells.append(f"{text:>30}")
            lines.append(f"{op:22}" + "".join(cells))
    lines.append(
        "\nxr: mlspy time / mls-rs time (same process, one thread); "
        "fxr: mlspy time / its public-key crypto floor"
    )
    return "\n".join(lines)


# The rows of the suite comparison: times (ms) and wire sizes (bytes).
SUITE_ROWS = (
    "join (Welcome)",
    "commit create",
    "commit process",
    "add create",
    "add process",
    "app encrypt 100 B",
    "app decrypt 100 B",
)
SIZE_ROWS = (
    "commit (path) bytes",
    "Welcome bytes",
    "KeyPackage bytes",
    "GroupInfo (with tree) bytes",
)


def suites_table(by_suite: dict[str, Results]) -> str:
    """Cipher suites side by side: per shape and group size, rows of operations (ms) and wire
    sizes (bytes), one column per suite."""
    from mlspy.crypto import CipherSuite

    names = list(by_suite)
    first = by_suite[names[0]]
    lines = ["columns: " + ", ".join(f"{n} {CipherSuite(int(n, 16)).name}" for n in names)]
    for shape, by_size in first["groups"].items():
        for size in sorted(by_size, key=int):
            lines.append(f"\n{shape} tree, {size} members (median of {first['repeat']} runs)")
            header = f"{'':30}" + "".join(f"{n:>12}" for n in names)
            lines.append(header)
            lines.append("-" * len(header))
            for op in SUITE_ROWS:
                row = [by_suite[n]["groups"][shape][size]["mlspy"].get(op) for n in names]
                lines.append(
                    f"{op + ' ms':30}"
                    + "".join(f"{v * 1000:>12.2f}" if v is not None else f"{'-':>12}" for v in row)
                )
            for key in SIZE_ROWS:
                row = [by_suite[n]["groups"][shape][size]["bytes"].get(key) for n in names]
                lines.append(
                    f"{key:30}"
                    + "".join(f"{v:>12,}" if v is not None else f"{'-':>12}" for v in row)
                )
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=True))


_COLORS = {
    ("mlspy", "sparse"): "tab:blue",
    ("mls-rs", "sparse"): "tab:orange",
    ("mlspy", "full"): "tab:green",
    ("mls-rs", "full"): "tab:red",
}


def plot(results: Results, path: Path) -> bool:
    """A log-log plot of time against group size per operation; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shapes = list(results["groups"])
    ops = sorted({op for s in shapes for c in results["groups"][s].values() for op in c["mlspy"]})
    cols = 4
    rows = math.ceil(len(ops) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, op in zip(axes.flat, ops, strict=False):
        for shape, style in zip(shapes, ("-", ":"), strict=False):
            by_size = results["groups"][shape]
            sizes = sorted(by_size, key=int)
            for impl, marker in (("mlspy", "o"), ("mls-rs", "s")):
                color = _COLORS[(impl, shape)]
                pts = [
                    (int(s), by_size[s][impl][op])
                    for s in sizes
                    if impl in by_size[s] and op in by_size[s][impl]
                ]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, style, marker=marker, color=color, label=f"{impl} {shape}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(op, fontsize=9)
        ax.set_xlabel("members", fontsize=8)
        ax.set_ylabel("seconds", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(ops) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8)
    fig.suptitle(results.get("title", "mlspy group benchmark"), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
