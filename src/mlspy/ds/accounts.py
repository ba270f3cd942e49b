"""The Authentication Service (RFC 9750 §4): names bound to signature keys, and tokens.

Clients register a credential and signature key, proving possession of the key by signing a
fresh challenge (``SignWithLabel(., "DS Challenge", nonce)``); later challenges buy short-lived
bearer tokens. The registry is also the credential validator the DS judges handshakes with.
"""

from __future__ import annotations

import os
import secrets as _secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mlspy.credentials import CredentialError, X509Validator
from mlspy.crypto import suite
from mlspy.ds.db import Database, Tx
from mlspy.ds.errors import BadRequest, Conflict, RateLimited, Unauthorized
from mlspy.errors import DecodeError, MLSError
from mlspy.messages import Credential, CredentialType

CHALLENGE_LABEL = "DS Challenge"
CHALLENGE_TTL = 300.0
TOKEN_TTL = 3600.0


@dataclass(frozen=True)
class ClientInfo:
    id: str
    identity: bytes
    signature_key: bytes
    cipher_suite: int


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RegistryValidator:
    """The AS's answer, from inside a DS transaction: a credential is valid when this
    service binds its identity to that very signature key (what members ask the AS with
    ``ASCredentialValidator``)."""

    def __init__(self, service: AuthenticationService, tx: Tx) -> None:
        self.service = service
        self.tx = tx

    def validate(self, credential: Credential, signature_key: bytes) -> None:
        try:
            identity = self.service._identity_of(credential, signature_key)
        except BadRequest as exc:
            raise CredentialError(str(exc)) from exc
        rows = self.tx.execute("SELECT signature_key FROM clients WHERE identity = ?", (identity,))
        if not rows:
            raise CredentialError(f"identity {identity!r} is not registered with the AS")
        if bytes(rows[0][0]) != signature_key:
            raise CredentialError(f"the AS binds identity {identity!r} to another signature key")


