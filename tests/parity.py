"""Evidence for the validation catalogue (``docs/validation.md``): parity between a member and
the public view of its group, and the catalogue rule id every rejection carries.

DESIGN.md, "One home per rule": the public view of a group (:class:`mlspy.group.PublicGroup`,
what the Delivery Service runs on PublicMessage handshakes) is the only implementation of every
publicly checkable rule, so it must reject a handshake exactly as a member does. The rejection
helpers of the tests (``group_helpers.reject``, ``reject_any`` and ``reject_join`` of
``test_receiver_rules``, :func:`raises_exactly`) therefore

* take the receiver's public view *before* the member processes a message and, unless the
  caller says the rule is member-only, run the message through the view as well: it must
  raise exactly the member's error class and leave the view unchanged
  (:func:`assert_public_parity`);
* record every such parity check, and every rejection's class and catalogue rule id
  (``ValidationError.rule``), under the running test's node id (parametrization stripped).

The :class:`CatalogueEvidence` plugin (registered by ``tests/conftest.py``) fails the run when
a catalogue row whose named test ran in this session lacks its evidence: a *public* row whose
test performed no parity check, or a row whose error is a ``ValidationError`` and whose test
saw no rejection of that class carrying the row's id. Rows whose test did not run are not
judged, so any subset of the tests can be run.

Which messages are compared: every message but a PrivateMessage (the view cannot read one).
That includes PublicMessages of another group or epoch and bytes that do not decode: the view
checks group, epoch and encoding with the very code a member runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import pytest

import mlspy.credentials
import mlspy.errors
from catalogue import Row
from mlspy.errors import DecodeError, MLSError, ValidationError
from mlspy.group import Group, PublicGroup, serialize_public_group
from mlspy.messages import MLSMessage, WireFormat

# node id (no parametrization) -> the error classes of the parity checks it performed
PARITY: dict[str, list[str]] = {}
# node id (no parametrization) -> (error class, rule id) of every rejection it checked
REJECTIONS: dict[str, set[tuple[str, str | None]]] = {}

# Rows whose error is a ValidationError but which no single raise site can name: the error
# carries the more specific rule that was broken. Each is listed with why.
RULE_ID_EXEMPT: dict[str, str] = {
    "PL-01": "composite: an invalid proposal in a commit carries the id of the rule it breaks",
    "CM-06": "content edited after signing is a signature that does not verify: CM-05",
    "CM-12": "a receiver cannot tell who else saw a proposal it lacks: CM-11",
    "CM-23": "an empty, zero or over-long tag is a tag that does not verify: CM-22",
    "PS-03": "the same check as PS-01, in a multi-party join",
    "PS-04": "PSKs in another order give another welcome secret, so the GroupInfo does not "
    "decrypt: WG-05",
    "ST-02": "a retained key once used is gone like any used key: ST-01",
    "ST-04": "a consumed key still gone after a reload is a used key: ST-01",
    "ST-06": "a key older than the retained window is as gone as a used one: ST-01",
}


def node_id(raw: str) -> str:
    """A pytest node id without its phase suffix (`` (call)``) and parametrization."""
    node = raw.rsplit(" (", 1)[0] if raw.endswith(")") else raw
    head, sep, last = node.rpartition("::")
    return f"{head}{sep}{last.split('[', 1)[0]}"


def current_test() -> str:
    raw = os.environ.get("PYTEST_CURRENT_TEST")
    assert raw is not None, "not running inside a pytest test"
    return node_id(raw)


def record_parity(error: type[BaseException]) -> None:
    PARITY.setdefault(current_test(), []).append(error.__name__)


def record_rejection(exc: BaseException) -> None:
    rule = getattr(exc, "rule", None)
    REJECTIONS.setdefault(current_test(), set()).add((type(exc).__name__, rule))


# --- Member / public view parity ------------------------------------------------------------


def is_private_message(message: bytes | MLSMessage) -> bool:
    """Whether ``message`` is (or, if it does not decode, announces itself as) a
    PrivateMessage: the one kind of message the public view cannot judge."""
    if isinstance(message, MLSMessage):
        return message.wire_format == WireFormat.mls_private_message
    try:
        return MLSMessage.decode(message).wire_format == WireFormat.mls_private_message
    except DecodeError:
        # The wire_format field follows the 2-byte version (§6).
        return message[2:4] == int(WireFormat.mls_private_message).to_bytes(2, "big")


def public_view_for(
    receiver: Group, message: bytes | MLSMessage, *, member_only: bool = False
) -> PublicGroup | None:
    """The receiver's public view to compare with, or None when there is nothing to compare:
    the caller declared the rule member-only, or the message is a PrivateMessage."""
    if member_only or is_private_message(message):
        return None
    return receiver.public_view()


def assert_public_parity(
    view: PublicGroup, message: bytes | MLSMessage, member_error: BaseException
) -> MLSError:
    """``view.process(message)`` raises exactly the class the member raised and leaves the
    view unchanged; the check is recorded for the running test."""
    before = serialize_public_group(view)
    try:
        view.process(message)
    except MLSError as exc:
        got = exc
    else:
        raise AssertionError(
            f"parity: the public view accepted a message the member rejects with "
            f"{type(member_error).__name__}: {member_error} (a rule that needs secrets is "
            "member_only=True; a public one is a library bug)"
        )
    assert type(got) is type(member_error), (
        f"parity: the member raised {type(member_error).__name__} ({member_error}) but the "
        f"public view {type(got).__name__} ({got})"
    )
    assert serialize_public_group(view) == before, "parity: a rejection changed the public view"
    record_parity(type(member_error))
    return got


@contextmanager
def raises_exactly(
    error: type[MLSError], match: str | None = None
) -> Iterator[pytest.ExceptionInfo[MLSError]]:
    """Like ``pytest.raises(error)`` but exactly ``error`` (not a subclass); the rejection is
    recorded for the catalogue's rule-id check."""
    with pytest.raises(MLSError) as info:
        yield info
    exc = info.value
    assert type(exc) is error, f"expected {error.__name__}, got {type(exc).__name__}: {exc}"
    if match is not None:
        assert re.search(match, str(exc), re.IGNORECASE), f"{exc} does not match {match!r}"
    record_rejection(exc)


