"""The Delivery Service's HTTP API bodies, as typed models (msgspec).

Each request body, query string and response of ``app.py`` is one of these structs: the same
type validates what a client sends (a wrongly typed or out-of-range value is a 400 naming the
field) and generates the OpenAPI document (``openapi.py``), so the description cannot drift
from the code. MLS bytes travel as standard base64 strings (msgspec's encoding of ``bytes``);
group ids in paths and queue items are hex.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

# RFC 9420 §6.1: ``uint64 epoch`` — but databases store signed 64-bit integers, and the DS
# stores ``epoch + 1``; values the DS cannot store are refused at the door.
Epoch = Annotated[int, Meta(ge=0, le=2**63 - 2, description="an epoch (0 ≤ e < 2^63 - 1)")]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1, description="a queue sequence number")]
# RFC 9420 §5.1: ``uint16 CipherSuite``.
CipherSuiteId = Annotated[int, Meta(ge=0, le=0xFFFF, description="an MLS cipher suite (u16)")]
Code = Annotated[str, Meta(max_length=200)]
B64 = Annotated[bytes, Meta(description="base64 (RFC 4648 §4)")]


class Model(msgspec.Struct, frozen=True, forbid_unknown_fields=False, omit_defaults=True):
    """A JSON object of the API (unknown fields are ignored, for forward compatibility)."""


# --- Errors ---------------------------------------------------------------------------


class ErrorBody(Model, frozen=True):
    """Every error: ``error`` says what went wrong and what to do; some carry details (e.g.
    ``epoch`` with a 409, ``retry_after`` with a 429 or 503)."""

    error: str


# --- Authentication Service -----------------------------------------------------------


class Challenge(Model, frozen=True):
    """A fresh challenge to sign (``SignWithLabel(., "DS Challenge", challenge)``)."""

    challenge: B64


class Register(Model, frozen=True):
    """Bind a credential to a signature key, proving possession by signing a challenge."""

    credential: B64
    signature_key: B64
    challenge: B64
    signature: B64
    cipher_suite: CipherSuiteId = 1
    invite_code: Code | None = None
    recovery_hash: B64 | None = None
    pairing_code: Code | None = None


class Registered(Model, frozen=True):
    client_id: str
    created: bool
    recovery_set: bool


class TokenRequest(Model, frozen=True):
    signature_key: B64
    challenge: B64
    signature: B64


class Token(Model, frozen=True):
    token: str


class Logout(Model, frozen=True):
    """End this bearer token, or (``everywhere``) every token of this device."""

    everywhere: bool = False


class LoggedOut(Model, frozen=True):
    revoked: int


class Recover(Model, frozen=True):
    """Rebind a name to a new key with its recovery secret."""

    identity: B64
    recovery_secret: Code
    credential: B64
    signature_key: B64
    challenge: B64
    signature: B64
    recovery_hash: B64
    cipher_suite: CipherSuiteId = 1


class Recovered(Model, frozen=True):
    client_id: str
    groups: list[str]


class CodeIssued(Model, frozen=True):
    """A single-use code (an invite or a pairing code) and when it expires."""

    code: str
    expires: float


class Device(Model, frozen=True):
    device: str
    identity: B64
    created: float


class Devices(Model, frozen=True):
    devices: list[Device]


class Rotate(Model, frozen=True):
    """Move this device to a new signature key (proof of possession of the new key)."""

    credential: B64
    signature_key: B64
    challenge: B64
    signature: B64
    cipher_suite: CipherSuiteId = 1


class Rotated(Model, frozen=True):
    client_id: str


class Revoked(Model, frozen=True):
    identity: B64


class IdentityKey(Model, frozen=True):
    credential: B64
    signature_key: B64


# --- KeyPackages ----------------------------------------------------------------------


class Upload(Model, frozen=True):
    key_packages: Annotated[list[B64], Meta(max_length=1000)]


class Stored(Model, frozen=True):
    stored: int


class Claim(Model, frozen=True):
    """Claim one KeyPackage of ``identity``, or one of every device of ``user``."""

    identity: B64 | None = None
    user: B64 | None = None
    cipher_suite: CipherSuiteId = 1


class Claimed(Model, frozen=True):
    key_package: B64 | None = None
    key_packages: list[B64] | None = None


class ClaimRecord(Model, frozen=True):
    claimer: B64
    ref: B64
    last_resort: bool
    at: float


class Claims(Model, frozen=True):
    claims: list[ClaimRecord]


class CountQuery(Model, frozen=True):
    cipher_suite: CipherSuiteId = 1


class Count(Model, frozen=True):
    count: int
    last_resort: bool


# --- Groups ---------------------------------------------------------------------------


class CreateGroup(Model, frozen=True):
    group_info: B64
    ratchet_tree: B64 | None = None
    encrypted_handshakes: bool = False
    external_joins: bool = False


class Created(Model, frozen=True):
    epoch: int


class Submit(Model, frozen=True):
    """A handshake or application message; with a commit, its Welcome, GroupInfo and the
    identities it adds and removes (encrypted handshakes)."""

    message: B64
    welcome: B64 | None = None
    group_info: B64 | None = None
    adds: Annotated[list[B64], Meta(max_length=10000)] = []
    removes: Annotated[list[B64], Meta(max_length=10000)] = []


class Submitted(Model, frozen=True):
    seq: int


class SocketSubmit(Submit, frozen=True, kw_only=True):
    """A submission on the WebSocket (``{"submit": …}``): the body of ``POST
    /v1/groups/{group_id}/messages`` with the group id, and an ``id`` of the client's choosing
    that the answer (``{"answer": id, "status": …}``) carries back."""

    id: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    group_id: Annotated[str, Meta(max_length=512)]


class GroupInfo(Model, frozen=True):
    group_info: B64


class Left(Model, frozen=True):
    left: bool


class Reject(Model, frozen=True):
    """Report that you rejected the commit that ended ``epoch``."""

    epoch: Epoch


class Undone(Model, frozen=True):
    undone: bool
    seq: int


# --- Queues ---------------------------------------------------------------------------


class QueueQuery(Model, frozen=True):
    after: Seq = 0


class QueueItem(Model, frozen=True):
    """A queued message: ``kind`` is ``message``, ``welcome``, ``rollback`` (a commit
    undone), ``device_added`` or ``device_revoked``."""

    seq: int
    kind: str
    group_id: str
    epoch: int
    data: B64


class Queue(Model, frozen=True):
    messages: list[QueueItem]


class Ack(Model, frozen=True):
    seqs: Annotated[list[Seq], Meta(max_length=10000)]


class Acked(Model, frozen=True):
    acked: int


# --- Operations -----------------------------------------------------------------------


class Status(Model, frozen=True):
    status: str
