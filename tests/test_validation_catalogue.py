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

import mlspy.credentials
import mlspy.errors
from catalogue import HEADER, ROOT, SCOPES, Row, catalogue_text, rows
from mlspy.errors import MLSError
from parity import (
    RULE_ID_EXEMPT,
    evidence_problems,
    needs_rule_id,
    node_id,
)

NOT_ENFORCED = "(not enforced)"
# The count this catalogue was written with; it may only grow.
MIN_ROWS = 199
AREAS = {"LN", "KP", "TR", "PR", "PL", "CM", "WG", "FR", "ST", "EC", "EP", "PS", "RB", "CD", "MP"}


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


# --- Scope: who can check a rule -------------------------------------------------------------

# Error classes only a member (or a joiner) can raise: they need epoch secrets, a decrypted
# PrivateMessage or a Welcome. A row raising one cannot be public.
MEMBER_ONLY_ERRORS = {
    "MembershipTagError",
    "ConfirmationTagError",
    "WelcomeError",
    "GroupInfoError",
    "PaddingError",
    "SecretTreeError",
    "CryptoError",
}


def test_the_header_has_a_scope_column() -> None:
    assert HEADER in catalogue_text()
    assert all(r.scope for r in rows())


@pytest.mark.parametrize("row", rows(), ids=lambda r: r.id)
def test_scope_is_public_or_member(row: Row) -> None:
    assert row.scope in SCOPES, f"{row.id}: scope {row.scope!r} is not one of {SCOPES}"


def test_rules_that_need_secrets_are_member_scope() -> None:
    wrong = [r.id for r in rows() if r.error in MEMBER_ONLY_ERRORS and r.scope != "member"]
    assert not wrong, f"rows raising a member-only error marked public: {wrong}"


def test_how_to_read_a_row_explains_the_scope() -> None:
    intro = catalogue_text().split("\n## ", 1)[0]
    assert "* **scope**" in intro


# --- Evidence: parity with the public view, rule ids (tests/parity.py) ---------------------


def _row(id: str, scope: str, test: str, error: str = "ProposalError") -> Row:
    return Row(0, id, "§12.1", scope, "a rule", error, test)


def test_node_ids_lose_phase_and_parametrization() -> None:
    assert node_id("tests/a.py::T::test_x[by_ref-1] (call)") == "tests/a.py::T::test_x"
    assert node_id("tests/a.py::test_x (setup)") == "tests/a.py::test_x"
    assert node_id("tests/a.py::test_x") == "tests/a.py::test_x"


def test_evidence_check_reports_a_public_row_without_parity() -> None:
    """The end-of-run check is not vacuous: a public row whose test ran but compared nothing
    with the public view is reported; with a parity check it is not; a member row needs none;
    a row whose test did not run is not judged."""
    rows_ = [
        _row("XX-01", "public", "t.py::test_a"),
        _row("XX-02", "member", "t.py::test_b"),
        _row("XX-03", "public", "t.py::test_not_run"),
    ]
    rejections = {
        "t.py::test_a": {("ProposalError", "XX-01")},
        "t.py::test_b": {("ProposalError", "XX-02")},
    }
    ran = {"t.py::test_a", "t.py::test_b"}
    problems = evidence_problems(rows_, ran, {}, rejections)
    assert len(problems) == 1 and problems[0].startswith("XX-01 (public)")
    assert evidence_problems(rows_, ran, {"t.py::test_a": ["ProposalError"]}, rejections) == []


def test_evidence_check_reports_a_missing_or_wrong_rule_id() -> None:
    rows_ = [
        _row("XX-01", "member", "t.py::test_a"),
        _row("XX-02", "member", "t.py::test_b", error="CommitError"),
        _row("CD-99", "member", "t.py::test_c", error="DecodeError"),
    ]
    rejections = {
        "t.py::test_a": {("ProposalError", None)},
        "t.py::test_b": {("ProposalError", "XX-02")},  # the right id on the wrong class
        "t.py::test_c": {("DecodeError", None)},  # a DecodeError carries no rule id
    }
    problems = evidence_problems(
        rows_, {"t.py::test_a", "t.py::test_b", "t.py::test_c"}, {}, rejections
    )
    assert [p.split(":")[0] for p in problems] == ["XX-01", "XX-02"]


def test_rule_id_exemptions_name_rows_that_would_need_one() -> None:
    by_id = {r.id: r for r in rows()}
    for rid in RULE_ID_EXEMPT:
        assert rid in by_id, rid
        assert not needs_rule_id(by_id[rid])


INNER_CATALOGUE = """
| id | section | scope | rule | error | test |
|----|---------|-------|------|-------|------|
| XX-01 | §1 | public | compared | `ProposalError` | `test_rules.py::test_checked` |
| XX-02 | §1 | public | not compared | `ProposalError` | `test_rules.py::test_unchecked` |
| XX-03 | §1 | member | no id | `ProposalError` | `test_rules.py::test_unchecked` |
| XX-04 | §1 | public | its test does not run | `ProposalError` | `test_rules.py::test_absent` |
"""

INNER_CONFTEST = """
from pathlib import Path

from catalogue import parse
from parity import CatalogueEvidence


def pytest_configure(config):
    text = (Path(__file__).parent / "catalogue.md").read_text()
    config.pluginmanager.register(CatalogueEvidence(lambda: parse(text)), "evidence")
"""

INNER_TESTS = """
from parity import record_parity, record_rejection

from mlspy.errors import ProposalError


def test_checked():
    record_parity(ProposalError)
    record_rejection(ProposalError("broken", rule="XX-01"))


def test_unchecked():
    record_rejection(ProposalError("broken", rule="XX-02"))
"""


def test_a_run_lacking_evidence_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real pytest session with the plugin and a three-row catalogue: the run fails (though
    every test passes) naming the public row without parity and the row without its rule id,
    and passes when only the test with full evidence runs."""
    pytester.makefile(".md", catalogue=INNER_CATALOGUE)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_rules=INNER_TESTS)
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "validation catalogue evidence" in out
    assert "XX-02 (public): test_rules.py::test_unchecked ran but compared no rejection" in out
    assert "XX-03: test_rules.py::test_unchecked ran but saw no ProposalError" in out
    assert "XX-01" not in out and "XX-04" not in out
    alone = pytester.runpytest_subprocess("-p", "no:randomly", "-k", "test_checked")
    alone.assert_outcomes(passed=1, deselected=1)
    assert alone.ret == pytest.ExitCode.OK
