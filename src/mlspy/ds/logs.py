"""The Delivery Service's logs: JSON lines or text on stderr, at the operator's level, with
tracebacks kept and secrets kept out.

Secrets never belong in a log line; the code does not log tokens, challenges, signatures or
codes. :class:`RedactSecrets` is defence in depth for what we do not write ourselves:
uvicorn's access log prints each request's path *with its query string*, so a secret sent as
``?token=…`` (as WebSocket clients used to) would be copied into every log line and any log
collector, and at DEBUG its WebSocket protocol prints every frame (the first carries the
token). The filter rewrites such values to ``[redacted]`` before any handler sees them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

# Query parameters whose values are credentials or key material.
SENSITIVE = (
    "token",
    "access_token",
    "bearer",
    "auth",
    "authorization",
    "challenge",
    "signature",
    "sig",
    "key",
    "secret",
    "password",
    "code",
    "invite",
    "invite_code",
    "pairing",
    "pairing_code",
    "recovery",
    "recovery_secret",
)
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:" + "|".join(map(re.escape, SENSITIVE)) + r")=)[^&;\s\"']*",
    re.IGNORECASE,
)
# The same names as JSON fields: at DEBUG, uvicorn's WebSocket protocol prints every frame,
# the authentication frame ``{"token": …}`` included.
_JSON_SECRET = re.compile(
    r'(?P<name>"(?:' + "|".join(map(re.escape, SENSITIVE)) + r')"\s*:\s*")[^"]*',
    re.IGNORECASE,
)
# An Authorization header's credentials.
_BEARER = re.compile(r"(?P<name>\bbearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
REDACTED = "[redacted]"
# Loggers of the server that print request lines (uvicorn: HTTP access; WebSocket lines and
# frames go to uvicorn.error), and our own.
REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn", "mlspy", "mlspy.ds")


def redact(text: str) -> str:
    """``text`` with the values of sensitive query parameters and JSON fields, and bearer
    credentials, replaced."""
    for pattern in (_QUERY_SECRET, _JSON_SECRET, _BEARER):
        text = pattern.sub(lambda m: m.group("name") + REDACTED, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with :func:`redact` (the record is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed %-format: leave it to the formatter
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactSecrets()


def install_redaction() -> None:
    """Put the filter on uvicorn's request loggers (idempotent). Logger filters run before
    every handler, including ones added later (a test's, a collector's)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the traceback of an
    exception (``exception``) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def make_handler(fmt: str, stream: Any = None) -> logging.Handler:
    """A stream handler (stderr by default) in format ``fmt`` ("json" or "text"), redacting."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_FILTER)
    return handler


def configure_logging(level: str, fmt: str, stream: Any = None) -> logging.Handler:
    """The root logger writes ``fmt`` lines at ``level`` (and above) to ``stream``."""
    handler = make_handler(fmt, stream)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    install_redaction()
    return handler


__all__ = [
    "REDACTED",
    "SENSITIVE",
    "JsonFormatter",
    "RedactSecrets",
    "configure_logging",
    "install_redaction",
    "make_handler",
    "redact",
]
