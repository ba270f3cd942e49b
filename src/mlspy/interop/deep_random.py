"""Generate the deep random interop scenario: a large group through many random commits.

The community harness runs a long random script to shake out disagreements that only show
in big, churning trees (blanks, unmerged leaves, truncation, mixed proposal lists). This
generator writes such a script in the harness's config format: a group created with
``--members`` members, then ``--commits`` commits each adding, removing and updating members
(by reference and by value), interleaved with empty path commits and application messages,
keeping the group between ``--members`` and ``--max-members``. It is deterministic in
``--seed``, so a failing run can be replayed step by step.

    python -m mlspy.interop.deep_random --seed 1 > deep_random.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any


def generate(
    seed: int, members: int = 100, commits: int = 90, max_members: int = 200
) -> dict[str, Any]:
    """The scenario config ``{"scripts": {"deep_random": [step, ...]}}``."""
    rng = random.Random(seed)
    names = (f"m{i:03d}" for i in range(10_000))
    group = [next(names) for _ in range(members)]
    steps: list[dict[str, Any]] = [
        {"action": "createGroup", "actor": group[0], "members": group[1:]}
    ]

    def emit(step: dict[str, Any]) -> int:
        steps.append(step)
        return len(steps) - 1

    low = members
    for _ in range(commits):
        committer = rng.choice(group)
        others = [m for m in group if m != committer]
        n_add = rng.randint(0, 4) if len(group) < max_members - 4 else 0
        n_remove = rng.randint(0, 3) if len(group) > low + 3 else 0
        n_update = rng.randint(0, 3)
        removed = rng.sample(others, n_remove)
        staying = [m for m in others if m not in removed]
        updaters = rng.sample(staying, min(n_update, len(staying)))
        by_ref: list[int] = []
        by_value: list[dict[str, Any]] = []
        joiners: list[str] = []
        for _ in range(n_add):
            joiner = next(names)
            joiners.append(joiner)
            kp = emit({"action": "createKeyPackage", "actor": joiner})
            if rng.random() < 0.5:
                proposer = rng.choice([*staying, committer])
                by_ref.append(emit({"action": "addProposal", "actor": proposer, "keyPackage": kp}))
            else:
                by_value.append({"proposalType": "add", "keyPackage": kp})
        for gone in removed:
            if rng.random() < 0.5 and staying:
                proposer = rng.choice(staying)
                remove = {"action": "removeProposal", "actor": proposer, "removed": gone}
                by_ref.append(emit(remove))
            else:
                by_value.append({"proposalType": "remove", "removed": gone})
        for updater in updaters:
            by_ref.append(emit({"action": "updateProposal", "actor": updater}))
        step: dict[str, Any] = {
            "action": "fullCommit",
            "actor": committer,
            "byReference": by_ref,
            "byValue": by_value,
            "members": staying,
            "joiners": joiners,
        }
        if not (by_ref or by_value) or rng.random() < 0.2:
            step["force_path"] = True
        emit(step)
        group = [committer, *staying, *joiners]
        if rng.random() < 0.25:
            sender, receiver = rng.sample(group, 2)
            text = f"message {len(steps)} from {sender}"
            ct = emit(
                {
                    "action": "protect",
                    "actor": sender,
                    "authenticatedData": f"aad {len(steps)}",
                    "plaintext": text,
                }
            )
            emit({"action": "unprotect", "actor": receiver, "ciphertext": ct})
    return {"scripts": {"deep_random": steps}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlspy.interop.deep_random",
        description="Write the deep random interop scenario (JSON) to standard output.",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--members", type=int, default=100, help="initial (and minimum) size")
    parser.add_argument("--max-members", type=int, default=200)
    parser.add_argument("--commits", type=int, default=90)
    args = parser.parse_args(argv)
    if not 2 <= args.members < args.max_members:
        parser.error("need 2 <= --members < --max-members")
    config = generate(args.seed, args.members, args.commits, args.max_members)
    json.dump(config, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
