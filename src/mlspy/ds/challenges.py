"""Stateless login challenges: issuing one costs no database write.

A challenge is ``nonce (16) || expires (u64, milliseconds) || tag (16)``, the tag a truncated
HMAC-SHA256 of the rest under a secret every DS node shares (the operator's, or one made once
and kept in the database). Any node can check a challenge it did not issue, and an anonymous
flood of ``POST /v1/auth/challenge`` touches neither the disk nor the writer lock.

Single use is enforced only when a challenge is *consumed* — by a request that also proves
possession of a key (register, token, recover, rotate): the consuming transaction records the
nonce in ``challenges`` until it expires (``consume``), so a replay finds it there. The sweep
(``DeliveryService.sweep``) deletes the expired records.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from mlspy.ds.db import Database, Tx
from mlspy.ds.errors import Unauthorized

_NONCE = 16
_TAG = 16
SIZE = _NONCE + 8 + _TAG
_LABEL = b"mlspy DS challenge\x00"
_SECRET_NAME = "challenge_mac"
UNKNOWN = "unknown or expired challenge: ask for a new one"


def shared_secret(db: Database) -> bytes:
    """The MAC key of this deployment, made by whichever node first needs it and kept in the
    database, so every node sharing the database checks every other node's challenges."""
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO ds_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (_SECRET_NAME, os.urandom(32)),
        )
        rows = tx.execute("SELECT value FROM ds_secrets WHERE name = ?", (_SECRET_NAME,))
    return bytes(rows[0][0])


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _LABEL + body, hashlib.sha256).digest()[:_TAG]


def issue(key: bytes, now: float, ttl: float) -> bytes:
    """A fresh challenge valid for ``ttl`` seconds from ``now``."""
    body = os.urandom(_NONCE) + int((now + ttl) * 1000).to_bytes(8, "big")
    return body + _tag(key, body)


def verify(key: bytes, challenge: bytes, now: float) -> float:
    """Check a challenge's tag (in constant time) and expiry; returns when it expires.
    No database is read: forged and expired challenges cost nothing."""
    if len(challenge) != SIZE:
        raise Unauthorized(UNKNOWN)
    body, tag = challenge[:-_TAG], challenge[-_TAG:]
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise Unauthorized(UNKNOWN)
    expires = int.from_bytes(body[_NONCE:], "big") / 1000
    if expires < now:
        raise Unauthorized(UNKNOWN)
    return expires


def consume(tx: Tx, key: bytes, challenge: bytes, now: float) -> None:
    """Use a challenge once, inside the transaction of the request it authenticates (a
    rolled-back request does not use it up)."""
    expires = verify(key, challenge, now)
    fresh = tx.execute(
        "INSERT INTO challenges (nonce, expires) VALUES (?, ?) "
        "ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
        (challenge[:_NONCE], expires),
    )
    if not fresh:
        raise Unauthorized(UNKNOWN)
