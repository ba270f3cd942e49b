"""Users with many devices, at the Authentication Service (RFC 9750 §2, §4).

An account is a user name; each registered client is one of its devices (``mlspy.users``: the
credential names ``<user>/<device>``). The first device of a new user registers as the
registration policy allows (open, invite, X.509). A further device is *enrolled*: its
registration carries a pairing code that an existing device of the same user asked for
(``POST /v1/devices/pairing``: single use, ten minutes, stored hashed), or — every device lost
— the account's recovery secret (``recover``). Enrolment and revocation are announced to the
user's other devices through their queues (kinds ``device_added`` and ``device_revoked``, the
device's identity as data): they add the new device to the user's groups and remove a revoked
one from them. Revoking a device ends its binding (its credential no longer validates), its
tokens, KeyPackages, queue and places on delivery lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from mlspy.ds import retention
from mlspy.ds.client_info import ClientInfo
from mlspy.ds.codes import new_code, normalized
from mlspy.ds.db import Database, Tx
from mlspy.ds.errors import Forbidden, NotFound, RateLimited
from mlspy.ds.queues import enqueue
from mlspy.ds.token_cache import TokenCache
from mlspy.users import split_identity

PAIRING_TTL = 600.0
PAIRINGS_PER_HOUR = 10
_PAIRING_LABEL = b"mlspy pairing code\x00"
NEEDS_PAIRING = (
    "the user {user!r} has devices already: enrol this device with a pairing code from one of "
    "them (`/link` in the chat, Client.pairing_code()), or recover the account with its "
    "recovery secret"
)


def pairing_hash(account: bytes, code: str) -> bytes:
    return hashlib.sha256(
        _PAIRING_LABEL + len(account).to_bytes(4, "big") + account + normalized(code)
    ).digest()


def account_of(identity: bytes) -> bytes:
    return split_identity(identity)[0].encode()


class Devices:
    """The device half of the AS; mixed into :class:`AuthenticationService`."""

    db: Database
    clock: Callable[[], float]
    token_cache: TokenCache[ClientInfo]

    def _wake(self, client_ids: set[str]) -> None:
        """Queued something for these clients (the DS wakes their sockets)."""

    def _account_exists(self, tx: Tx, account: bytes) -> bool:
        return bool(
            tx.execute("SELECT 1 FROM devices WHERE account = ? LIMIT 1", (account,))
            or tx.execute("SELECT 1 FROM accounts WHERE identity = ?", (account,))
        )

    def _enrol(self, tx: Tx, identity: bytes, pairing_code: str | None) -> None:
        """A further device of an existing user: consume a pairing code of that account."""
        account = account_of(identity)
        if not pairing_code:
            raise Forbidden(NEEDS_PAIRING.format(user=account.decode(errors="replace")))
        used = tx.execute(
            "UPDATE pairings SET used_by = ? WHERE code_hash = ? AND account = ? AND "
            "used_by IS NULL AND expires >= ? RETURNING account",
            (identity, pairing_hash(account, pairing_code), account, self.clock()),
        )
        if not used:
            raise Forbidden(
                "this pairing code is unknown, used or expired (they last ten minutes): ask "
                "one of your devices for a new one"
            )

    def _add_device(self, tx: Tx, client_id: str, identity: bytes) -> None:
        user, device = split_identity(identity)
        tx.execute(
            "INSERT INTO devices (client_id, account, device, created) VALUES (?, ?, ?, ?)",
            (client_id, user.encode(), device, self.clock()),
        )

    def _device_ids(self, tx: Tx, account: bytes) -> list[tuple[str, bytes]]:
        """(client id, identity) of every device of ``account``."""
        rows = tx.execute(
            "SELECT c.id, c.identity FROM devices d JOIN clients c ON c.id = d.client_id "
            "WHERE d.account = ? ORDER BY d.created, c.id",
            (account,),
        )
        return [(str(r[0]), bytes(r[1])) for r in rows]

    def _announce(self, tx: Tx, kind: str, identity: bytes, to: set[str]) -> set[str]:
        """Queue a device notice for ``to`` (the user's other devices)."""
        if not to:
            return set()
        seq = tx.insert_returning_seq(
            "INSERT INTO messages (group_id, epoch, kind, sender, data, created) "
            "VALUES (?, 0, ?, '', ?, ?)",
            (b"", kind, identity, self.clock()),
        )
        enqueue(tx, seq, kind, b"", 0, identity, to)
        return to

    def create_pairing(self, client_identity: bytes) -> tuple[str, float]:
        """A pairing code for a new device of the caller's user (single use, ten minutes)."""
        account = account_of(client_identity)
        now = self.clock()
        code = new_code(6)
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM pairings WHERE expires < ?", (now - 86400.0,))
            made = tx.execute(
                "SELECT COUNT(*) FROM pairings WHERE account = ? AND created > ?",
                (account, now - 3600.0),
            )
            if int(made[0][0]) >= PAIRINGS_PER_HOUR:
                raise RateLimited("too many pairing codes this hour: try again later")
            tx.execute(
                "INSERT INTO pairings (code_hash, account, created, expires) VALUES (?, ?, ?, ?)",
                (pairing_hash(account, code), account, now, now + PAIRING_TTL),
            )
        return code, now + PAIRING_TTL

    def list_devices(self, client_identity: bytes) -> list[dict[str, object]]:
        """The caller's user's devices: name, identity, when enrolled."""
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT d.device, c.identity, d.created FROM devices d JOIN clients c "
                "ON c.id = d.client_id WHERE d.account = ? ORDER BY d.created, c.id",
                (account_of(client_identity),),
            )
        return [
            {"device": str(r[0]), "identity": bytes(r[1]), "created": float(r[2])} for r in rows
        ]

    def revoke_device(self, client_identity: bytes, device: str) -> bytes:
        """Revoke one of the caller's user's devices (itself included); returns its
        identity. The user's other devices are told, to remove it from their groups."""
        account = account_of(client_identity)
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT d.client_id, c.identity FROM devices d JOIN clients c "
                "ON c.id = d.client_id WHERE d.account = ? AND d.device = ?",
                (account, device),
            )
            if not rows:
                raise NotFound(f"your user has no device {device!r}")
            target, identity = str(rows[0][0]), bytes(rows[0][1])
            for group_id in self._drop_client(tx, target):
                retention.drop_if_empty(tx, group_id)  # it was the last one on the list
            rest = {cid for cid, _ in self._device_ids(tx, account)}
            woken = self._announce(tx, "device_revoked", identity, rest)
        self.token_cache.invalidate()  # committed: its tokens are gone
        self._wake(woken)
        return identity

    def _drop_client(self, tx: Tx, client_id: str) -> list[bytes]:
        """End a client: binding, tokens, KeyPackages, queue, delivery lists. Returns the
        groups whose delivery lists held it."""
        groups = [
            bytes(r[0])
            for r in tx.execute(
                "SELECT group_id FROM group_members WHERE client_id = ?", (client_id,)
            )
        ]
        queued = [
            int(r[0]) for r in tx.execute("SELECT seq FROM queue WHERE client_id = ?", (client_id,))
        ]
        for sql in (
            "DELETE FROM clients WHERE id = ?",
            "DELETE FROM devices WHERE client_id = ?",
            "DELETE FROM tokens WHERE client_id = ?",
            "DELETE FROM key_packages WHERE owner = ?",
            "DELETE FROM queue WHERE client_id = ?",
            "DELETE FROM group_members WHERE client_id = ?",
        ):
            tx.execute(sql, (client_id,))
        # What only it had left to fetch is delivered to nobody now.
        retention.forget_delivered(tx, queued)
        return groups
