"""A small synchronous client of the Delivery Service's HTTP API (httpx)."""

from __future__ import annotations

import base64
import binascii
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from mlspy.credentials import CredentialError
from mlspy.crypto import suite
from mlspy.ds.accounts import new_recovery_secret, recovery_hash
from mlspy.ds.service import CHALLENGE_LABEL
from mlspy.errors import MLSError
from mlspy.group import KeyPackageBundle, SigningIdentity
from mlspy.messages import Credential, CredentialType, MLSMessage
from mlspy.users import same_user

__all__ = [
    "ASCredentialValidator",
    "DSClient",
    "DSConflict",
    "DSRequestError",
    "new_recovery_secret",
    "queue_item",
    "recovery_hash",
    "refusal",
    "submit_body",
]


class DSRequestError(MLSError):
    """The Delivery Service refused a request."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{status}: {body.get('error', body)}")


class DSConflict(DSRequestError):
    """409: another commit won this epoch (``epoch`` is the group's epoch now)."""

    @property
    def epoch(self) -> int | None:
        value = self.body.get("epoch")
        return int(value) if value is not None else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def queue_item(raw: Any) -> dict[str, Any]:
    """A queued message as the DS's JSON carries it (``api.QueueItem``: the group id in hex,
    the data in base64), over HTTP or the WebSocket alike, with its bytes decoded: ``seq``,
    ``kind``, ``group_id`` and ``data`` (bytes), ``epoch``. ValueError when it is not one."""
    try:
        seq, kind, epoch = raw["seq"], raw["kind"], raw["epoch"]
        group_id = bytes.fromhex(raw["group_id"])
        data = base64.b64decode(raw["data"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"not a queued message: {exc!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (seq, epoch)):
        raise ValueError("not a queued message: seq and epoch must be integers")
    if not isinstance(kind, str):
        raise ValueError("not a queued message: kind must be a string")
    return {"seq": seq, "kind": kind, "group_id": group_id, "epoch": epoch, "data": data}


def submit_body(
    message: bytes,
    *,
    welcome: bytes | None = None,
    group_info: bytes | None = None,
    adds: Sequence[bytes] = (),
    removes: Sequence[bytes] = (),
) -> dict[str, Any]:
    """The JSON of a submission (``api.Submit``), over HTTP or on the WebSocket alike."""
    body: dict[str, Any] = {"message": _b64(message)}
    if welcome is not None:
        body["welcome"] = _b64(welcome)
    if group_info is not None:
        body["group_info"] = _b64(group_info)
    if adds:
        body["adds"] = [_b64(a) for a in adds]
    if removes:
        body["removes"] = [_b64(r) for r in removes]
    return body


def refusal(status: int, body: dict[str, Any]) -> DSRequestError:
    """The error of a refused request: DSConflict for a 409."""
    return (DSConflict if status == 409 else DSRequestError)(status, body)


class DSClient:
    def __init__(
        self, base_url: str, identity: SigningIdentity, *, verify: bool | str = True
    ) -> None:
        self.identity = identity
        context: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self.http = httpx.Client(base_url=base_url, verify=context, timeout=30)
        self.verify = context  # the same trust for the WebSocket (``mlspy.client.push``)
        self.token: str | None = None
        self.recovery_set = False
        self._login_lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    # A 503 (the DS's database is away for a moment) is retried this many times, waiting what
    # Retry-After says (at most ``MAX_RETRY_WAIT`` s each). Safe: a 503 means nothing was
    # done — or, rarely, an interrupted COMMIT whose outcome the DS could not learn; then a
    # repeated message is a duplicate the receivers drop (its key is already spent).
    RETRIES_503 = 3
    MAX_RETRY_WAIT = 5.0

    def _request(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        attempts = 0
        while True:
            response = self.http.request(method, path, headers=headers, **kwargs)
            if response.status_code != 503 or attempts >= self.RETRIES_503:
                return response
            attempts += 1
            wait = response.headers.get("retry-after", "1")
            time.sleep(min(float(wait) if wait.isdigit() else 1.0, self.MAX_RETRY_WAIT))

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        sent = self.token
        headers = {"authorization": f"Bearer {sent}"} if sent else {}
        response = self._request(method, path, headers, **kwargs)
        if response.status_code == 401 and sent and not path.startswith("/v1/auth/"):
            # Bearer tokens are short-lived: prove possession of the key again and retry
            # once.
            self.renew_token(sent)
            headers = {"authorization": f"Bearer {self.token}"}
            response = self._request(method, path, headers, **kwargs)
        data: dict[str, Any] = response.json() if response.content else {}
        if response.status_code >= 400:
            raise refusal(response.status_code, data)
        return data

    def _signed_challenge(self) -> tuple[bytes, bytes]:
        challenge = base64.b64decode(self._call("POST", "/v1/auth/challenge")["challenge"])
        cs = suite(self.identity.cipher_suite)
        sig = cs.sign_with_label(self.identity.signature_private_key, CHALLENGE_LABEL, challenge)
        return challenge, sig

    def _possession(self) -> dict[str, Any]:
        """Our credential and key, with a fresh challenge signed by the key."""
        challenge, sig = self._signed_challenge()
        return {
            "credential": _b64(self.identity.credential.encode()),
            "signature_key": _b64(self.identity.signature_key),
            "cipher_suite": self.identity.cipher_suite,
            "challenge": _b64(challenge),
            "signature": _b64(sig),
        }

    def register(
        self,
        *,
        invite_code: str | None = None,
        recovery_hash: bytes | None = None,
        pairing_code: str | None = None,
    ) -> str:
        """Bind our name to our key at the AS; ``invite_code`` where the server's
        registration policy needs one, ``recovery_hash`` (``mlspy.ds.accounts.recovery_hash``
        of a secret the user keeps) to be able to recover the name after losing the key.
        ``recovery_set`` says whether this call set the name's recovery secret."""
        body = self._possession()
        if invite_code is not None:
            body["invite_code"] = invite_code
        if recovery_hash is not None:
            body["recovery_hash"] = _b64(recovery_hash)
        if pairing_code is not None:
            body["pairing_code"] = pairing_code
        out = self._call("POST", "/v1/auth/register", json=body)
        self.recovery_set = bool(out.get("recovery_set"))
        return str(out["client_id"])

    def recover(self, identity: bytes, secret: str, recovery_hash: bytes) -> list[bytes]:
        """Take the name ``identity`` over onto our key with its recovery secret (the old
        key stops working); ``recovery_hash`` is the hash of the name's next recovery secret.
        Returns the groups whose delivery lists now hold us (rejoin them). Then log in."""
        body = self._possession()
        body.update(
            identity=_b64(identity), recovery_secret=secret, recovery_hash=_b64(recovery_hash)
        )
        out = self._call("POST", "/v1/auth/recover", json=body)
        return [bytes.fromhex(g) for g in out["groups"]]

    def rotate_key(self, new: SigningIdentity) -> None:
        """Bind our identity to ``new``'s key (same credential, new key pair) at the AS, then
        use it. Our token stays valid."""
        old = self.identity
        self.identity = new
        try:
            body = self._possession()  # proof of possession of the new key
        finally:
            self.identity = old
        self._call("POST", "/v1/devices/rotate", json=body)
        self.identity = new

    def pairing_code(self) -> str:
        """A single-use code (ten minutes) that enrols a new device of our user."""
        return str(self._call("POST", "/v1/devices/pairing")["code"])

    def devices(self) -> list[dict[str, Any]]:
        """Our user's devices: name, identity, when enrolled."""
        out = self._call("GET", "/v1/devices")["devices"]
        return [
            {
                "device": d["device"],
                "identity": base64.b64decode(d["identity"]),
                "created": d["created"],
            }
            for d in out
        ]

    def revoke_device(self, device: str) -> bytes:
        """Revoke one of our user's devices; returns its identity."""
        out = self._call("POST", f"/v1/devices/{device}/revoke")
        return base64.b64decode(out["identity"])

    def claim_user_key_packages(self, user: bytes, cipher_suite: int = 1) -> list[bytes]:
        """One KeyPackage of every device of ``user``."""
        out = self._call(
            "POST",
            "/v1/key_packages/claim",
            json={"user": _b64(user), "cipher_suite": cipher_suite},
        )
        return [base64.b64decode(k) for k in out["key_packages"]]

    def create_invite(self) -> str:
        """A single-use invite code for someone new (a few a day)."""
        return str(self._call("POST", "/v1/invites")["code"])

    def renew_token(self, stale: str | None) -> None:
        """Log in again because ``stale`` was refused (expired). Concurrent callers share one
        new login: the first one makes it, the others find the token changed."""
        with self._login_lock:
            if self.token == stale:
                self.login()

    def login(self) -> None:
        challenge, sig = self._signed_challenge()
        self.token = str(
            self._call(
                "POST",
                "/v1/auth/token",
                json={
                    "signature_key": _b64(self.identity.signature_key),
                    "challenge": _b64(challenge),
                    "signature": _b64(sig),
                },
            )["token"]
        )

    def upload_key_packages(self, bundles: Sequence[KeyPackageBundle]) -> int:
        items = [_b64(MLSMessage.wrap(b.key_package).encode()) for b in bundles]
        return int(self._call("POST", "/v1/key_packages", json={"key_packages": items})["stored"])

    def claim_key_package(self, identity: bytes, cipher_suite: int = 1) -> bytes:
        out = self._call(
            "POST",
            "/v1/key_packages/claim",
            json={"identity": _b64(identity), "cipher_suite": cipher_suite},
        )
        return base64.b64decode(out["key_package"])

    def key_package_claims(self) -> list[dict[str, Any]]:
        """Who claimed our KeyPackages lately: claimer identity, ref, last resort, time."""
        out = self._call("GET", "/v1/key_packages/claims")
        return [
            {
                "claimer": base64.b64decode(c["claimer"]),
                "ref": base64.b64decode(c["ref"]),
                "last_resort": bool(c["last_resort"]),
                "at": float(c["at"]),
            }
            for c in out["claims"]
        ]

    def count_key_packages(self, cipher_suite: int = 1) -> tuple[int, bool]:
        out = self._call("GET", "/v1/key_packages/count", params={"cipher_suite": cipher_suite})
        return int(out["count"]), bool(out["last_resort"])

    def create_group(
        self,
        group_info: bytes,
        *,
        encrypted_handshakes: bool = False,
        external_joins: bool = False,
    ) -> int:
        out = self._call(
            "POST",
            "/v1/groups",
            json={
                "group_info": _b64(group_info),
                "encrypted_handshakes": encrypted_handshakes,
                "external_joins": external_joins,
            },
        )
        return int(out["epoch"])

    def submit(
        self,
        group_id: bytes,
        message: bytes,
        *,
        welcome: bytes | None = None,
        group_info: bytes | None = None,
        adds: Sequence[bytes] = (),
        removes: Sequence[bytes] = (),
    ) -> int:
        body = submit_body(
            message, welcome=welcome, group_info=group_info, adds=adds, removes=removes
        )
        return int(self._call("POST", f"/v1/groups/{group_id.hex()}/messages", json=body)["seq"])

    def leave_group(self, group_id: bytes) -> None:
        """Leave the group's delivery list (after processing the commit that removed us)."""
        self._call("POST", f"/v1/groups/{group_id.hex()}/leave")

    def reject_commit(self, group_id: bytes, epoch: int) -> int:
        """Report that we rejected the commit that ended ``epoch``; the DS undoes it while
        nobody else has spoken in the new epoch (else 409)."""
        out = self._call("POST", f"/v1/groups/{group_id.hex()}/reject", json={"epoch": epoch})
        return int(out["seq"])

    def group_info(self, group_id: bytes) -> bytes:
        out = self._call("GET", f"/v1/groups/{group_id.hex()}/group_info")
        return base64.b64decode(out["group_info"])

    def fetch(self, after: int = 0) -> list[dict[str, Any]]:
        items = self._call("GET", "/v1/queue", params={"after": after})["messages"]
        return [queue_item(item) for item in items]

    def ack(self, seqs: Sequence[int]) -> None:
        self._call("POST", "/v1/queue/ack", json={"seqs": list(seqs)})


class ASCredentialValidator:
    """A :class:`~mlspy.credentials.CredentialValidator` that asks the Authentication
    Service: a credential is valid when the AS binds its identity to that very signature key
    (§5.3.1). Answers are cached for the life of the validator; a key that differs from the
    cached one is asked again once (the user may have moved the name to a new key)."""

    def __init__(self, client: DSClient) -> None:
        self.client = client
        self._seen: dict[bytes, bytes] = {}

    @staticmethod
    def same_member(old: Credential, new: Credential) -> bool:
        """Devices of one user are one participant (``mlspy.users``): a new device of the
        user may replace a lost one's leaf (§12.4.3.2)."""
        return same_user(old, new)

    def validate(self, credential: Credential, signature_key: bytes) -> None:
        identity = credential.identity
        if credential.credential_type != CredentialType.basic or identity is None:
            raise CredentialError("this Authentication Service only vouches for basic credentials")
        bound = self._seen.get(identity)
        if bound != signature_key:
            try:
                out = self.client._call("GET", f"/v1/identities/{identity.hex()}")
            except DSRequestError as exc:
                if exc.status == 404:
                    raise CredentialError(
                        f"identity {identity!r} is not registered with the AS"
                    ) from None
                raise
            bound = base64.b64decode(out["signature_key"])
            self._seen[identity] = bound
        if bound != signature_key:
            raise CredentialError(f"the AS binds identity {identity!r} to another signature key")
