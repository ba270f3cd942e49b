"""Errors the Delivery Service and Authentication Service answer with (an HTTP status each)."""

from __future__ import annotations


class DSError(Exception):
    """An error answered to the client; ``status`` is the HTTP status."""

    status = 400

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(DSError):
    status = 400


class Unauthorized(DSError):
    status = 401


class Forbidden(DSError):
    status = 403


class NotFound(DSError):
    status = 404


class Conflict(DSError):
    status = 409


class TooLarge(DSError):
    status = 413


class RateLimited(DSError):
    """429; ``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    status = 429


class Unavailable(DSError):
    """503: the server cannot answer now (e.g. its database is away); ``retry_after``
    (seconds) becomes the ``Retry-After`` header. Nothing was done."""

    status = 503


__all__ = [
    "BadRequest",
    "Conflict",
    "DSError",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]
