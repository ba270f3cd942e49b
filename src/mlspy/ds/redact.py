"""Secrets never reach a log line: a filter on the DS's loggers that masks bearer tokens,
challenges, signatures, codes and secrets wherever a log message carries them.

The DS itself never logs them, and WebSocket authentication keeps tokens out of URLs; this
is the defence in depth for what other libraries log — uvicorn's access log prints request
URLs, and at DEBUG its WebSocket protocol prints every frame, the authentication frame
``{"token": …}`` included.
"""

from __future__ import annotations

import logging
import re

MASK = "[redacted]"

_FIELDS = (
    "token",
    "challenge",
    "signature",
    "invite_code",
    "pairing_code",
    "code",
    "recovery_secret",
    "recovery_hash",
    "signature_private_key",
    "private_key",
    "secret",
)
_names = "|".join(_FIELDS)
_PATTERNS = [
    # JSON fields: "token": "…"
    (re.compile(rf'("(?:{_names})"\s*:\s*")[^"]*(")', re.IGNORECASE), rf"\g<1>{MASK}\g<2>"),
    # query parameters: ?token=… / &code=…
    (re.compile(rf"([?&](?:{_names})=)[^&\s\"']*", re.IGNORECASE), rf"\g<1>{MASK}"),
    # Authorization headers: Bearer …
    (re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\g<1>{MASK}"),
]

# The loggers of the DS process that may carry request data.
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "mlspy", "mlspy.ds")


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


_FILTER = RedactSecrets()


def install() -> None:
    """Put the filter on the DS's loggers (idempotent). Filters on a logger apply to the
    records logged through it, so each logger that logs request data gets it."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