@dataclass
class AuthenticationService:
    """The AS (RFC 9750 §4): binds names to signature keys, issues bearer tokens, and limits
    the rate of requests. The Delivery Service extends it and shares its database."""

    db: Database
    clock: Callable[[], float] = time.time
    rate_per_second: float = 200.0
    rate_burst: float = 400.0
    # X.509 credentials are accepted when trust anchors are configured.
    x509: X509Validator | None = None
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    # --- Authentication Service (RFC 9750 §4) -----------------------------------------

    def challenge(self) -> bytes:
        nonce = os.urandom(32)
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM challenges WHERE expires < ?", (self.clock(),))
            tx.execute(
                "INSERT INTO challenges (nonce, expires) VALUES (?, ?)",
                (nonce, self.clock() + CHALLENGE_TTL),
            )
        return nonce

    def _consume_challenge(self, tx: Tx, nonce: bytes) -> None:
        rows = tx.execute("SELECT expires FROM challenges WHERE nonce = ?", (nonce,))
        if not rows or float(rows[0][0]) < self.clock():
            raise Unauthorized("unknown or expired challenge: ask for a new one")
        tx.execute("DELETE FROM challenges WHERE nonce = ?", (nonce,))

    @staticmethod
    def _check_possession(
        cipher_suite: int, signature_key: bytes, challenge: bytes, signature: bytes
    ) -> None:
        try:
            cs = suite(cipher_suite)
        except MLSError as exc:
            raise BadRequest(str(exc)) from None
        if not cs.verify_with_label(signature_key, CHALLENGE_LABEL, challenge, signature):
            raise Unauthorized("the challenge signature does not verify with this key")

    def register(
        self,
        credential: bytes,
        signature_key: bytes,
        cipher_suite: int,
        challenge: bytes,
        signature: bytes,
    ) -> ClientInfo:
        """Bind an identity to a signature key (Basic credentials: first come, first bound)."""
        try:
            cred = Credential.decode(credential)
        except DecodeError as exc:
            raise BadRequest(f"malformed credential: {exc}") from None
        identity = self._identity_of(cred, signature_key)
        self._check_possession(cipher_suite, signature_key, challenge, signature)
        client_id = client_id_of(signature_key)
        with self.db.transaction() as tx:
            self._consume_challenge(tx, challenge)
            taken = tx.execute(
                "SELECT id, signature_key FROM clients WHERE identity = ?", (identity,)
            )
            if taken:
                if bytes(taken[0][1]) == signature_key:
                    return ClientInfo(client_id, identity, signature_key, cipher_suite)
                raise Conflict("this identity is already bound to another signature key")
            if tx.execute("SELECT 1 FROM clients WHERE signature_key = ?", (signature_key,)):
                raise Conflict("this signature key is already registered")
            tx.execute(
                "INSERT INTO clients (id, identity, signature_key, credential, cipher_suite, "
                "created) VALUES (?, ?, ?, ?, ?, ?)",
                (client_id, identity, signature_key, credential, cipher_suite, self.clock()),
            )
        return ClientInfo(client_id, identity, signature_key, cipher_suite)

    def _identity_of(self, cred: Credential, signature_key: bytes) -> bytes:
        """Basic: the identity as claimed (first come, first bound). X.509: validated
        against the configured trust anchors (expiry, key usage, the key itself)."""
        if cred.credential_type == CredentialType.basic and cred.identity is not None:
            return cred.identity
        if cred.credential_type == CredentialType.x509 and self.x509 is not None:
            try:
                return self.x509.identity(cred, signature_key)
            except CredentialError as exc:
                raise BadRequest(f"X.509 credential rejected: {exc}") from None
        raise BadRequest("unsupported credential (X.509 needs trust anchors on this DS)")

    def issue_token(self, signature_key: bytes, challenge: bytes, signature: bytes) -> str:
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT id, cipher_suite FROM clients WHERE signature_key = ?", (signature_key,)
            )
            if not rows:
                raise Unauthorized("unknown signature key: register first")
            self._check_possession(int(rows[0][1]), signature_key, challenge, signature)
            self._consume_challenge(tx, challenge)
            token = _secrets.token_urlsafe(32)
            tx.execute("DELETE FROM tokens WHERE expires < ?", (self.clock(),))
            tx.execute(
                "INSERT INTO tokens (token, client_id, expires) VALUES (?, ?, ?)",
                (token, str(rows[0][0]), self.clock() + TOKEN_TTL),
            )
        return token

    def authenticate(self, token: str | None) -> ClientInfo:
        if not token:
            raise Unauthorized("missing bearer token")
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT c.id, c.identity, c.signature_key, c.cipher_suite, t.expires "
                "FROM tokens t JOIN clients c ON c.id = t.client_id WHERE t.token = ?",
                (token,),
            )
        if not rows or float(rows[0][4]) < self.clock():
            raise Unauthorized("invalid or expired token: authenticate again")
        r = rows[0]
        client = ClientInfo(str(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]))
        self._rate_limit(client.id)
        return client

    def rate_limit_anonymous(self, peer: str) -> None:
        """Unauthenticated endpoints (challenge, register, token) are limited per address."""
        self._rate_limit(f"peer:{peer}")

    def _rate_limit(self, client_id: str) -> None:
        now = self.clock()
        bucket = self._buckets.setdefault(client_id, _Bucket(self.rate_burst, now))
        bucket.tokens = min(
            self.rate_burst, bucket.tokens + (now - bucket.updated) * self.rate_per_second
        )
        bucket.updated = now
        if bucket.tokens < 1:
            raise RateLimited("too many requests: slow down")
        bucket.tokens -= 1

    def lookup_identity(self, identity: bytes) -> tuple[bytes, bytes] | None:
        """(credential, signature key) bound to ``identity``, for CredentialValidators."""
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT credential, signature_key FROM clients WHERE identity = ?", (identity,)
            )
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None


def client_id_of(signature_key: bytes) -> str:
    return suite(1).hash(signature_key).hex()[:32]


__all__ = [
    "CHALLENGE_LABEL",
    "CHALLENGE_TTL",
    "TOKEN_TTL",
    "AuthenticationService",
    "ClientInfo",
    "RegistryValidator",
    "client_id_of",
]
