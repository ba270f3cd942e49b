"""Queue rows: what a client is sent, and how a message is queued for its recipients.

Every queue row goes in through :func:`enqueue`, which also publishes the message with its
recipients on the transaction (``Tx.publish``): once the COMMIT is durable, a node that is
its database's only writer hands it straight to the recipients' WebSockets
(``push.Fanout``) instead of each socket reading it back.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from mlspy.ds.db import Tx

# Queue items that are not group messages: Welcomes, roll-back notices (a commit undone), and
# notices of a user's devices (``devices.py``: enrolled or revoked; the device's identity).
NOTICES = ("welcome", "rollback", "device_added", "device_revoked")


@dataclass(frozen=True)
class QueuedMessage:
    seq: int
    kind: str  # "message" | "welcome" | "rollback" (a commit undone: see reject_commit)
    group_id: bytes
    epoch: int
    data: bytes


@dataclass(frozen=True)
class Published:
    """A message just queued, and the clients it was queued for."""

    message: QueuedMessage
    recipients: frozenset[str]


def queued(r: Sequence[Any]) -> QueuedMessage:
    """A queue row (seq, kind, group_id, epoch, data) as the client sees it."""
    return QueuedMessage(
        int(r[0]), str(r[1]) if r[1] in NOTICES else "message", bytes(r[2]), int(r[3]), bytes(r[4])
    )


def enqueue(
    tx: Tx,
    seq: int,
    kind: str,
    group_id: bytes,
    epoch: int,
    data: bytes,
    recipients: Collection[str],
) -> None:
    """Queue message ``seq`` (a row of ``messages`` with these columns) for ``recipients``."""
    if not recipients:
        return
    tx.executemany(
        "INSERT INTO queue (client_id, seq) VALUES (?, ?)", [(c, seq) for c in recipients]
    )
    tx.publish(Published(queued((seq, kind, group_id, epoch, data)), frozenset(recipients)))
