"""The Authentication Service (RFC 9750 §4): names bound to signature keys, and tokens.

Clients register a credential and signature key, proving possession of the key by signing a
fresh challenge (``SignWithLabel(., "DS Challenge", nonce)``); later challenges buy short-lived
bearer tokens. The registry is also the credential validator the DS judges handshakes with.

Names are accounts. Who may bind a *new* name is the operator's policy (``registration``):
``open`` — anyone, first come first bound (tests, closed networks); ``invite`` — the
registration carries a single-use invite code, issued by the operator (``create_invite()``,
``mlspy invite``) or by an existing user (``POST /v1/invites``, a few a day), stored hashed,
expiring, consumed atomically by the registration it admits; ``x509`` — only X.509
credentials that chain to the configured CA (Basic refused). A registration may carry the hash
of a recovery secret the client made (the DS never sees the secret until it is used): with the
secret, a user who lost their key rebinds the name to a new key (``recover``): the old key's
tokens, KeyPackages and logins end, and the name's place on group delivery lists and its queue
move to the new key, so the new device can rejoin its groups. Wrong secrets are counted per
name in the database (so every DS node shares the count) and per address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mlspy.credentials import CredentialError, X509Validator
from mlspy.crypto import suite
from mlspy.ds import challenges
from mlspy.ds.client_info import ClientInfo
from mlspy.ds.codes import new_code
from mlspy.ds.codes import normalized as _normalized
from mlspy.ds.db import Database, Tx
from mlspy.ds.devices import Devices, account_of
from mlspy.ds.errors import BadRequest, Conflict, Forbidden, NotFound, RateLimited, Unauthorized
from mlspy.ds.token_cache import TokenCache
from mlspy.errors import DecodeError, MLSError
from mlspy.messages import Credential, CredentialType
from mlspy.users import same_user

CHALLENGE_LABEL = "DS Challenge"
CHALLENGE_TTL = 300.0
TOKEN_TTL = 3600.0
REGISTRATION_MODES = ("open", "invite", "x509")
INVITE_TTL = 7 * 86400.0
DAY = 86400.0
OPERATOR = "operator"  # the issuer of invite codes minted by the operator
_INVITE_LABEL = b"mlspy invite code\x00"
_RECOVERY_LABEL = b"mlspy recovery secret\x00"
NEEDS_INVITE = (
    "registration on this server needs an invite code: ask an existing user or the operator for one"
)
NO_BINDING = (
    "no name is bound to this signature key (it was never registered, or its name was "
    "recovered onto another key): register first, or recover your name with its recovery "
    "secret"
)


def new_recovery_secret() -> str:
    """A recovery secret (160 bits): made by the client, shown to its user once."""
    return new_code(20)


def invite_hash(code: str) -> bytes:
    """What the DS stores of an invite code."""
    return hashlib.sha256(_INVITE_LABEL + _normalized(code)).digest()


def recovery_hash(identity: bytes, secret: str) -> bytes:
    """What the client sends, and the DS stores, of a name's recovery secret."""
    return hashlib.sha256(
        _RECOVERY_LABEL + len(identity).to_bytes(4, "big") + identity + _normalized(secret)
    ).digest()


@dataclass(frozen=True)
class Registration:
    """The answer to a registration: the client, whether the name was bound just now, and
    whether this request set the name's recovery secret (show it to the user)."""

    client: ClientInfo
    created: bool
    recovery_set: bool


