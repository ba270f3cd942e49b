"""Run the group benchmark: ``mlspy bench`` / ``benchmarks/bench_group.py``."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlspy.bench import mlsrs_ops, report
from mlspy.bench.floor import measure_costs
from mlspy.bench.mlspy_ops import build, time_operations
from mlspy.bench.timing import Timer
from mlspy.crypto.signature import set_verification_cache
from mlspy.crypto.suite import parse_suite
from mlspy.group import GroupConfig

DEFAULT_SIZES = (2, 16, 64, 256, 1024, 4096)
# Building a full tree costs O(n^2) commit processing; beyond this it takes too long.
MAX_FULL = 256


def run(
    sizes: Sequence[int],
    shapes: Sequence[str],
    repeat: int,
    compare: bool,
    progress: Callable[[str], None],
    cipher_suite: int = 1,
) -> dict[str, Any]:
    # Every join must verify every signature, as a fresh client would.
    previous = set_verification_cache(0)
    try:
        return _run(sizes, shapes, repeat, compare, progress, cipher_suite)
    finally:
        set_verification_cache(previous)


def _run(
    sizes: Sequence[int],
    shapes: Sequence[str],
    repeat: int,
    compare: bool,
    progress: Callable[[str], None],
    cipher_suite: int,
) -> dict[str, Any]:
    costs = measure_costs(cipher_suite)
    timer = Timer(repeat)
    config = GroupConfig(check_lifetimes=False)
    results: dict[str, Any] = {
        "repeat": repeat,
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "crypto_costs": costs.__dict__,
        "cipher_suite": cipher_suite,
        "groups": {},
    }
    for shape in shapes:
        by_size: dict[str, Any] = {}
        for size in sizes:
            if shape == "full" and size > MAX_FULL:
                continue
            progress(f"suite 0x{cipher_suite:04x} {shape} {size}: building")
            t0 = time.perf_counter()
            built = build(size, shape, config, cipher_suite=cipher_suite)
            progress(f"{shape} {size}: built in {time.perf_counter() - t0:.1f}s, timing")
            measured = time_operations(built, timer, config, costs)
            cell: dict[str, Any] = {
                "mlspy": measured.seconds,
                "floor": measured.floor,
                "bytes": measured.sizes,
            }
            if compare:
                progress(f"{shape} {size}: mls-rs")
                cell["mls-rs"] = mlsrs_ops.time_operations(size, shape, timer)
            by_size[str(size)] = cell
        if by_size:
            results["groups"][shape] = by_size
    results["title"] = (
        f"mlspy vs mls-rs, suite 0x{cipher_suite:04x} — {results['machine']}, {results['date']}"
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="mlspy bench", description="Benchmark MLS group operations against group size."
    )
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="comma-separated member counts (default: %(default)s)",
    )
    parser.add_argument("--shapes", default="sparse,full", help="sparse,full (default: both)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per cell; the median is kept")
    parser.add_argument("--compare", choices=["mls-rs"], help="also run mls-rs in this process")
    parser.add_argument(
        "--json", type=Path, help="write the results as JSON to this file (- for stdout)"
    )
    parser.add_argument("--plot", type=Path, help="write a log-log PNG plot to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--suite",
        default="1",
        help="cipher suite(s), comma-separated numbers or names (`mlspy suites`); with more "
        "than one, a table compares them operation by operation (default: 1)",
    )
    args = parser.parse_args(argv)
    try:
        suites = [parse_suite(text) for text in args.suite.split(",") if text.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        parser.error("--sizes takes integers, e.g. 2,16,64")
    if any(s < 2 for s in sizes):
        parser.error("groups need at least 2 members")
    shapes = [s for s in args.shapes.split(",") if s]
    if any(s not in ("sparse", "full") for s in shapes):
        parser.error("--shapes takes sparse and/or full")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for out in (args.json, args.plot):
        # Refuse an unwritable destination now, not after minutes of measuring.
        if out is not None and str(out) != "-" and not out.resolve().parent.is_dir():
            parser.error(f"no directory for {out}")
    to_stdout = str(args.json) == "-"
    compare = args.compare == "mls-rs"
    if compare and suites != [1]:
        parser.error("--compare mls-rs runs in suite 1 only (the binding's one suite)")
    if compare and not mlsrs_ops.available():
        print(
            "mls-rs binding not installed: pip install -e '.[interop]' (agentvault-mls-rs-uniffi)",
            file=sys.stderr,
        )
        return 2

    def progress(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    if len(suites) > 1:
        return _compare_suites(suites, sizes, shapes, args, progress, to_stdout)
    results = run(sizes, shapes, args.repeat, compare, progress, suites[0])
    # With --json -, stdout carries only the JSON (the table goes to stderr).
    print(report.table(results), file=sys.stderr if to_stdout else sys.stdout)
    if to_stdout:
        print(json.dumps(results, indent=2, sort_keys=True))
    elif args.json:
        report.write_json(results, args.json)
        print(f"\nJSON: {args.json}")
    if args.plot:
        if report.plot(results, args.plot):
            print(f"plot: {args.plot}")
        else:
            print("plot skipped: matplotlib is not installed (pip install matplotlib)")
    return 0


def _compare_suites(
    suites: Sequence[int],
    sizes: Sequence[int],
    shapes: Sequence[str],
    args: Any,
    progress: Callable[[str], None],
    to_stdout: bool,
) -> int:
    """Each suite measured in turn; one table of them side by side."""
    by_suite = {
        f"0x{cs:04x}": run(sizes, shapes, args.repeat, False, progress, cs) for cs in suites
    }
    text = report.suites_table(by_suite)
    print(text, file=sys.stderr if to_stdout else sys.stdout)
    doc = {"suites": by_suite}
    if to_stdout:
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif args.json:
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True))
        print(f"\nJSON: {args.json}")
    return 0
