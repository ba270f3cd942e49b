"""Run interop scenarios against ``MLSClient`` gRPC servers (mlspy's or any other stack's).

A scenario file is ``{"scripts": {name: [step, ...]}}`` in the community harness's format.
Each step is ``{"action": ..., ...}``; a step's output (a KeyPackage, proposal, commit,
ciphertext or PSK id) is referred to by later steps through the step's index. Actors are
assigned to clients round-robin (rotated once per client, so every client plays every role),
and every script runs for each cipher suite all clients support, with encrypted and plaintext
handshakes. After every step all current members must agree on the epoch authenticator
(``StateAuth``); ``unprotect`` must return the exact plaintext and authenticated data.

Actions: createGroup, createKeyPackage, joinGroup, externalJoin, installExternalPSK,
groupInfo, addProposal, updateProposal, removeProposal, externalPSKProposal (alias
preSharedKeyProposal), resumptionPSKProposal, groupContextExtensionsProposal,
newMemberAddProposal, addExternalSigner, externalSignerProposal, fullCommit, commit,
handleCommit, handlePendingCommit, protect, unprotect, export, reinit, branch.

``fullCommit`` creates a commit and applies it everywhere in one step; ``commit``,
``handleCommit``, ``handlePendingCommit`` and ``joinGroup`` do the same one member at a time,
so a script can stage races (two members commit in the same epoch, everyone follows one) and
members that lag behind. Members are therefore compared per state: each member carries the
step that produced its current epoch, and all members at the same one must agree.

``configs/*.json`` are the default scenarios; ``configs/deep/deep_random.json`` (made by
:mod:`mlspy.interop.deep_random`) is the long random one, run when named explicitly.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlspy.interop._proto import load
from mlspy.interop.script import ScriptRun, StepError

grpc: Any = importlib.import_module("grpc")

CONFIG_DIR = Path(__file__).with_name("configs")


def _actors(script: Sequence[dict[str, Any]]) -> list[str]:
    """Every actor name in order of first appearance."""
    seen: list[str] = []
    keys = ("actor", "joiner", "signer", "proposer", "committer", "welcomer", "member")
    lists = ("members", "joiners", "clients")
    for s in script:
        names = [s[k] for k in keys if isinstance(s.get(k), str)]
        for k in lists:
            names.extend(x for x in s.get(k, []) if isinstance(x, str))
        desc = s.get("description")
        if isinstance(desc, dict) and isinstance(desc.get("removed"), str):
            names.append(desc["removed"])
        for n in names:
            if n not in seen:
                seen.append(n)
    return seen


@dataclass
class Outcome:
    script: str
    suite: int
    encrypt: bool
    rotation: int
    error: str | None  # None when the run passed


def run_script(
    stubs: list[Any],
    pb2: Any,
    script: Sequence[dict[str, Any]],
    *,
    suite: int,
    encrypt: bool,
    rotation: int,
    suites: list[int],
    record: list[dict[str, Any]] | None = None,
) -> str | None:
    """Run one script; None on success, else a description of the failing step. With
    ``record``, a passing run appends the passive-client vector of its first Welcome joiner."""
    actors = {a: (i + rotation) % len(stubs) for i, a in enumerate(_actors(script))}
    run = ScriptRun(stubs, pb2, suite, encrypt, actors, suites)
    try:
        for index, s in enumerate(script):
            try:
                run.step(index, s)
                if run.members:
                    run.check_agreement()
            except StepError as exc:
                return f"step {index} ({s.get('action')}): {exc}"
            except (KeyError, TypeError, ValueError) as exc:
                return f"step {index} ({s.get('action')}): malformed step: {exc!r}"
    finally:
        try:
            run.free_all()
        except StepError as exc:
            failure: str | None = f"cleanup: {exc}"
        else:
            failure = None
    if failure is not None:
        return failure
    if record is not None and run.recording is not None:
        run.recording["external_psks"] = [
            {"psk_id": k.hex(), "psk": v.hex()} for k, v in run.psk_secrets.items()
        ]
        record.append(run.recording)
    return None


def run_config(
    targets: Sequence[str],
    config: dict[str, Any],
    *,
    suites: Sequence[int] | None = None,
    modes: Sequence[bool] = (True, False),
    rotations: int | None = None,
    scripts: Sequence[str] | None = None,
    record: list[dict[str, Any]] | None = None,
) -> list[Outcome]:
    """Run every script of ``config`` against the clients at ``targets`` (HOST:PORT)."""
    pb2, pb2_grpc = load()
    channels = [grpc.insecure_channel(t) for t in targets]
    try:
        stubs = [pb2_grpc.MLSClientStub(c) for c in channels]
        supported: set[int] | None = None
        for stub in stubs:
            got = set(stub.SupportedCiphersuites(pb2.SupportedCiphersuitesRequest()).ciphersuites)
            supported = got if supported is None else supported & got
        common = sorted(supported or set())
        chosen = [s for s in common if suites is None or s in suites]
        outcomes: list[Outcome] = []
        n_rot = len(stubs) if rotations is None else max(1, min(rotations, len(stubs)))
        for name, script in config["scripts"].items():
            if scripts is not None and name not in scripts:
                continue
            for suite, encrypt, rot in itertools.product(chosen, modes, range(n_rot)):
                error = run_script(
                    stubs,
                    pb2,
                    script,
                    suite=suite,
                    encrypt=encrypt,
                    rotation=rot,
                    suites=common,
                    record=record,
                )
                outcomes.append(Outcome(name, suite, encrypt, rot, error))
        return outcomes
    finally:
        for c in channels:
            c.close()


def _load_config(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """A scenario file, or a usage error naming what is wrong with it."""
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        parser.error(f"cannot read scenario file {path}: {exc}")
    scripts = config.get("scripts") if isinstance(config, dict) else None
    if not isinstance(scripts, dict) or not all(isinstance(v, list) for v in scripts.values()):
        parser.error(f'{path}: expected {{"scripts": {{name: [step, ...]}}}}')
    return config  # type: ignore[no-any-return]


def _probe(targets: Sequence[str], parser: argparse.ArgumentParser) -> list[int]:
    """The cipher suites every client supports; a usage error if one cannot be reached."""
    pb2, pb2_grpc = load()
    common: set[int] | None = None
    for target in targets:
        channel = grpc.insecure_channel(target)
        try:
            stub = pb2_grpc.MLSClientStub(channel)
            req = pb2.SupportedCiphersuitesRequest()
            got = set(stub.SupportedCiphersuites(req, timeout=10).ciphersuites)
        except grpc.RpcError as exc:
            parser.error(
                f"cannot reach client {target} ({exc.code().name}); is `mlspy interop-server "
                "--port PORT` (or another stack's interop client) running there?"
            )
        finally:
            channel.close()
        common = got if common is None else common & got
    return sorted(common or set())


def builtin_configs() -> list[Path]:
    """mlspy's own scenario files."""
    return sorted(CONFIG_DIR.glob("*.json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlspy interop-run", description="Run MLS interop scenarios over gRPC clients."
    )
    parser.add_argument("--client", action="append", required=True, help="HOST:PORT (repeatable)")
    parser.add_argument("--suite", type=int, action="append", help="limit to these suites")
    parser.add_argument(
        "--mode", choices=["encrypted", "plaintext"], action="append", help="handshake modes"
    )
    parser.add_argument("--rotations", type=int, help="actor-to-client rotations per run")
    parser.add_argument(
        "--record",
        type=Path,
        help="write passive-client test vectors (FORMAT.md) of the runs to this directory",
    )
    parser.add_argument(
        "config",
        nargs="*",
        help="scenario JSON files (default: mlspy's own configs)",
    )
    args = parser.parse_args(argv)
    modes = [m == "encrypted" for m in (args.mode or ["encrypted", "plaintext"])]
    paths = [Path(p) for p in args.config] or builtin_configs()
    if args.rotations is not None and args.rotations < 1:
        parser.error("--rotations must be at least 1")
    configs = {path: _load_config(path, parser) for path in paths}
    common = _probe(args.client, parser)
    missing = sorted(set(args.suite or ()) - set(common))
    if missing:
        parser.error(f"suite(s) {missing} not supported by every client; common suites: {common}")
    failed = 0
    for path, config in configs.items():
        recorded: list[dict[str, Any]] | None = [] if args.record else None
        outcomes = run_config(
            args.client,
            config,
            suites=args.suite,
            modes=modes,
            rotations=args.rotations,
            record=recorded,
        )
        if args.record and recorded:
            args.record.mkdir(parents=True, exist_ok=True)
            out = args.record / f"passive-client-mlspy-{path.stem}.json"
            out.write_text(json.dumps(recorded, indent=1))
            print(f"recorded {len(recorded)} passive-client vectors in {out}")
        by_script: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_script.setdefault(o.script, []).append(o)
        for name, runs in by_script.items():
            bad = [o for o in runs if o.error is not None]
            label = f"{path.stem}/{name}"
            if not bad:
                print(f"PASS {label} ({len(runs)} runs)", flush=True)
                continue
            failed += 1
            print(f"FAIL {label} ({len(bad)}/{len(runs)} runs failed)", flush=True)
            for o in bad:
                mode = "encrypted" if o.encrypt else "plaintext"
                print(f"    suite {o.suite} {mode} rotation {o.rotation}: {o.error}")
        if not outcomes:
            print(f"FAIL {path.stem}: no runs (no common cipher suite?)")
            failed += 1
    sys.stdout.flush()
    return 1 if failed else 0
