"""Cost of saving and loading a member's group state (state at rest), by group size.

Usage: .venv/bin/python benchmarks/bench_state.py [--sizes 10,100,1000] [--repeat 5]
Prints bytes and milliseconds: serialize, deserialize, a full SQLite save/load round, and
what one application message costs a stored member (receive: decrypt plus writing the ratchet
part, which is all that changes) next to the size of that ratchet part.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlspy.group import Group, GroupConfig, SigningIdentity, create_key_package
from mlspy.group.serialize import serialize_ratchet_part
from mlspy.messages import Add, Proposal
from mlspy.storage import GroupStore, SQLiteStore


def _median_ms(fn: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def measure(size: int, repeat: int, db: Path) -> dict[str, float]:
    bundles = [create_key_package(SigningIdentity.generate(b"m%d" % i)) for i in range(size - 1)]
    config = GroupConfig(ratchet_tree_extension=False)
    alice = Group.create(SigningIdentity.generate(b"alice"), config=config)
    out = alice.commit([Proposal(Add(b.key_package)) for b in bundles])
    alice.merge_pending_commit()
    bob = Group.join(out.welcome or b"", bundles[0], ratchet_tree=alice.tree, config=config)
    for _ in range(3):  # some ratchet state worth saving
        bob.process(alice.encrypt_application(b"x" * 100))
    data = bob.to_bytes()
    groups = GroupStore(SQLiteStore(db))
    stored = groups.adopt(bob)
    incoming = iter([alice.encrypt_application(b"x" * 100) for _ in range(repeat)])
    return {
        "bytes": float(len(data)),
        "serialize ms": _median_ms(bob.to_bytes, repeat),
        "deserialize ms": _median_ms(lambda: Group.from_bytes(data), repeat),
        "SQLite save ms": _median_ms(stored.save, repeat),
        "SQLite load ms": _median_ms(lambda: groups.load(bob.group_id), repeat),
        "ratchet bytes": float(len(serialize_ratchet_part(bob))),
        "app msg in ms": _median_ms(lambda: stored.process(next(incoming)), repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = {n: measure(n, args.repeat, Path(tmp) / f"{n}.db") for n in sizes}
    cols = list(next(iter(rows.values())))
    print(f"{'members':>8}" + "".join(f"{c:>16}" for c in cols))
    for n, row in rows.items():
        print(f"{n:>8}" + "".join(f"{row[c]:>16.1f}" for c in cols))


if __name__ == "__main__":
    main()