# --- The end-of-run check -------------------------------------------------------------------


def error_class(name: str) -> type | None:
    found = getattr(mlspy.errors, name, None) or getattr(mlspy.credentials, name, None)
    return found if isinstance(found, type) else None


def needs_rule_id(row: Row) -> bool:
    error = error_class(row.error)
    return error is not None and issubclass(error, ValidationError) and row.id not in RULE_ID_EXEMPT


def evidence_problems(
    rows: Sequence[Row],
    ran: Iterable[str],
    parity: Mapping[str, Sequence[str]],
    rejections: Mapping[str, Iterable[tuple[str, str | None]]],
) -> list[str]:
    """What is missing, one line per row: for each row whose test ran, a public row needs a
    parity check by its test, and a row whose error is a ValidationError needs a rejection of
    that class carrying its id."""
    ran = set(ran)
    problems = []
    for row in rows:
        if row.test not in ran:
            continue
        if row.scope == "public" and not parity.get(row.test):
            problems.append(
                f"{row.id} (public): {row.test} ran but compared no rejection with the public view"
            )
        if needs_rule_id(row) and (row.error, row.id) not in set(rejections.get(row.test, ())):
            seen = sorted(f"{e}:{r}" for e, r in rejections.get(row.test, ()))
            problems.append(
                f"{row.id}: {row.test} ran but saw no {row.error} with rule={row.id!r} "
                f"(saw {', '.join(seen) or 'no recorded rejection'})"
            )
    return problems


class CatalogueEvidence:
    """A pytest plugin: after the run, :func:`evidence_problems` for the tests that ran."""

    def __init__(self, load_rows: Callable[[], Sequence[Row]]) -> None:
        self.load_rows = load_rows
        self.ran: set[str] = set()
        self.problems: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and not report.skipped:
            self.ran.add(node_id(report.nodeid))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.ran:
            return
        self.problems = evidence_problems(self.load_rows(), self.ran, PARITY, REJECTIONS)
        if self.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.problems:
            return
        terminalreporter.section("validation catalogue evidence", sep="=", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(self.problems)} catalogue row(s) of docs/validation.md lack the evidence "
            "their test should give (see tests/parity.py):"
        )
        for line in self.problems:
            terminalreporter.write_line(f"  {line}")
