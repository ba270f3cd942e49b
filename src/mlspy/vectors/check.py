"""Small helpers shared by the vector checkers."""

from __future__ import annotations

from typing import Any

Entry = dict[str, Any]


class CheckFailed(Exception):
    """A vector entry failed the named check."""

    def __init__(self, check: str, detail: str = "") -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"{check}: {detail}" if detail else check)


def h(value: str | None) -> bytes:
    """Hex field of a vector (``null`` reads as empty)."""
    return bytes.fromhex(value) if value else b""


def expect(check: str, ok: bool, detail: str = "") -> None:
    if not ok:
        raise CheckFailed(check, detail)


def expect_eq(check: str, got: object, want: object) -> None:
    if got != want:
        g = got.hex() if isinstance(got, bytes) else repr(got)
        w = want.hex() if isinstance(want, bytes) else repr(want)
        raise CheckFailed(check, f"got {g[:80]}, want {w[:80]}")
