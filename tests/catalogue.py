"""The parser of ``docs/validation.md``, the catalogue of receiver-side rules: shared by its
meta-test (``tests/test_validation_catalogue.py``) and by the parity plugin of
``tests/conftest.py`` (:mod:`parity`), which checks at the end of a run that every public rule's
test compared a member with the public view of its group."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "validation.md"
HEADER = "| id | section | scope | rule | error | test |"
CELLS = 6
SCOPES = ("public", "member")


@dataclass(frozen=True)
class Row:
    line: int
    id: str
    section: str
    scope: str
    rule: str
    error: str
    test: str


def _cell(text: str) -> str:
    return text.strip().strip("`").strip()


def parse(text: str) -> tuple[Row, ...]:
    """Every row of every table whose header is exactly :data:`HEADER`."""
    lines = text.splitlines()
    out: list[Row] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != HEADER:
            i += 1
            continue
        assert re.fullmatch(rf"\|(\s*-+\s*\|){{{CELLS}}}", lines[i + 1].strip()), lines[i + 1]
        i += 2
        while i < len(lines) and lines[i].startswith("|"):
            cells = lines[i].strip().strip("|").split("|")
            assert len(cells) == CELLS, f"line {i + 1}: {len(cells)} cells: {lines[i]!r}"
            out.append(Row(i + 1, *(_cell(c) for c in cells)))
            i += 1
    return tuple(out)


@cache
def catalogue_text() -> str:
    return CATALOGUE.read_text(encoding="utf-8")


@cache
def rows() -> tuple[Row, ...]:
    return parse(catalogue_text())
