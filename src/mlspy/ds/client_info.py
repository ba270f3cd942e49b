"""An authenticated client as the DS knows it: the record a bearer token resolves to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClientInfo:
    """A registered client: its id, the identity (user and device) bound to its signature
    key, and the ciphersuite it registered with."""

    id: str
    identity: bytes
    signature_key: bytes
    cipher_suite: int


__all__ = ["ClientInfo"]
