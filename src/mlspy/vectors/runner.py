"""Run official test-vector files and count passed, failed and skipped entries.

A file's kind comes from its name (``tree-math.json`` → ``tree-math``) or is given explicitly.
Each entry is checked independently; the first failed check of an entry is reported with its
name, and an unexpected exception counts as a failure of that entry (never a crash of the run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlspy.errors import MLSError, UsageError
from mlspy.vectors.check import CheckFailed, Entry

Checker = Callable[[Entry], None]


def _checkers() -> dict[str, Checker]:
    # Imported lazily so `mlspy --help` stays fast and a broken kind cannot break the others.
    from mlspy.vectors import (
        kind_basic,
        kind_group,
        kind_messages,
        kind_protection,
        kind_schedule,
        kind_tree,
    )

    return {
        "tree-math": kind_basic.check_tree_math,
        "deserialization": kind_basic.check_deserialization,
        "crypto-basics": kind_basic.check_crypto_basics,
        "secret-tree": kind_schedule.check_secret_tree,
        "key-schedule": kind_schedule.check_key_schedule,
        "psk_secret": kind_schedule.check_psk_secret,
        "transcript-hashes": kind_protection.check_transcript_hashes,
        "message-protection": kind_protection.check_message_protection,
        "messages": kind_messages.check_messages,
        "tree-operations": kind_tree.check_tree_operations,
        "tree-validation": kind_tree.check_tree_validation,
        "treekem": kind_tree.check_treekem,
        "welcome": kind_group.check_welcome,
        "passive-client": kind_group.check_passive_client,
    }


def supported_kinds() -> list[str]:
    return sorted(_checkers())


def default_vectors_dir() -> Path:
    """``$MLS_TEST_VECTORS``, else ``../shared/mls-test-vectors`` beside the checkout."""
    env = os.environ.get("MLS_TEST_VECTORS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    # src/mlspy/vectors/runner.py -> checkout root is parents[3]
    return here.parents[3].parent / "shared" / "mls-test-vectors"


def kind_of(path: Path) -> str:
    """``tree-math.json`` -> ``tree-math``; every ``passive-client-*`` file is one kind."""
    name = path.name.removesuffix(".json")
    return "passive-client" if name.startswith("passive-client-") else name


@dataclass
class EntryResult:
    name: str
    status: str  # "passed" | "failed" | "skipped"
    check: str = ""
    detail: str = ""


@dataclass
class FileResult:
    path: str
    kind: str
    entries: list[EntryResult] = field(default_factory=list)
    note: str = ""

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "kind": self.kind,
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "note": self.note,
            "failures": [
                {"entry": e.name, "check": e.check, "detail": e.detail}
                for e in self.entries
                if e.status == "failed"
            ],
        }


def load_entries(path: Path) -> list[Entry]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a JSON array of test vectors")
    return data


def entry_name(index: int, entry: Entry) -> str:
    """``suite3-7`` for the entry at index 7 with cipher suite 3; ``entry-7`` without a suite."""
    cs = entry.get("cipher_suite") if isinstance(entry, dict) else None
    return f"suite{cs}-{index}" if isinstance(cs, int) else f"entry-{index}"


def iter_entries(path: Path) -> Iterator[tuple[str, Entry]]:
    for i, e in enumerate(load_entries(path)):
        yield entry_name(i, e), e


def checker_for(kind: str) -> Checker:
    checkers = _checkers()
    if kind in checkers:
        return checkers[kind]
    known = ", ".join(sorted(checkers))
    raise UsageError(f"unknown vector kind {kind!r}; known kinds: {known} (use --kind)")


def run_entry(checker: Checker, name: str, entry: Entry) -> EntryResult:
    try:
        checker(entry)
    except CheckFailed as exc:
        return EntryResult(name, "failed", exc.check, exc.detail)
    except MLSError as exc:
        return EntryResult(name, "failed", type(exc).__name__, str(exc))
    except Exception as exc:  # an entry must never crash the run; report it as our failure
        return EntryResult(name, "failed", f"unexpected {type(exc).__name__}", str(exc))
    return EntryResult(name, "passed")


def run_file(
    path: Path,
    kind: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FileResult:
    kind = kind or kind_of(path)
    checker = checker_for(kind)
    entries = load_entries(path)
    result = FileResult(str(path), kind)
    for i, e in enumerate(entries):
        result.entries.append(run_entry(checker, entry_name(i, e), e))
        if progress is not None:
            progress(i + 1, len(entries))
    return result


def unknown_file(path: Path) -> FileResult:
    """A file in the vectors folder of a kind mlspy does not know: listed, entries skipped."""
    kind = kind_of(path)
    result = FileResult(str(path), kind, note=f"unknown vector kind {kind!r}, not checked")
    for i, e in enumerate(load_entries(path)):
        result.entries.append(EntryResult(entry_name(i, e), "skipped"))
    return result