@dataclass(frozen=True)
class Recovery:
    """A name rebound to a new key: the new client, and the groups on whose delivery lists
    it now stands in place of the old key (rejoin them by external commit)."""

    client: ClientInfo
    old_client_id: str
    groups: list[bytes]


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

    @staticmethod
    def same_member(old: Credential, new: Credential) -> bool:
        """Devices of one user are one participant (``mlspy.users``): a new device of the
        user may replace a lost one's leaf by external commit (§12.4.3.2)."""
        return same_user(old, new)

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
class AuthenticationService(Devices):
    """The AS (RFC 9750 §4): binds names to signature keys, issues bearer tokens, and limits
    the rate of requests. A name is a user's device (``mlspy.users``); users have many
    (``devices.py``). The Delivery Service extends it and shares its database."""

    db: Database
    clock: Callable[[], float] = time.time
    rate_per_second: float = 200.0
    rate_burst: float = 400.0
    # X.509 credentials are accepted when trust anchors are configured.
    x509: X509Validator | None = None
    # Who may bind a new name (see the module's docstring): "open", "invite" or "x509".
    # "open" is the library's default (tests, embedded servers); `mlspy serve` defaults to
    # "invite".
    registration: str = "open"
    invite_ttl: float = INVITE_TTL
    invites_per_day: int = 5  # invite codes one user may create a day (0: users cannot)
    # Wrong recovery secrets: at most ``recovery_attempts`` per name within
    # ``recovery_window`` seconds (then 429, even for the right one, until the window ends),
    # and ``recovery_per_address`` recovery requests per address in that window.
    recovery_attempts: int = 5
    recovery_window: float = 3600.0
    recovery_per_address: int = 20
    # The key challenges are MAC'd with (``challenges.py``); every node of a deployment must
    # share it. None: one made once and kept in the database (shared through it).
    challenge_secret: bytes | None = field(default=None, repr=False)
    # The cipher suites devices, KeyPackages and groups may use here (``mlspy serve``'s
    # ``cipher_suites``: e.g. only post-quantum ones); None: every suite mlspy supports.
    cipher_suites: frozenset[int] | None = None
    # Tokens looked up recently (``token_cache.py``): most requests skip the database.
    token_cache: TokenCache[ClientInfo] = field(default_factory=TokenCache, repr=False)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _mac_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.registration not in REGISTRATION_MODES:
            raise ValueError(f"registration must be one of {', '.join(REGISTRATION_MODES)}")
        if self.registration == "x509" and self.x509 is None:
            raise ValueError("registration 'x509' needs trust anchors (x509=X509Validator(...))")

    # --- Authentication Service (RFC 9750 §4) -----------------------------------------

    def challenge(self) -> bytes:
        """A fresh challenge to sign: stateless (MAC'd, see ``challenges.py``), so an
        anonymous request for one writes nothing."""
        return challenges.issue(self._challenge_key(), self.clock(), CHALLENGE_TTL)

    def _challenge_key(self) -> bytes:
        if self._mac_key is None:
            self._mac_key = self.challenge_secret or challenges.shared_secret(self.db)
        return self._mac_key

    def _check_challenge(self, challenge: bytes) -> None:
        """Refuse a forged or expired challenge before any database work (and load the MAC
        key outside the request's transaction)."""
        challenges.verify(self._challenge_key(), challenge, self.clock())

    def _consume_challenge(self, tx: Tx, challenge: bytes) -> None:
        challenges.consume(tx, self._challenge_key(), challenge, self.clock())

    def check_suite(self, cipher_suite: int) -> None:
        """Forbidden unless the operator allows ``cipher_suite`` here."""
        allowed = self.cipher_suites
        if allowed is not None and cipher_suite not in allowed:
            names = ", ".join(f"0x{c:04x}" for c in sorted(allowed))
            raise Forbidden(
                f"cipher suite 0x{cipher_suite:04x} is not allowed on this server "
                f"(allowed: {names}): make your device, KeyPackages and groups in one of those"
            )

    def _check_possession(
        self, cipher_suite: int, signature_key: bytes, challenge: bytes, signature: bytes
    ) -> None:
        try:
            cs = suite(cipher_suite)
        except MLSError as exc:
            raise BadRequest(str(exc)) from None
        self.check_suite(cipher_suite)
        if not cs.verify_with_label(signature_key, CHALLENGE_LABEL, challenge, signature):
            raise Unauthorized("the challenge signature does not verify with this key")

    def register(
        self,
        credential: bytes,
        signature_key: bytes,
        cipher_suite: int,
        challenge: bytes,
        signature: bytes,
        *,
        invite_code: str | None = None,
        recovery: bytes | None = None,
        pairing_code: str | None = None,
    ) -> Registration:
        """Bind an identity (a device of a user) to a signature key: the first device of a
        new user as the registration policy allows, a further device with a pairing code of
        its user's. Registering again with the bound key changes nothing (but sets a recovery
        secret if the user has none yet: the signed challenge proves possession of the bound
        key)."""
        cred = _decode_credential(credential)
        self._check_kind(cred)
        identity = self._identity_of(cred, signature_key)
        self._check_challenge(challenge)
        self._check_possession(cipher_suite, signature_key, challenge, signature)
        _check_recovery_hash(recovery)
        info = ClientInfo(client_id_of(signature_key), identity, signature_key, cipher_suite)
        account = account_of(identity)
        with self.db.transaction() as tx:
            self._consume_challenge(tx, challenge)
            taken = tx.execute(
                "SELECT id, signature_key FROM clients WHERE identity = ?", (identity,)
            )
            if taken:
                if bytes(taken[0][1]) == signature_key:
                    return Registration(info, False, self._set_recovery(tx, account, recovery))
                raise Conflict(
                    f"the name {identity!r} is already bound to another signature key: if it "
                    "is yours and you lost that key, recover it with its recovery secret; "
                    "otherwise choose another name"
                )
            if tx.execute("SELECT 1 FROM clients WHERE signature_key = ?", (signature_key,)):
                raise Conflict("this signature key is already registered")
            enrolled = self._account_exists(tx, account)
            if enrolled:  # a further device of a user: its account (and secret) stay
                self._enrol(tx, identity, pairing_code)
            else:
                self._admit(tx, identity, invite_code)
                tx.execute("DELETE FROM accounts WHERE identity = ?", (account,))
                tx.execute(
                    "INSERT INTO accounts (identity, recovery_hash, created) VALUES (?, ?, ?)",
                    (account, recovery, self.clock()),
                )
            tx.execute(
                "INSERT INTO clients (id, identity, signature_key, credential, cipher_suite, "
                "created) VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, identity, signature_key, credential, cipher_suite, self.clock()),
            )
            others = {cid for cid, _ in self._device_ids(tx, account)}
            self._add_device(tx, info.id, identity)
            woken = self._announce(tx, "device_added", identity, others) if enrolled else set()
        self._wake(woken)
        return Registration(info, True, recovery is not None and not enrolled)

    def _check_kind(self, cred: Credential) -> None:
        """Registration "x509": a name comes from a certificate of the configured CA only."""
        if self.registration == "x509" and cred.credential_type != CredentialType.x509:
            raise Forbidden(
                "registration on this server needs an X.509 certificate from its CA: Basic "
                "credentials are refused"
            )

    def _admit(self, tx: Tx, identity: bytes, invite_code: str | None) -> None:
        """Registration "invite": consume a valid invite code, atomically (of two
        registrations racing with one code, one wins)."""
        if self.registration != "invite":
            return
        if not invite_code:
            raise Forbidden(NEEDS_INVITE)
        used = tx.execute(
            "UPDATE invites SET used_by = ? WHERE code_hash = ? AND used_by IS NULL AND "
            "expires >= ? RETURNING issuer",
            (identity, invite_hash(invite_code), self.clock()),
        )
        if not used:
            raise Forbidden("this invite code is unknown, used or expired: ask for a new one")

    def _set_recovery(self, tx: Tx, identity: bytes, recovery: bytes | None) -> bool:
        """Give a user (``identity``: the account) that has no recovery secret (registered
        before they existed) one."""
        if recovery is None:
            return False
        rows = tx.execute("SELECT recovery_hash FROM accounts WHERE identity = ?", (identity,))
        if rows and rows[0][0] is not None:
            return False
        if rows:
            tx.execute(
                "UPDATE accounts SET recovery_hash = ? WHERE identity = ?", (recovery, identity)
            )
        else:
            tx.execute(
                "INSERT INTO accounts (identity, recovery_hash, created) VALUES (?, ?, ?)",
                (identity, recovery, self.clock()),
            )
        return True

    # --- Invite codes -------------------------------------------------------------------

    def create_invite(self, issuer: ClientInfo | None = None) -> tuple[str, float]:
        """A single-use invite code and when it expires: the operator's (``issuer`` None:
        no limit) or a user's (``invites_per_day`` a day). Only its hash is stored."""
        if self.registration == "x509":
            raise Forbidden(
                "this server registers X.509 certificates only: invite codes admit nobody"
            )
        now = self.clock()
        code, expires = new_code(), now + self.invite_ttl
        who = OPERATOR if issuer is None else "user:" + issuer.identity.hex()
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM invites WHERE used_by IS NULL AND expires < ?", (now,))
            if issuer is not None:
                made = tx.execute(
                    "SELECT COUNT(*) FROM invites WHERE issuer = ? AND created > ?",
                    (who, now - DAY),
                )
                if int(made[0][0]) >= self.invites_per_day:
                    raise RateLimited(
                        f"you may create {self.invites_per_day} invite codes a day: try again "
                        "tomorrow"
                    )
            tx.execute(
                "INSERT INTO invites (code_hash, issuer, created, expires) VALUES (?, ?, ?, ?)",
                (invite_hash(code), who, now, expires),
            )
        return code, expires

    def has_accounts(self) -> bool:
        """Whether any name is bound (``mlspy serve`` prints a bootstrap code when none is)."""
        with self.db.transaction() as tx:
            return bool(tx.execute("SELECT 1 FROM clients LIMIT 1"))

    # --- Recovery -------------------------------------------------------------------------

    def recover(
        self,
        identity: bytes,
        secret: str,
        credential: bytes,
        signature_key: bytes,
        cipher_suite: int,
        challenge: bytes,
        signature: bytes,
        recovery: bytes,
    ) -> Recovery:
        """Every device lost: bind the user ``identity`` (an account) to a new device (the
        credential names a device of that user; its signature key is new), given the user's
        recovery secret and proof of possession of the new key. Every old device is revoked;
        the new one takes their places on delivery lists (to rejoin by external commit);
        ``recovery`` (the new secret's hash) replaces the old one. Wrong secrets are counted
        per user (then 429)."""
        cred = _decode_credential(credential)
        self._check_kind(cred)
        named = self._identity_of(cred, signature_key)
        if account_of(named) != identity:
            raise BadRequest("the new credential must name a device of the user being recovered")
        self._check_challenge(challenge)
        self._check_possession(cipher_suite, signature_key, challenge, signature)
        _check_recovery_hash(recovery)
        with self.db.transaction() as tx:
            self._consume_challenge(tx, challenge)
            if tx.execute("SELECT 1 FROM clients WHERE signature_key = ?", (signature_key,)):
                raise Conflict("this signature key is already registered: recover onto a new key")
            done: Recovery | None = None
            if self._check_recovery_secret(tx, identity, secret):
                new = ClientInfo(client_id_of(signature_key), named, signature_key, cipher_suite)
                old_id, groups = self._rebind(tx, new, credential, recovery)
                done = Recovery(new, old_id, groups)
        # A wrong secret is refused after the transaction, which keeps its count.
        if done is None:
            raise Forbidden("wrong recovery secret for this name (or the name has none)")
        self.token_cache.invalidate()  # the old devices' tokens ended
        return done

    def _check_recovery_secret(self, tx: Tx, identity: bytes, secret: str) -> bool:
        """Whether ``secret`` is the name's; a wrong one is counted (the caller commits)."""
        now = self.clock()
        # Locks the name's row (PostgreSQL): concurrent guesses are counted one by one.
        tx.execute(
            "UPDATE accounts SET failures = CASE WHEN failures_since < ? THEN 0 "
            "ELSE failures END WHERE identity = ?",
            (now - self.recovery_window, identity),
        )
        rows = tx.execute(
            "SELECT recovery_hash, failures FROM accounts WHERE identity = ?", (identity,)
        )
        if not rows or rows[0][0] is None:
            return False
        if int(rows[0][1]) >= self.recovery_attempts:
            raise RateLimited("too many wrong recovery secrets for this name: try again later")
        if hmac.compare_digest(bytes(rows[0][0]), recovery_hash(identity, secret)):
            return True
        tx.execute(
            "UPDATE accounts SET failures = failures + 1, failures_since = CASE WHEN "
            "failures = 0 THEN ? ELSE failures_since END WHERE identity = ?",
            (now, identity),
        )
        return False

    def _rebind(
        self, tx: Tx, new: ClientInfo, credential: bytes, recovery: bytes
    ) -> tuple[str, list[bytes]]:
        """Move the user to the new device: every old device is revoked (binding, tokens,
        KeyPackages, queue), the new one stands on their delivery lists. Returns an old
        client id (the one with the new device's name, if any) and the groups."""
        account = account_of(new.identity)
        old = self._device_ids(tx, account)
        if not old:
            raise NotFound("no client with this identity")
        old_id = next((cid for cid, ident in old if ident == new.identity), old[0][0])
        groups: set[bytes] = set()
        for cid, _ in old:
            groups |= set(self._drop_client(tx, cid))
            tx.execute("UPDATE group_undo SET roster = REPLACE(roster, ?, ?)", (cid, new.id))
        tx.execute(
            "INSERT INTO clients (id, identity, signature_key, credential, cipher_suite, "
            "created) VALUES (?, ?, ?, ?, ?, ?)",
            (new.id, new.identity, new.signature_key, credential, new.cipher_suite, self.clock()),
        )
        self._add_device(tx, new.id, new.identity)
        for gid in sorted(groups):
            tx.execute(
                "INSERT INTO group_members (group_id, client_id) VALUES (?, ?)", (gid, new.id)
            )
        tx.execute(
            "UPDATE accounts SET recovery_hash = ?, failures = 0 WHERE identity = ?",
            (recovery, account),
        )
        return old_id, sorted(groups)

    def rotate_key(
        self,
        client: ClientInfo,
        credential: bytes,
        signature_key: bytes,
        cipher_suite: int,
        challenge: bytes,
        signature: bytes,
    ) -> ClientInfo:
        """Rotate a device's signature key: the caller (authenticated with its current key)
        binds its identity to a new key whose possession the signed challenge proves; the
        credential must name the same device. Its place on delivery lists, its queue and its
        tokens move to the new key; its KeyPackages (of the old key) go. The device then
        commits the new key in each of its groups."""
        cred = _decode_credential(credential)
        self._check_kind(cred)
        if self._identity_of(cred, signature_key) != client.identity:
            raise BadRequest("the new credential must name the same device")
        self._check_challenge(challenge)
        self._check_possession(cipher_suite, signature_key, challenge, signature)
        new = ClientInfo(client_id_of(signature_key), client.identity, signature_key, cipher_suite)
        with self.db.transaction() as tx:
            self._consume_challenge(tx, challenge)
            if tx.execute("SELECT 1 FROM clients WHERE signature_key = ?", (signature_key,)):
                raise Conflict("this signature key is already registered: rotate to a new one")
            tx.execute(
                "UPDATE clients SET id = ?, signature_key = ?, credential = ?, cipher_suite = ? "
                "WHERE id = ?",
                (new.id, signature_key, credential, cipher_suite, client.id),
            )
            tx.execute("DELETE FROM key_packages WHERE owner = ?", (client.id,))
            for table in ("tokens", "queue", "group_members", "devices"):
                tx.execute(
                    f"UPDATE {table} SET client_id = ? WHERE client_id = ?", (new.id, client.id)
                )
            tx.execute("UPDATE group_undo SET roster = REPLACE(roster, ?, ?)", (client.id, new.id))
            # Leaves still show the old key until the device commits the new one in each
            # group: rosters computed from them meanwhile must name the device as it is now.
            tx.execute("UPDATE client_aliases SET new_id = ? WHERE new_id = ?", (new.id, client.id))
            tx.execute(
                "INSERT INTO client_aliases (old_id, new_id) VALUES (?, ?)", (client.id, new.id)
            )
        self.token_cache.invalidate()  # its tokens now name the new key
        return new

    def rate_limit_recovery(self, peer: str) -> None:
        """Recovery requests are limited per address too (``recovery_per_address``)."""
        self._rate_limit(
            f"recover:{peer}",
            self.recovery_per_address / self.recovery_window,
            float(self.recovery_per_address),
        )

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
        self._check_challenge(challenge)
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT id, cipher_suite FROM clients WHERE signature_key = ?", (signature_key,)
            )
            if not rows:
                raise Unauthorized(NO_BINDING)
            self._check_possession(int(rows[0][1]), signature_key, challenge, signature)
            self._consume_challenge(tx, challenge)
            token = _secrets.token_urlsafe(32)
            tx.execute("DELETE FROM tokens WHERE expires < ?", (self.clock(),))
            tx.execute(
                "INSERT INTO tokens (token, client_id, expires) VALUES (?, ?, ?)",
                (token, str(rows[0][0]), self.clock() + TOKEN_TTL),
            )
        return token

    def authenticate(self, token: str | None, *, charge: bool = True) -> ClientInfo:
        """The client of a live bearer token (and, with ``charge``, one request of its
        rate)."""
        client = self.authenticate_cached(token, charge=charge)
        if client is not None:
            return client
        if not token:
            raise Unauthorized("missing bearer token")
        generation = self.token_cache.generation  # before the read (``token_cache.py``)
        rows = self.db.query(
            "SELECT c.id, c.identity, c.signature_key, c.cipher_suite, t.expires "
            "FROM tokens t JOIN clients c ON c.id = t.client_id WHERE t.token = ?",
            (token,),
        )
        now = self.clock()
        if not rows or float(rows[0][4]) < now:
            raise Unauthorized("invalid or expired token: authenticate again")
        r = rows[0]
        client = ClientInfo(str(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]))
        self.token_cache.put(token, client, float(r[4]), now, generation)
        if charge:
            self._rate_limit(client.id)
        return client

    def charge_request(self, client_id: str) -> None:
        """One request of ``client_id``'s rate for what does not pass through
        :meth:`authenticate` (a frame on an authenticated WebSocket); RateLimited when spent."""
        self._rate_limit(client_id)

    def authenticate_cached(self, token: str | None, *, charge: bool = True) -> ClientInfo | None:
        """:meth:`authenticate` when the token is in the cache (no database, so callers on
        an event loop can call it directly), else None."""
        if not token:
            return None
        client = self.token_cache.get(token, self.clock())
        if client is not None and charge:
            self._rate_limit(client.id)
        return client

    def rate_limit_anonymous(self, peer: str) -> None:
        """Unauthenticated endpoints (challenge, register, token) are limited per address."""
        self._rate_limit(f"peer:{peer}")

    def _rate_limit(
        self, client_id: str, rate: float | None = None, burst: float | None = None
    ) -> None:
        rate = self.rate_per_second if rate is None else rate
        burst = self.rate_burst if burst is None else burst
        now = self.clock()
        bucket = self._buckets.setdefault(client_id, _Bucket(burst, now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
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


def _decode_credential(credential: bytes) -> Credential:
    try:
        return Credential.decode(credential)
    except DecodeError as exc:
        raise BadRequest(f"malformed credential: {exc}") from None


def _check_recovery_hash(recovery: bytes | None) -> None:
    if recovery is not None and len(recovery) != hashlib.sha256().digest_size:
        raise BadRequest("recovery_hash must be a SHA-256 hash (see recovery_hash())")


__all__ = [
    "CHALLENGE_LABEL",
    "CHALLENGE_TTL",
    "INVITE_TTL",
    "REGISTRATION_MODES",
    "TOKEN_TTL",
    "AuthenticationService",
    "ClientInfo",
    "Recovery",
    "Registration",
    "RegistryValidator",
    "client_id_of",
    "invite_hash",
    "new_code",
    "new_recovery_secret",
    "recovery_hash",
]
