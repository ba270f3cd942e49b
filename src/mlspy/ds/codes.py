"""Codes people copy: invite codes, recovery secrets, pairing codes."""

from __future__ import annotations

import base64
import os


def new_code(nbytes: int = 10) -> str:
    """A random code for people to copy: base32 in groups of four (80 bits by default)."""
    raw = base64.b32encode(os.urandom(nbytes)).decode().rstrip("=")
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def normalized(code: str) -> bytes:
    """Codes are compared without case, spaces or dashes (people retype them)."""
    return "".join(code.split()).replace("-", "").upper().encode()


__all__ = ["new_code", "normalized"]
