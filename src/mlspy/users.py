"""Users and their devices, as credentials name them (RFC 9750 §2: a user has several
clients, each with its own keys).

A device's identity (a Basic credential's ``identity``, or what the X.509 validator reads
from a certificate) is the UTF-8 text ``<user>/<device>``: ``alice/phone``. A bare ``<user>``
names that user's device ``""`` (users with one device, and names registered before devices
existed), so ``alice`` and ``alice/phone`` are two devices of one user. User names hold no
``/``; device names are short words (letters, digits, ``-``, ``_``, ``.``).
"""

from __future__ import annotations

import re

from mlspy.errors import UsageError
from mlspy.messages import Credential

SEPARATOR = "/"
_DEVICE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def device_identity(user: str, device: str = "") -> bytes:
    """The identity of ``user``'s ``device`` (``""``: the bare user name)."""
    check_user(user)
    if device:
        check_device(device)
        return f"{user}{SEPARATOR}{device}".encode()
    return user.encode()


def split_identity(identity: bytes | None) -> tuple[str, str]:
    """(user, device) of an identity; undecodable bytes are shown, not trusted."""
    text = (identity or b"?").decode(errors="replace")
    user, _, device = text.partition(SEPARATOR)
    return user, device


def user_of(identity: bytes | None) -> str:
    return split_identity(identity)[0]


def same_user(old: Credential, new: Credential) -> bool:
    """Two credentials of one user's devices: the same participant for the application
    (a new device may take a lost one's place, RFC 9420 §12.4.3.2)."""
    return (
        old.credential_type == new.credential_type
        and old.identity is not None
        and user_of(old.identity) == user_of(new.identity)
    )


def check_user(user: str) -> None:
    if not user or SEPARATOR in user or len(user.encode()) > 255:
        raise UsageError(f"a user name is 1 to 255 bytes without {SEPARATOR!r}: {user!r}")


def check_device(device: str) -> None:
    if not _DEVICE.fullmatch(device):
        raise UsageError(f"a device name is 1 to 32 letters, digits, '-', '_' or '.': {device!r}")


__all__ = [
    "SEPARATOR",
    "check_device",
    "check_user",
    "device_identity",
    "same_user",
    "split_identity",
    "user_of",
]
