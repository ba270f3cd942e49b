"""``docs/validation.md`` is the catalogue of the receiver-side rules of RFC 9420: every row
names a rule, the error mlspy raises and the test that breaks it. This test keeps it honest:
ids are unique, every error class exists, every named test exists (so a catalogued rule
without a test fails here), rules marked "(not enforced)" are exactly the ones whose test is
a strict xfail, and the catalogue does not shrink below the count it states."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from catalogue import HEADER, ROOT, SCOPES, Row, catalogue_text, parse, rows
from parity import (
    PARITY,
    REJECTIONS,
    RULE_ID_EXEMPT,
    evidence_problems,
    needs_rule_id,
    node_id,
)

import mlspy.credentials
import mlspy.errors
from mlspy.errors import MLSError

NOT_ENFORCED = "(not enforced)"
# The count this catalogue was written with; it may only grow.
MIN_ROWS = 199
AREAS = {"LN", "KP", "TR", "PR", "PL", "CM", "WG", "FR", "ST", "EC", "EP", "PS", "RB", "CD"}


@dataclass(frozen=True)
class NodeRef:
    path: Path
    cls: str | None
    func: str


def parse_test(node_id: str) -> NodeRef:
    parts = node_id.split("::")
    assert len(parts) in (2, 3), f"not a pytest node id: {node_id!r}"
    assert "[" not in node_id, f"parametrization brackets in {node_id!r}"
    return NodeRef(ROOT / parts[0], parts[1] if len(parts) == 3 else None, parts[-1])


@cache
def _module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def find_test(ref: NodeRef) -> ast.FunctionDef | None:
    """The ``def`` a node id names: inside its class if it names one, else at module level."""
    body: list[ast.stmt] = _module(ref.path).body
    if ref.cls is not None:
        cls = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == ref.cls), None)
        if cls is None:
            return None
        body = cls.body
    return next((n for n in body if isinstance(n, ast.FunctionDef) and n.name == ref.func), None)


def is_strict_xfail(func: ast.FunctionDef) -> bool:
    for deco in func.decorator_list:
        if (
            isinstance(deco, ast.Call)
            and ast.unparse(deco.func) == "pytest.mark.xfail"
            and any(
                k.arg == "strict" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in deco.keywords
            )
        ):
            return True
    return False


def test_catalogue_has_rows_in_every_area() -> None:
    found = {r.id.split("-")[0] for r in rows()}
    assert found == AREAS


def test_row_count_does_not_shrink_and_matches_the_stated_count() -> None:
    assert len(rows()) >= MIN_ROWS
    stated = re.search(r"Rules checked: \*\*(\d+)\*\*", catalogue_text())
    assert stated is not None, "the catalogue states no count"
    assert int(stated.group(1)) == len(rows())


def test_ids_are_well_formed_and_unique() -> None:
    ids = [r.id for r in rows()]
    bad = [i for i in ids if not re.fullmatch(r"[A-Z]{2}-\d{2}", i)]
    assert not bad, bad
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    assert not repeated, f"repeated ids: {repeated}"


def test_sections_cite_the_rfc() -> None:
    bad = [r.id for r in rows() if not re.fullmatch(r"§\d+(\.\d+)*(, §\d+(\.\d+)*)*", r.section)]
    assert not bad, bad


@pytest.mark.parametrize("row", rows(), ids=lambda r: r.id)
def test_error_class_exists(row: Row) -> None:
    error = getattr(mlspy.errors, row.error, None) or getattr(mlspy.credentials, row.error, None)
    assert isinstance(error, type) and issubclass(error, MLSError), (
        f"{row.id}: {row.error!r} is not an error class of mlspy.errors or mlspy.credentials"
    )


@pytest.mark.parametrize("row", rows(), ids=lambda r: r.id)
def test_named_test_exists(row: Row) -> None:
    ref = parse_test(row.test)
    assert ref.path.is_file(), f"{row.id}: no file {ref.path.relative_to(ROOT)}"
    assert ref.func.startswith("test_"), f"{row.id}: {ref.func} is not a test"
    assert find_test(ref) is not None, f"{row.id}: {row.test} does not exist"


@pytest.mark.parametrize("row", rows(), ids=lambda r: r.id)
def test_not_enforced_exactly_when_the_test_is_a_strict_xfail(row: Row) -> None:
    func = find_test(parse_test(row.test))
    assert func is not None
    marked = NOT_ENFORCED in row.rule
    assert marked == is_strict_xfail(func), (
        f"{row.id}: rule {'is' if marked else 'is not'} marked {NOT_ENFORCED!r} but "
        f"{row.test} {'is not' if marked else 'is'} a strict xfail"
    )


def test_not_enforced_section_lists_every_unenforced_row() -> None:
    text = catalogue_text()
    assert "\n## Not enforced\n" in text
    section = text.split("\n## Not enforced\n", 1)[1]
    listed = set(re.findall(r"^\| ([A-Z]{2}-\d{2}) \|", section, re.MULTILINE))
    unenforced = {r.id for r in rows() if NOT_ENFORCED in r.rule}
    assert listed == unenforced


def test_the_parser_sees_a_missing_test() -> None:
    """The checks are not vacuous: a made-up node id is reported missing."""
    ref = parse_test("tests/group/test_receiver_rules.py::TestWelcome::test_no_such_rule")
    assert find_test(ref) is None
    ref = parse_test("tests/group/test_receiver_rules.py::NoSuchClass::test_trailing_bytes")
    assert find_test(ref) is None
