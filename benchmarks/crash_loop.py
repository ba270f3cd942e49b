"""The random crash loop (issue 16): two SDK clients in subprocesses, each with its own SQLite
store, talk in one group through a real DS on loopback — receive, send, now and then commit —
and are killed with SIGKILL at random moments, then restarted, until ``--kills`` kills. Then
both catch up unkilled and their application logs are checked:

- lost: a message whose ``send()`` returned that never reached the other's application;
- duplicated: one that reached it under two event ids (an event delivered again after a
  crash keeps its id, so that is not a duplicate: it is counted as "redelivered");
- reused: an (epoch, leaf, generation) that carried two different messages;
- epochs: both end in the same epoch with the same epoch authenticator.

    .venv/bin/python benchmarks/crash_loop.py --kills 300
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "client"))

from crash_harness import Actor, findings

from mlspy.ds.app import create_app
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService


def _redelivered(records: list[dict[str, Any]]) -> int:
    ids = [r["id"] for r in records if r["t"] == "event"]
    return len(ids) - len(set(ids))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300, help="stop after this many kills")
    parser.add_argument("--seed", type=int, default=1, help="random seed (kill times)")
    parser.add_argument("--max-delay", type=float, default=1.5, help="longest life, seconds")
    parser.add_argument(
        "--mode", choices=["public", "private"], default="public", help="handshake wire format"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        service = DeliveryService(SQLiteDatabase(tmp / "ds.db"))
        with InProcessServer(create_app(service)) as server:
            alice = Actor("alice", server.url, tmp / "alice", mode=args.mode)
            bob = Actor("bob", server.url, tmp / "bob", mode=args.mode)
            actors = [alice, bob]
            try:
                assert bob.run("sync")[0] == "ok"
                fate, out = alice.run("create")
                assert fate == "ok", out
                gid = out["gid"]
                assert alice.run("invite", gid, "bob")[0] == "ok"
                assert bob.run("sync")[0] == "ok"
                rounds = 0
                with ThreadPoolExecutor(2) as pool:
                    while alice.kills + bob.kills < args.kills:
                        rounds += 1
                        runs = [
                            pool.submit(
                                actor.run,
                                "talk",
                                gid,
                                30,
                                rounds * 2 + i,
                                kill={"after": rng.uniform(0.05, args.max_delay)},
                            )
                            for i, actor in enumerate(actors)
                        ]
                        for r in runs:
                            fate, out = r.result()
                            if fate == "error":
                                raise SystemExit(f"a client failed: {out}")
                        done = alice.kills + bob.kills
                        print(f"\rkills {done}/{args.kills}", end="", file=sys.stderr, flush=True)
                print(file=sys.stderr)
                final: dict[str, Any] = {}
                for _ in range(3):  # catch up: each sees the other's last commits
                    for actor in actors:
                        fate, out = actor.run("sync")
                        assert fate == "ok", out
                        final[actor.name] = out["groups"].get(gid)
            finally:
                for actor in actors:
                    actor.close()
            logs = {a.name: a.records() for a in actors}
    found = findings(logs, logs, gid)
    result = {
        "mode": args.mode,
        "kills": alice.kills + bob.kills,
        "runs": alice.runs + bob.runs,
        "sent": found.sent,
        "delivered": found.delivered,
        "lost": len(found.lost),
        "duplicated": len(found.duplicated),
        "redelivered": sum(_redelivered(r) for r in logs.values()),
        "reused": len(found.reused),
        "observed": found.observed,
        "commits": final["alice"][0] if final.get("alice") else 0,
        "epochs_agree": final.get("alice") == final.get("bob") and final.get("alice") is not None,
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            "| handshakes | kills | runs | sent | delivered | lost | duplicated | redelivered "
            "| keys observed | reused keys | epoch | epochs agree | seconds |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {result['mode']} | {result['kills']} | {result['runs']} | {result['sent']} "
            f"| {result['delivered']} "
            f"| {result['lost']} | {result['duplicated']} | {result['redelivered']} "
            f"| {result['observed']} | {result['reused']} | {result['commits']} "
            f"| {result['epochs_agree']} "
            f"| {result['seconds']} |"
        )
        for line in found.lost[:10] + found.duplicated[:10]:
            print(" ", line)
    ok = not found.lost and not found.duplicated and not found.reused and result["epochs_agree"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
