"""The Delivery Service logic (RFC 9750 §5), without HTTP; it extends the Authentication
Service (``accounts.py``) and shares its database.

Theory of operation. KeyPackages are validated on upload and claimed atomically: a
non-last-resort KeyPackage is handed out at most once.

Groups are strictly ordered: a submitted handshake is checked against the group's current
epoch inside a transaction that locks the group row, so exactly one commit per epoch wins and
later ones get :class:`Conflict` naming the epoch they lost to. For groups whose handshakes are
PublicMessages the DS follows the group with the library's public view and rejects anything a
member would reject; for encrypted handshakes it orders by the clear epoch. An accepted message
is stored once and queued for every member but the sender; a Welcome is released to the owners
of the KeyPackages it names only once its commit has won.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlspy.codec import decode_all
from mlspy.ds.accounts import (
    CHALLENGE_LABEL,
    CHALLENGE_TTL,
    TOKEN_TTL,
    AuthenticationService,
    ClientInfo,
    RegistryValidator,
    client_id_of,
)
from mlspy.ds.db import Tx
from mlspy.ds.errors import (
    BadRequest,
    Conflict,
    DSError,
    Forbidden,
    NotFound,
    RateLimited,
    TooLarge,
    Unauthorized,
)
from mlspy.errors import DecodeError, MLSError, ValidationError
from mlspy.group import GroupConfig, key_package_ref, validate_key_package
from mlspy.group.public_group import (
    PublicGroup,
    PublicStagedCommit,
    deserialize_public_group,
    serialize_public_group,
)
from mlspy.messages import ContentType, LastResort, MLSMessage

MAX_MESSAGE = 1 << 20


@dataclass(frozen=True)
class QueuedMessage:
    seq: int
    kind: str  # "message" | "welcome"
    group_id: bytes
    epoch: int
    data: bytes


@dataclass
class DeliveryService(AuthenticationService):
    max_message: int = MAX_MESSAGE
    # KeyPackages are a protected resource (RFC 9750 §8.4.3): within ``claim_window`` seconds
    # one claimer gets at most ``claims_per_target`` of one user's KeyPackages and
    # ``claims_per_claimer`` in all (more is 429); past ``claims_per_owner`` claims of one
    # user from everyone, only the last-resort KeyPackage is handed out, so a crowd cannot
    # drain a pool while its owner stays reachable.
    claim_window: float = 3600.0
    claims_per_target: int = 10
    claims_per_claimer: int = 500
    claims_per_owner: int = 100
    # Called after a commit with the client ids that have new queued messages.
    on_queued: Callable[[set[str]], None] = lambda _: None

    # --- KeyPackage directory (RFC 9750 §5.1) --------------------------------------

    def upload_key_packages(self, client: ClientInfo, messages: Sequence[bytes]) -> int:
        rows = []
        now = int(self.clock())
        for data in messages:
            self._check_size(data)
            msg = _decode(data)
            kp = msg.key_package
            if kp is None:
                raise BadRequest("expected MLSMessage(KeyPackage)")
            try:
                validate_key_package(kp, now=now)
            except ValidationError as exc:
                raise BadRequest(f"invalid KeyPackage: {exc}") from None
            if kp.leaf_node.signature_key != client.signature_key:
                raise Forbidden("a KeyPackage must be signed with your registered key")
            # Its credential must name the uploader as the AS binds it (a Basic identity, or
            # an X.509 certificate validated against the trust anchors): nobody publishes
            # KeyPackages under another user's name (RFC 9750 §8.4.3.1, ghost users).
            try:
                named = self._identity_of(kp.leaf_node.credential, client.signature_key)
            except BadRequest as exc:
                raise Forbidden(f"the KeyPackage's credential is not yours: {exc}") from exc
            if named != client.identity:
                raise Forbidden(
                    f"the KeyPackage's credential names {named!r}, but you are registered as "
                    f"{client.identity!r}"
                )
            last = LastResort.find_in(kp.extensions) is not None
            rows.append((key_package_ref(kp), client.id, kp.cipher_suite, data, int(last)))
        with self.db.transaction() as tx:
            for row in rows:
                if row[4]:
                    # A new last-resort KeyPackage replaces the previous one, which is retired
                    # (2), not deleted: it may have been claimed already, and its row is how
                    # a Welcome for it finds its owner.
                    tx.execute(
                        "UPDATE key_packages SET last_resort = 2 WHERE owner = ? AND "
                        "cipher_suite = ? AND last_resort = 1",
                        (row[1], row[2]),
                    )
                tx.execute("DELETE FROM key_packages WHERE ref = ?", (row[0],))
                tx.execute(
                    "INSERT INTO key_packages (ref, owner, cipher_suite, data, last_resort) "
                    "VALUES (?, ?, ?, ?, ?)",
                    row,
                )
        return len(rows)

    def claim_key_package(self, claimer: ClientInfo, identity: bytes, cipher_suite: int) -> bytes:
        """One KeyPackage of the client bound to ``identity``: an unclaimed ordinary one
        (marked claimed in the same transaction), else its last-resort one. Claims are limited
        (see ``claims_per_target``) and recorded for the owner to see."""
        skip = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        with self.db.transaction() as tx:
            owner = tx.execute("SELECT id FROM clients WHERE identity = ?", (identity,))
            if not owner:
                raise NotFound("no client with this identity")
            owner_id = str(owner[0][0])
            now = self.clock()
            crowded = self._check_claim_limits(tx, claimer.id, owner_id, now)
            while not crowded:
                rows = tx.execute(
                    "SELECT ref, data FROM key_packages WHERE owner = ? AND cipher_suite = ? "
                    "AND claimed = 0 AND last_resort = 0 ORDER BY ref LIMIT 1" + skip,
                    (owner_id, cipher_suite),
                )
                if not rows:
                    break
                if _expired(bytes(rows[0][1]), now):
                    # Nobody could add its owner with it: drop it and look further.
                    tx.execute("DELETE FROM key_packages WHERE ref = ?", (rows[0][0],))
                    continue
                tx.execute("UPDATE key_packages SET claimed = 1 WHERE ref = ?", (rows[0][0],))
                self._record_claim(tx, claimer.id, owner_id, bytes(rows[0][0]), False, now)
                return bytes(rows[0][1])
            rows = tx.execute(
                "SELECT ref, data FROM key_packages WHERE owner = ? AND cipher_suite = ? "
                "AND last_resort = 1 LIMIT 1",
                (owner_id, cipher_suite),
            )
            if rows and not _expired(bytes(rows[0][1]), now):
                self._record_claim(tx, claimer.id, owner_id, bytes(rows[0][0]), True, now)
                return bytes(rows[0][1])
        raise NotFound("no KeyPackage left for this identity and cipher suite")

    def _check_claim_limits(self, tx: Tx, claimer: str, owner: str, now: float) -> bool:
        """Refuse a claimer over its limits (429); True when the owner's pool is crowded
        (only its last-resort KeyPackage is handed out)."""
        since = now - self.claim_window
        counts = tx.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN owner = ? THEN 1 ELSE 0 END), 0) "
            "FROM key_package_claims WHERE claimer = ? AND created > ?",
            (owner, claimer, since),
        )
        mine, of_target = int(counts[0][0]), int(counts[0][1])
        if mine >= self.claims_per_claimer:
            raise RateLimited("too many KeyPackage claims: try again later")
        if of_target >= self.claims_per_target:
            raise RateLimited("too many claims of this user's KeyPackages: try again later")
        everyone = tx.execute(
            "SELECT COUNT(*) FROM key_package_claims WHERE owner = ? AND created > ?",
            (owner, since),
        )
        return int(everyone[0][0]) >= self.claims_per_owner

    def _record_claim(
        self, tx: Tx, claimer: str, owner: str, ref: bytes, last_resort: bool, now: float
    ) -> None:
        tx.execute(
            "INSERT INTO key_package_claims (claimer, owner, ref, last_resort, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (claimer, owner, ref, int(last_resort), now),
        )

    def key_package_claims(self, client: ClientInfo) -> list[dict[str, object]]:
        """Who claimed the caller's KeyPackages, newest first (within ``claim_window``)."""
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT c.identity, k.ref, k.last_resort, k.created FROM key_package_claims k "
                "JOIN clients c ON c.id = k.claimer WHERE k.owner = ? AND k.created > ? "
                "ORDER BY k.created DESC",
                (client.id, self.clock() - self.claim_window),
            )
        return [
            {
                "claimer": bytes(r[0]),
                "ref": bytes(r[1]),
                "last_resort": bool(r[2]),
                "at": float(r[3]),
            }
            for r in rows
        ]

    def count_key_packages(self, client: ClientInfo, cipher_suite: int) -> tuple[int, bool]:
        """Usable KeyPackages left: unclaimed ordinary ones, and whether a last-resort one
        is there. Expired ones do not count (the client is to replace them)."""
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT last_resort, data FROM key_packages WHERE owner = ? AND "
                "cipher_suite = ? AND claimed = 0 AND last_resort IN (0, 1)",
                (client.id, cipher_suite),
            )
        now = self.clock()
        live = [int(r[0]) for r in rows if not _expired(bytes(r[1]), now)]
        return live.count(0), 1 in live

    # --- Groups (RFC 9750 §5.2) -----------------------------------------------------

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_message:
            raise TooLarge(f"message of {len(data)} bytes exceeds the {self.max_message} limit")

    def _group_config(self, tx: Tx) -> GroupConfig:
        """The rules the DS judges handshakes by: the members' defaults (leaf lifetimes by
        this server's clock, the same maximum total lifetime), and, this DS being the
        Authentication Service, its own registry as the credential validator (§5.3.1)."""
        return GroupConfig(
            clock=lambda: int(self.clock()), credential_validator=RegistryValidator(self, tx)
        )

    def create_group(
        self,
        client: ClientInfo,
        group_info: bytes,
        ratchet_tree: bytes | None = None,
        encrypted_handshakes: bool = False,
        external_joins: bool = False,
    ) -> int:
        """Register a group from its GroupInfo; the caller must be one of its members.

        ``external_joins`` lets clients outside the group join by external commit. The DS
        cannot check an external commit's confirmation tag, so an open group can be pushed by
        any registered client into an epoch its members reject; closed groups only accept
        external commits from clients already on the roster (resync after state loss)."""
        self._check_size(group_info)
        try:
            with self.db.transaction() as tx:
                public = PublicGroup.from_group_info(
                    group_info, ratchet_tree=ratchet_tree, config=self._group_config(tx)
                )
        except MLSError as exc:
            raise BadRequest(f"invalid GroupInfo: {exc}") from exc
        members = {m.signature_key for m in public.members()}
        if client.signature_key not in members:
            raise Forbidden("you are not a member of this group")
        mode = ("private" if encrypted_handshakes else "public") + (
            "+external" if external_joins else ""
        )
        with self.db.transaction() as tx:
            if tx.lock_group(public.group_id) is not None:
                raise Conflict("the group already exists", epoch=public.epoch)
            # Two creators racing past the check above (PostgreSQL locks no row that does
            # not exist yet): the second insert does nothing and is told so.
            inserted = tx.execute(
                "INSERT INTO groups (group_id, epoch, mode, public_state, group_info, created) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_id) DO NOTHING RETURNING epoch",
                (
                    public.group_id,
                    public.epoch,
                    mode,
                    serialize_public_group(public) if mode.startswith("public") else None,
                    group_info,
                    self.clock(),
                ),
            )
            if not inserted:
                raise Conflict("the group already exists", epoch=public.epoch)
            self._set_roster(tx, public.group_id, members)
        return public.epoch

    def _set_roster(self, tx: Tx, group_id: bytes, signature_keys: set[bytes]) -> None:
        tx.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
        for key in signature_keys:
            tx.execute(
                "INSERT INTO group_members (group_id, client_id) VALUES (?, ?)",
                (group_id, client_id_of(key)),
            )

    def _members(self, tx: Tx, group_id: bytes) -> set[str]:
        rows = tx.execute("SELECT client_id FROM group_members WHERE group_id = ?", (group_id,))
        return {str(r[0]) for r in rows}

    def group_info(self, client: ClientInfo, group_id: bytes) -> bytes:
        """The latest GroupInfo, for the group's members, and for anyone when the group is
        open to external joins. It names every member, so a closed group's is not shown to
        outsiders, who get the same 404 as for a group that does not exist."""
        with self.db.transaction() as tx:
            rows = tx.execute("SELECT group_info, mode FROM groups WHERE group_id = ?", (group_id,))
            members = self._members(tx, group_id) if rows else set()
        if not rows or rows[0][0] is None:
            raise NotFound("unknown group")
        if client.id not in members and not str(rows[0][1]).endswith("+external"):
            raise NotFound("unknown group")
        return bytes(rows[0][0])

    def submit(
        self,
        client: ClientInfo,
        group_id: bytes,
        message: bytes,
        *,
        welcome: bytes | None = None,
        group_info: bytes | None = None,
        adds: Sequence[bytes] = (),
        removes: Sequence[bytes] = (),
    ) -> int:
        """Accept a message for ``group_id`` in order; returns its sequence number."""
        for part in (message, welcome or b"", group_info or b""):
            self._check_size(part)
        msg = _decode(message)
        body = msg.public_message or msg.private_message
        if body is None:
            raise BadRequest("expected a PublicMessage or PrivateMessage")
        if msg.public_message is not None:
            fc = msg.public_message.content
            msg_group, epoch, content_type = fc.group_id, fc.epoch, fc.content_type
        else:
            pm = msg.private_message
            if pm is None:  # pragma: no cover - checked above
                raise BadRequest("expected a PublicMessage or PrivateMessage")
            msg_group, epoch, content_type = pm.group_id, pm.epoch, pm.content_type
        if msg_group != group_id:
            raise BadRequest("the message is for another group")
        notify: set[str] = set()
        with self.db.transaction() as tx:
            row = tx.lock_group(group_id)
            if row is None:
                raise NotFound("unknown group")
            current, stored_mode, public_state = int(row[0]), str(row[1]), row[2]
            mode, _, openness = stored_mode.partition("+")
            members = self._members(tx, group_id)
            is_commit = content_type == ContentType.commit
            if is_commit and epoch < current:
                accepted = tx.execute(
                    "SELECT seq, sender, data FROM messages WHERE group_id = ? AND "
                    "epoch = ? AND kind = 'commit'",
                    (group_id, epoch),
                )
                if (
                    accepted
                    and str(accepted[0][1]) == client.id
                    and bytes(accepted[0][2]) == message
                ):
                    # The sender retries a commit we accepted (its answer was lost): answer as
                    # then, so it can merge instead of being wedged an epoch behind. Checked
                    # before membership: the sender may have been removed since.
                    return int(accepted[0][0])
            external = (
                is_commit
                and msg.public_message is not None
                and msg.public_message.content.sender.sender_type.name == "new_member_commit"
            )
            if external and client.id not in members and openness != "external":
                raise Forbidden("this group does not accept external joins from outsiders")
            if (
                client.id not in members
                and not external
                and not (
                    # Outsiders may only propose (an external sender, or a would-be member
                    # asking to be added, §12.1.8): never commit or send application data.
                    content_type == ContentType.proposal
                    and msg.public_message is not None
                    and msg.public_message.content.sender.sender_type.name
                    in ("external", "new_member_proposal")
                )
            ):
                raise Forbidden("you are not a member of this group")
            if content_type != ContentType.application and epoch != current:
                if is_commit and epoch < current:
                    winner = tx.execute(
                        "SELECT seq FROM messages WHERE group_id = ? AND epoch = ? AND "
                        "kind = 'commit'",
                        (group_id, epoch),
                    )
                    raise Conflict(
                        f"epoch {epoch} already has a commit; the group is at epoch {current}",
                        epoch=current,
                        winner=int(winner[0][0]) if winner else None,
                    )
                raise Conflict(f"the group is at epoch {current}, not {epoch}", epoch=current)
            if content_type == ContentType.application and epoch > current:
                raise Conflict(f"the group is at epoch {current}, not {epoch}", epoch=current)
            new_members = set(members)
            public: PublicGroup | None = None
            staged: PublicStagedCommit | None = None
            if mode == "public" and content_type != ContentType.application:
                if msg.public_message is None:
                    raise BadRequest("this group's handshakes must be PublicMessages")
                public = deserialize_public_group(
                    bytes(public_state), config=self._group_config(tx)
                )
                try:
                    event = public.process(msg)
                except MLSError as exc:
                    raise BadRequest(f"rejected: {exc}") from None
                if isinstance(event, PublicStagedCommit):
                    staged = event
                    public.merge(staged)
                    new_members = {client_id_of(m.signature_key) for m in public.members()}
            elif is_commit:
                new_members |= {_client_id_for_identity(tx, i) for i in adds} - {""}
                # A removal the committer declares cannot be verified in an encrypted group:
                # the member stays on the delivery list (it cannot read what follows if it
                # really was removed) until it confirms its removal (``leave_group``).
                if external:
                    new_members.add(client.id)
            kind = (
                "commit"
                if is_commit
                else ("proposal" if content_type == ContentType.proposal else "application")
            )
            seq = tx.insert_returning_seq(
                "INSERT INTO messages (group_id, epoch, kind, sender, data, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (group_id, epoch, kind, client.id, message, self.clock()),
            )
            recipients = members - {client.id}
            for member in recipients:
                tx.execute("INSERT INTO queue (client_id, seq) VALUES (?, ?)", (member, seq))
            notify |= recipients
            if is_commit:
                tx.execute(
                    "UPDATE groups SET epoch = ?, public_state = ?, group_info = COALESCE(?, "
                    "group_info) WHERE group_id = ?",
                    (
                        current + 1,
                        serialize_public_group(public) if public is not None else public_state,
                        group_info,
                        group_id,
                    ),
                )
                if welcome is not None:
                    owners = self._release_welcome(tx, group_id, current + 1, welcome, notify)
                    if mode != "public":
                        # Encrypted handshakes: only owners the committer declared as added
                        # join the delivery list (public mode: the public view decides).
                        declared = {_client_id_for_identity(tx, i) for i in adds}
                        new_members |= owners & declared
                self._set_roster_ids(tx, group_id, new_members)
            elif public is not None:
                tx.execute(
                    "UPDATE groups SET public_state = ? WHERE group_id = ?",
                    (serialize_public_group(public), group_id),
                )
        self.on_queued(notify)
        return int(seq)

    def leave_group(self, client: ClientInfo, group_id: bytes) -> None:
        """The caller leaves the delivery list of ``group_id`` (it processed the commit that
        removed it, or gives up the group). Nobody can take another member off the list by
        a claim the DS cannot check (RFC 9750 §8.4.1)."""
        with self.db.transaction() as tx:
            # Not on the list, or no such group: the same 404, so an outsider cannot probe
            # which group ids exist.
            if tx.lock_group(group_id) is None or client.id not in self._members(tx, group_id):
                raise NotFound("unknown group")
            tx.execute(
                "DELETE FROM group_members WHERE group_id = ? AND client_id = ?",
                (group_id, client.id),
            )

    def _set_roster_ids(self, tx: Tx, group_id: bytes, client_ids: set[str]) -> None:
        tx.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
        for cid in client_ids:
            tx.execute(
                "INSERT INTO group_members (group_id, client_id) VALUES (?, ?)", (group_id, cid)
            )

    def _release_welcome(
        self, tx: Tx, group_id: bytes, epoch: int, welcome: bytes, notify: set[str]
    ) -> set[str]:
        """Queue the Welcome for the owners of the KeyPackages it names; returns them."""
        msg = _decode(welcome)
        if msg.welcome is None:
            raise BadRequest("expected MLSMessage(Welcome)")
        owners: set[str] = set()
        for entry in msg.welcome.secrets:
            rows = tx.execute("SELECT owner FROM key_packages WHERE ref = ?", (entry.new_member,))
            if rows:
                owners.add(str(rows[0][0]))
        if not owners:
            return owners
        seq = tx.insert_returning_seq(
            "INSERT INTO messages (group_id, epoch, kind, sender, data, created) "
            "VALUES (?, ?, 'welcome', '', ?, ?)",
            (group_id, epoch, welcome, self.clock()),
        )
        for owner in owners:
            tx.execute("INSERT INTO queue (client_id, seq) VALUES (?, ?)", (owner, seq))
        notify |= owners
        return owners

    # --- Queues -------------------------------------------------------------------------

    def fetch(self, client: ClientInfo, after: int = 0, limit: int = 500) -> list[QueuedMessage]:
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT m.seq, m.kind, m.group_id, m.epoch, m.data FROM queue q "
                "JOIN messages m ON m.seq = q.seq WHERE q.client_id = ? AND q.seq > ? "
                "ORDER BY q.seq LIMIT ?",
                (client.id, after, limit),
            )
        return [
            QueuedMessage(
                int(r[0]),
                "welcome" if r[1] == "welcome" else "message",
                bytes(r[2]),
                int(r[3]),
                bytes(r[4]),
            )
            for r in rows
        ]

    def ack(self, client: ClientInfo, seqs: Sequence[int]) -> None:
        """Drop acknowledged messages from the client's queue (idempotent)."""
        with self.db.transaction() as tx:
            for seq in seqs:
                tx.execute("DELETE FROM queue WHERE client_id = ? AND seq = ?", (client.id, seq))


def _decode(data: bytes) -> MLSMessage:
    try:
        msg = decode_all(data, MLSMessage.decode_from, "MLSMessage")
    except DecodeError as exc:
        raise BadRequest(f"malformed MLS message: {exc}") from None
    if msg.version != 1:
        raise BadRequest("unsupported protocol version")
    return msg


def _client_id_for_identity(tx: Tx, identity: bytes) -> str:
    rows = tx.execute("SELECT id FROM clients WHERE identity = ?", (identity,))
    return str(rows[0][0]) if rows else ""


__all__ = [
    "CHALLENGE_LABEL",
    "CHALLENGE_TTL",
    "TOKEN_TTL",
    "BadRequest",
    "ClientInfo",
    "Conflict",
    "DSError",
    "DeliveryService",
    "Forbidden",
    "NotFound",
    "QueuedMessage",
    "RateLimited",
    "TooLarge",
    "Unauthorized",
]


def _expired(key_package: bytes, now: float) -> bool:
    """Whether a stored KeyPackage's lifetime (§7.2) has ended."""
    kp = MLSMessage.decode(key_package).key_package
    lifetime = kp.leaf_node.lifetime if kp is not None else None
    return lifetime is not None and now > lifetime.not_after
