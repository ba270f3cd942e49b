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

What is kept, and for how long, is ``retention.py``'s (``sweep`` runs it periodically); what
one user may keep is ``quotas.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlspy.codec import decode_all
from mlspy.ds import quotas, retention
from mlspy.ds.accounts import (
    CHALLENGE_LABEL,
    CHALLENGE_TTL,
    TOKEN_TTL,
    AuthenticationService,
    ClientInfo,
    RegistryValidator,
    client_id_of,
)
from mlspy.ds.bounds import (
    MAX_STORED,
    SPARSE_FLOOR,
    check_tree_shape,
    check_u16,
    storable,
)
from mlspy.ds.db import Tx
from mlspy.ds.devices import account_of
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
from mlspy.ds.metrics import note_submission
from mlspy.ds.queues import QueuedMessage, enqueue, queued
from mlspy.errors import DecodeError, MLSError, ValidationError
from mlspy.group import (
    GroupConfig,
    Joins,
    Member,
    key_package_ref,
    policy_in,
    validate_key_package,
)
from mlspy.group.public_group import (
    PublicGroup,
    PublicStagedCommit,
    deserialize_public_group,
    serialize_public_group,
)
from mlspy.messages import (
    Add,
    ContentType,
    Extension,
    GroupInfo,
    LastResort,
    MLSMessage,
    decode_ratchet_tree,
)
from mlspy.messages import RatchetTree as RatchetTreeExtension

# The largest message, Welcome or GroupInfo taken (``mlspy serve``'s ``max_message``). 4 MiB:
# a 1,000-member group's Welcome or commit in the post-quantum suites with Ed25519 is about
# 1.4-1.7 MB (``docs/bench/bench_pq.txt``); with ML-DSA-87 a Welcome carries 8 kB per member
# (a 256-member one is 2.1 MB) — raise it for larger ML-DSA groups.
MAX_MESSAGE = 4 << 20


@dataclass
class DeliveryService(AuthenticationService):
    """The Delivery Service (RFC 9750 §5) on the AS's database.

    Retention (``retention.py``): a message goes once every recipient acknowledged it;
    ``retention`` seconds (default 30 days) after it was accepted, it goes even if some never
    did, as do claimed KeyPackages; KeyPackages go when their lifetime ends; a group goes
    when nobody is left on its delivery list, or after ``group_retention`` seconds (default
    a year) without an accepted message. ``sweep()`` deletes what is due, in batches of
    ``sweep_batch`` rows; the operator's server calls it periodically.

    Quotas per user, across its devices (``quotas.py``): ``quota_bytes`` stored bytes of
    messages it sent not yet delivered to everyone (default 64 MiB, then 429),
    ``quota_groups`` groups it created that still exist (default 1000, then 413),
    ``quota_key_packages`` unclaimed KeyPackages (default 1000, then 413)."""

    max_message: int = MAX_MESSAGE
    retention: float = 30 * 86400.0
    group_retention: float = 365 * 86400.0
    sweep_batch: int = 1000
    quota_bytes: int = quotas.QUOTA_BYTES
    quota_groups: int = quotas.QUOTA_GROUPS
    quota_key_packages: int = quotas.QUOTA_KEY_PACKAGES
    # KeyPackages are a protected resource (RFC 9750 §8.4.3): within ``claim_window`` seconds
    # one claimer gets at most ``claims_per_target`` of one user's KeyPackages and
    # ``claims_per_claimer`` in all (more is 429); past ``claims_per_owner`` claims of one
    # user from everyone, only the last-resort KeyPackage is handed out, so a crowd cannot
    # drain a pool while its owner stays reachable.
    claim_window: float = 3600.0
    claims_per_target: int = 10
    claims_per_claimer: int = 500
    claims_per_owner: int = 100
    # A commit the members reject can be undone (``reject_commit``); an outsider whose
    # external commit was undone may not commit externally again within
    # ``rejection_window`` seconds, and one member may have at most
    # ``rejections_per_reporter`` commits undone per group within it.
    rejection_window: float = 3600.0
    rejections_per_reporter: int = 5
    # Called after a commit with the client ids that have new queued messages.
    on_queued: Callable[[set[str]], None] = lambda _: None

    # --- KeyPackage directory (RFC 9750 §5.1) --------------------------------------

    def _wake(self, client_ids: set[str]) -> None:
        self.on_queued(client_ids)

    def claim_user_key_packages(
        self, claimer: ClientInfo, user: bytes, cipher_suite: int
    ) -> list[bytes]:
        """One KeyPackage of every device of ``user`` (each claim as ``claim_key_package``);
        devices with none left are skipped. 404 when the user has no device."""
        check_u16(cipher_suite, "cipher_suite")
        with self.db.transaction() as tx:
            devices = self._device_ids(tx, user)
        if not devices:
            raise NotFound("no user with this name")
        out = []
        for _, identity in devices:
            try:
                out.append(self.claim_key_package(claimer, identity, cipher_suite))
            except NotFound:
                continue
        if not out:
            raise NotFound("no KeyPackage left for this user's devices and cipher suite")
        return out

    def upload_key_packages(self, client: ClientInfo, messages: Sequence[bytes]) -> int:
        rows = []
        ends: list[int | None] = []
        now = int(self.clock())
        for data in messages:
            self._check_size(data)
            msg = _decode(data)
            kp = msg.key_package
            if kp is None:
                raise BadRequest("expected MLSMessage(KeyPackage)")
            self.check_suite(kp.cipher_suite)
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
            ends.append(kp.leaf_node.lifetime.not_after if kp.leaf_node.lifetime else None)
        with self.db.transaction() as tx:
            # Uploading again what the DS has (a client whose answer was lost, or that
            # crashed before noting it) changes nothing: a claimed KeyPackage never
            # becomes claimable again, a retired last-resort one never current again.
            fresh: dict[bytes, tuple[tuple[Any, ...], int | None]] = {}
            for row, end in zip(rows, ends, strict=True):
                if not tx.execute("SELECT 1 FROM key_packages WHERE ref = ?", (row[0],)):
                    fresh.setdefault(row[0], (row, end))
            quotas.check_key_packages(
                tx, account_of(client.identity), len(fresh), self.quota_key_packages
            )
            for row, end in fresh.values():
                _note_key_package(tx, row[0], now, end)
                if row[4]:
                    # A new last-resort KeyPackage replaces the previous one, which is retired
                    # (2), not deleted: it may have been claimed already, and its row is how
                    # a Welcome for it finds its owner.
                    tx.execute(
                        "UPDATE key_packages SET last_resort = 2 WHERE owner = ? AND "
                        "cipher_suite = ? AND last_resort = 1",
                        (row[1], row[2]),
                    )
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
        check_u16(cipher_suite, "cipher_suite")
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
                    tx.execute("DELETE FROM key_package_times WHERE ref = ?", (rows[0][0],))
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
        check_u16(cipher_suite, "cipher_suite")
        with self.db.read() as tx:
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
        # The tree's shape is checked before any work proportional to its width, and before
        # the transaction (the validation below runs inside one, for the AS's registry).
        gi = _checked_group_info(group_info, ratchet_tree)
        self.check_suite(gi.group_context.cipher_suite)
        try:
            with self.db.transaction() as tx:
                public = PublicGroup.from_group_info(
                    gi, ratchet_tree=ratchet_tree, config=self._group_config(tx)
                )
        except MLSError as exc:
            raise BadRequest(f"invalid GroupInfo: {exc}") from exc
        members = {m.signature_key for m in public.members()}
        if client.signature_key not in members:
            raise Forbidden("you are not a member of this group")
        if public.epoch >= MAX_STORED:
            # The epoch is a uint64 (RFC 9420 §6) but this DS stores signed 64-bit integers,
            # and a group must be able to advance by a commit (which stores epoch + 1).
            raise BadRequest(
                f"the GroupInfo's epoch {public.epoch} is beyond what this Delivery Service "
                f"keeps (below {MAX_STORED}): start the group from a lower epoch"
            )
        # Who may join from outside: the group's membership policy when it has one (it then
        # follows every commit), else what the creator declares.
        openness = _openness(public.context.extensions, "external" if external_joins else "")
        mode = ("private" if encrypted_handshakes else "public") + (
            f"+{openness}" if openness else ""
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
            account = account_of(client.identity)
            quotas.check_groups(tx, account, self.quota_groups)
            tx.execute(
                "INSERT INTO group_meta (group_id, account, active) VALUES (?, ?, ?)",
                (public.group_id, account, self.clock()),
            )
            self._set_roster(tx, public.group_id, members)
        return public.epoch

    def _set_roster(self, tx: Tx, group_id: bytes, signature_keys: set[bytes]) -> None:
        tx.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
        for client_id in _current_ids(tx, {client_id_of(key) for key in signature_keys}):
            tx.execute(
                "INSERT INTO group_members (group_id, client_id) VALUES (?, ?)",
                (group_id, client_id),
            )

    def _members(self, tx: Tx, group_id: bytes) -> set[str]:
        rows = tx.execute("SELECT client_id FROM group_members WHERE group_id = ?", (group_id,))
        return {str(r[0]) for r in rows}

    def group_info(self, client: ClientInfo, group_id: bytes) -> bytes:
        """The latest GroupInfo, for the group's members, and for anyone when the group is
        open to external joins. It names every member, so a closed group's is not shown to
        outsiders, who get the same 404 as for a group that does not exist."""
        with self.db.read() as tx:
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
        h = _header(msg)
        note_submission(h.kind)  # metrics: accepted and refused submissions by kind
        if h.group_id != group_id:
            raise BadRequest("the message is for another group")
        if group_info is not None:
            # Stored, and loaded by the DS to judge external commits: the same bound.
            _checked_group_info(group_info, None)
        notify: set[str] = set()
        with self.db.transaction() as tx:
            row = tx.lock_group(group_id)
            if row is None:
                raise NotFound("unknown group")
            g = _GroupRow(int(row[0]), str(row[1]), row[2], row[3])
            members = self._members(tx, group_id)
            if h.is_commit and h.epoch < g.epoch:
                again = self._accepted_again(tx, client, group_id, h.epoch, message)
                if again is not None:
                    return again
            if client.id not in members:
                self._check_outsider(tx, client, group_id, msg, h, g)
            _check_epoch(tx, group_id, h, g.epoch)
            if h.is_commit and g.epoch >= MAX_STORED:
                raise BadRequest(
                    f"the group is at epoch {g.epoch}, the last this Delivery Service keeps "
                    "(epochs are uint64, RFC 9420 §6; it stores signed 64-bit integers): no "
                    "commit can follow — start a new group (e.g. by reinitialization, §11.2)"
                )
            account = account_of(client.identity)
            charged = len(message) + len(welcome or b"")
            quotas.charge_bytes(tx, account, charged, self.quota_bytes)
            new_members = set(members)
            public: PublicGroup | None = None
            openness = g.openness
            if g.mode == "public" and h.content_type != ContentType.application:
                public = self._judge_public(tx, msg, bytes(g.public_state))
                if h.is_commit:
                    new_members = _current_ids(
                        tx, {client_id_of(m.signature_key) for m in public.members()}
                    )
                    openness = _openness(public.context.extensions, openness)
            elif h.external:
                # Encrypted handshakes, but external commits are PublicMessages: judge them
                # with the public state the members last published (their GroupInfo).
                view = self._judge_public_from_group_info(tx, msg, g)
                gone = _current_ids(tx, {client_id_of(m.signature_key) for m in view.removed})
                new_members = (members - gone) | {client.id}
            elif h.is_commit:
                new_members |= {_client_id_for_identity(tx, i) for i in adds} - {""}
                # A removal the committer declares cannot be verified in an encrypted group:
                # the member stays on the delivery list (it cannot read what follows if it
                # really was removed) until it confirms its removal (``leave_group``).
                if group_info is not None:
                    openness = _openness(_group_info_extensions(group_info), openness)
            seq = tx.insert_returning_seq(
                "INSERT INTO messages (group_id, epoch, kind, sender, data, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (group_id, h.epoch, h.kind, client.id, message, self.clock()),
            )
            quotas.record_message(tx, account, seq, len(message))
            recipients = members - {client.id}
            enqueue(tx, seq, h.kind, group_id, h.epoch, message, recipients)
            notify |= recipients
            self._touch(tx, group_id)
            if not h.is_commit and h.epoch == g.epoch:
                # Someone but the committer speaks in the new epoch, so members follow it:
                # the commit stands (``reject_commit``). Recorded now, as the message itself
                # is deleted once delivered.
                tx.execute(
                    "DELETE FROM group_undo WHERE group_id = ? AND committer != ?",
                    (group_id, client.id),
                )
            if not recipients:
                retention.forget_delivered(tx, [seq])
            if h.is_commit:
                retention.forget_old_commits(tx, group_id, h.epoch)
                self._keep_undo(tx, group_id, g, members, seq, client.id, h.external)
                tx.execute(
                    "UPDATE groups SET epoch = ?, mode = ?, public_state = ?, "
                    "group_info = COALESCE(?, group_info) WHERE group_id = ?",
                    (
                        g.epoch + 1,
                        g.mode + (f"+{openness}" if openness else ""),
                        serialize_public_group(public) if public is not None else g.public_state,
                        group_info,
                        group_id,
                    ),
                )
                if welcome is not None:
                    owners = self._release_welcome(
                        tx, group_id, g.epoch + 1, welcome, notify, account
                    )
                    if g.mode != "public":
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

    def _accepted_again(
        self, tx: Tx, client: ClientInfo, group_id: bytes, epoch: int, message: bytes
    ) -> int | None:
        """The sender retries a commit we accepted (its answer was lost): its sequence
        number, so it can merge instead of being wedged an epoch behind. Checked before
        membership: the sender may have been removed since."""
        accepted = tx.execute(
            "SELECT seq, sender, data FROM messages WHERE group_id = ? AND "
            "epoch = ? AND kind = 'commit'",
            (group_id, epoch),
        )
        if accepted and str(accepted[0][1]) == client.id and bytes(accepted[0][2]) == message:
            return int(accepted[0][0])
        return None

    def _check_outsider(
        self,
        tx: Tx,
        client: ClientInfo,
        group_id: bytes,
        msg: MLSMessage,
        h: _Header,
        g: _GroupRow,
    ) -> None:
        """What a client not on the delivery list may send, by the group's policy: an
        external commit into an open group, a request to join (a ``new_member_proposal``
        Add of its own KeyPackage) into a group that takes requests, an external sender's
        proposal; nothing else."""
        if h.external:
            if g.openness != "external":
                raise Forbidden("this group does not accept external joins from outsiders")
            if self._recently_rejected(tx, group_id, client.id):
                raise Forbidden(
                    "the members rejected your last external commit into this group: "
                    "try again later"
                )
            return
        if h.content_type == ContentType.proposal and h.sender_type == "new_member_proposal":
            if g.openness not in ("request", "external"):
                raise Forbidden("this group does not take requests to join")
            self._record_request(tx, client, msg)
            return
        if h.content_type == ContentType.proposal and h.sender_type == "external":
            return
        raise Forbidden("you are not a member of this group")

    def _record_request(self, tx: Tx, client: ClientInfo, msg: MLSMessage) -> None:
        """A request to join names the requester's own KeyPackage; keep it (as claimed) so
        the Welcome that admits them finds its owner."""
        pm = msg.public_message
        proposal = pm.content.proposal if pm is not None else None
        body = proposal.body if proposal is not None else None
        if not isinstance(body, Add):
            raise BadRequest("a request to join is an Add proposal")
        kp = body.key_package
        if kp.leaf_node.signature_key != client.signature_key:
            raise Forbidden("a request to join must add your own KeyPackage")
        ref = key_package_ref(kp)
        tx.execute("DELETE FROM key_packages WHERE ref = ?", (ref,))
        tx.execute(
            "INSERT INTO key_packages (ref, owner, cipher_suite, data, last_resort, claimed) "
            "VALUES (?, ?, ?, ?, 0, 1)",
            (ref, client.id, kp.cipher_suite, MLSMessage.wrap(kp).encode()),
        )
        lifetime = kp.leaf_node.lifetime
        _note_key_package(tx, ref, self.clock(), lifetime.not_after if lifetime else None)

    def _judge_public(self, tx: Tx, msg: MLSMessage, public_state: bytes) -> PublicGroup:
        """Run a handshake through the group's public view; returns it, merged."""
        if msg.public_message is None:
            raise BadRequest("this group's handshakes must be PublicMessages")
        public = deserialize_public_group(public_state, config=self._group_config(tx))
        try:
            event = public.process(msg)
        except MLSError as exc:
            raise BadRequest(f"rejected: {exc}") from None
        if isinstance(event, PublicStagedCommit):
            public.merge(event)
        return public

    def _judge_public_from_group_info(self, tx: Tx, msg: MLSMessage, g: _GroupRow) -> _ExternalJoin:
        """An external commit into an encrypted-handshake group, judged against the latest
        GroupInfo its members published (they send one with every commit)."""
        if g.group_info is None:
            raise Conflict("no current GroupInfo for this group: ask a member", epoch=g.epoch)
        try:
            view = PublicGroup.from_group_info(bytes(g.group_info), config=self._group_config(tx))
        except MLSError as exc:
            raise Conflict(f"the group's published GroupInfo is unusable: {exc}") from None
        if view.epoch != g.epoch:
            raise Conflict("no current GroupInfo for this group: ask a member", epoch=g.epoch)
        try:
            staged = view.process(msg)
        except MLSError as exc:
            raise BadRequest(f"rejected: {exc}") from None
        if not isinstance(staged, PublicStagedCommit):  # pragma: no cover - a commit
            raise BadRequest("expected a commit")
        removed = [m for m in view.members() if m.leaf_index in staged.applied.removed]
        return _ExternalJoin(removed)

    def _keep_undo(
        self,
        tx: Tx,
        group_id: bytes,
        g: _GroupRow,
        members: set[str],
        seq: int,
        committer: str,
        external: bool,
    ) -> None:
        """Remember the group as it was before this commit, for ``reject_commit``."""
        tx.execute("DELETE FROM group_undo WHERE group_id = ?", (group_id,))
        tx.execute(
            "INSERT INTO group_undo (group_id, epoch, mode, public_state, group_info, roster, "
            "commit_seq, committer, external) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                group_id,
                g.epoch,
                g.stored_mode,
                g.public_state,
                g.group_info,
                ",".join(sorted(members)),
                seq,
                committer,
                int(external),
            ),
        )

    def _recently_rejected(self, tx: Tx, group_id: bytes, committer: str) -> bool:
        rows = tx.execute(
            "SELECT 1 FROM rejected_commits WHERE group_id = ? AND committer = ? AND "
            "external = 1 AND created > ? LIMIT 1",
            (group_id, committer, self.clock() - self.rejection_window),
        )
        return bool(rows)

    def reject_commit(self, client: ClientInfo, group_id: bytes, epoch: int) -> int:
        """A member reports that it rejected the commit that ended ``epoch`` (a check only
        members can make failed: confirmation tag, path secrets, a credential the AS does not
        bind in an encrypted group, the group's policy). While nobody but the committer has
        spoken in the new epoch — so no member showed it could follow — the DS undoes the
        commit: the group is back at ``epoch`` with its old delivery list, the commit, its
        Welcome and what its committer sent since are withdrawn, and every client concerned
        gets a "rollback" notice. An outsider whose external commit was undone may not
        commit externally into the group for ``rejection_window`` seconds. Returns the
        notice's sequence number."""
        notify: set[str] = set()
        with self.db.transaction() as tx:
            row = tx.lock_group(group_id)
            undo = tx.execute(
                "SELECT epoch, mode, public_state, group_info, roster, commit_seq, committer, "
                "external FROM group_undo WHERE group_id = ?",
                (group_id,),
            )
            old_roster = set(str(undo[0][4]).split(",")) - {""} if undo else set()
            if row is None or client.id not in old_roster | self._members(tx, group_id):
                raise NotFound("unknown group")
            current = int(row[0])
            if not undo and current == epoch + 1:
                raise Conflict(
                    f"the commit that ended epoch {epoch} stands: members already speak in the "
                    "new epoch (or it was undone already)",
                    epoch=current,
                )
            if not undo or int(undo[0][0]) != epoch or current != epoch + 1:
                raise Conflict(
                    f"the commit that ended epoch {epoch} can no longer be undone: the group "
                    f"is at epoch {current}",
                    epoch=current,
                )
            committer = str(undo[0][6])
            if client.id not in old_roster:
                raise Forbidden("only members of the epoch the commit ended may reject it")
            if client.id == committer:
                raise Forbidden("a member cannot reject its own commit")
            spoken = tx.execute(
                "SELECT 1 FROM messages WHERE group_id = ? AND epoch = ? AND kind != 'welcome' "
                "AND sender != ? LIMIT 1",
                (group_id, current, committer),
            )
            if spoken:
                raise Conflict(
                    "members already speak in the new epoch: the commit stands", epoch=current
                )
            reports = tx.execute(
                "SELECT COUNT(*) FROM rejected_commits WHERE group_id = ? AND reporter = ? "
                "AND created > ?",
                (group_id, client.id, self.clock() - self.rejection_window),
            )
            if int(reports[0][0]) >= self.rejections_per_reporter:
                raise RateLimited("too many rejected commits reported: try again later")
            everyone = old_roster | self._members(tx, group_id)
            withdrawn = tx.execute(
                "SELECT seq FROM messages WHERE group_id = ? AND (seq = ? OR epoch = ?)",
                (group_id, int(undo[0][5]), current),
            )
            retention.forget_messages(tx, [int(r[0]) for r in withdrawn])
            tx.execute(
                "UPDATE groups SET epoch = ?, mode = ?, public_state = ?, group_info = ? "
                "WHERE group_id = ?",
                (epoch, undo[0][1], undo[0][2], undo[0][3], group_id),
            )
            self._set_roster_ids(tx, group_id, old_roster)
            tx.execute("DELETE FROM group_undo WHERE group_id = ?", (group_id,))
            tx.execute(
                "INSERT INTO rejected_commits (group_id, epoch, committer, reporter, external, "
                "created) VALUES (?, ?, ?, ?, ?, ?)",
                (group_id, epoch, committer, client.id, int(undo[0][7]), self.clock()),
            )
            seq = tx.insert_returning_seq(
                "INSERT INTO messages (group_id, epoch, kind, sender, data, created) "
                "VALUES (?, ?, 'rollback', ?, ?, ?)",
                (group_id, epoch, client.id, b"", self.clock()),
            )
            enqueue(tx, seq, "rollback", group_id, epoch, b"", everyone)
            notify |= everyone
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
            # The last one out: the group goes (``retention.py``).
            retention.drop_if_empty(tx, group_id)

    def _set_roster_ids(self, tx: Tx, group_id: bytes, client_ids: set[str]) -> None:
        tx.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
        for cid in client_ids:
            tx.execute(
                "INSERT INTO group_members (group_id, client_id) VALUES (?, ?)", (group_id, cid)
            )

    def _release_welcome(
        self,
        tx: Tx,
        group_id: bytes,
        epoch: int,
        welcome: bytes,
        notify: set[str],
        account: bytes,
    ) -> set[str]:
        """Queue the Welcome for the owners of the KeyPackages it names; returns them. Its
        bytes weigh on the committer's quota (``account``) while it is stored."""
        msg = _decode(welcome)
        if msg.welcome is None:
            raise BadRequest("expected MLSMessage(Welcome)")
        owners: set[str] = set()
        for entry in msg.welcome.secrets:
            rows = tx.execute("SELECT owner FROM key_packages WHERE ref = ?", (entry.new_member,))
            if rows:
                owners.add(str(rows[0][0]))
        if not owners:
            quotas.credit_bytes(tx, account, len(welcome))  # charged, but not stored
            return owners
        seq = tx.insert_returning_seq(
            "INSERT INTO messages (group_id, epoch, kind, sender, data, created) "
            "VALUES (?, ?, 'welcome', '', ?, ?)",
            (group_id, epoch, welcome, self.clock()),
        )
        quotas.record_message(tx, account, seq, len(welcome))
        enqueue(tx, seq, "welcome", group_id, epoch, welcome, owners)
        notify |= owners
        return owners

    # --- Queues -------------------------------------------------------------------------

    def fetch(self, client: ClientInfo, after: int = 0, limit: int = 500) -> list[QueuedMessage]:
        if not storable(after):
            raise BadRequest(f"after must be a sequence number (at most {MAX_STORED})")
        return self._read_queue(client.id, after, limit)

    def fetch_many(
        self, afters: Mapping[str, int], limit: int = 500
    ) -> dict[str, list[QueuedMessage]]:
        """:meth:`fetch` for many clients (client id → the seq after which to read) at once:
        the sockets of a node woken together. On PostgreSQL one statement (a lateral join,
        ``limit`` per client), where one read per socket costs a thread hand-off and a round
        trip each."""
        for after in afters.values():
            if not storable(after):
                raise BadRequest(f"after must be a sequence number (at most {MAX_STORED})")
        found: dict[str, list[QueuedMessage]] = {cid: [] for cid in afters}
        if not afters:
            return found
        if self.db.dialect != "postgresql":
            for cid, after in afters.items():
                found[cid] = self._read_queue(cid, after, limit)
            return found
        ids = list(afters)
        rows = self.db.query(
            "SELECT c.id, m.seq, m.kind, m.group_id, m.epoch, m.data "
            "FROM unnest(?::text[], ?::bigint[]) AS c(id, after) CROSS JOIN LATERAL ("
            "SELECT m.seq, m.kind, m.group_id, m.epoch, m.data FROM queue q "
            "JOIN messages m ON m.seq = q.seq WHERE q.client_id = c.id AND q.seq > c.after "
            "ORDER BY q.seq LIMIT ?) m ORDER BY c.id, m.seq",
            (ids, [afters[c] for c in ids], limit),
        )
        for r in rows:
            found[str(r[0])].append(queued(r[1:]))
        return found

    def _read_queue(self, client_id: str, after: int, limit: int) -> list[QueuedMessage]:
        """The queue of ``client_id`` after ``after``, at most ``limit`` messages."""
        rows = self.db.query(
            "SELECT m.seq, m.kind, m.group_id, m.epoch, m.data FROM queue q "
            "JOIN messages m ON m.seq = q.seq WHERE q.client_id = ? AND q.seq > ? "
            "ORDER BY q.seq LIMIT ?",
            (client_id, after, limit),
        )
        return [queued(r) for r in rows]

    def ack(self, client: ClientInfo, seqs: Sequence[int]) -> None:
        """Drop acknowledged messages from the client's queue (idempotent); a message every
        recipient acknowledged is deleted in the same transaction (``retention.py``)."""
        self.ack_many({client.id: seqs})

    def ack_many(self, acks: Mapping[str, Sequence[int]]) -> None:
        """:meth:`ack` for many clients (client id → seqs) in one transaction: the acks of
        every WebSocket of a node, gathered while the previous batch was written."""
        for seqs in acks.values():
            for seq in seqs:
                if isinstance(seq, bool) or not storable(seq):
                    raise BadRequest(f"seqs must be sequence numbers (at most {MAX_STORED})")
        with self.db.transaction() as tx:
            # In one order everywhere: two nodes deleting rows of the same client (its sockets
            # on both) then lock them in the same order, never in a deadlock.
            tx.executemany(
                "DELETE FROM queue WHERE client_id = ? AND seq = ?",
                sorted((client_id, seq) for client_id, seqs in acks.items() for seq in seqs),
            )
            retention.forget_delivered(tx, [seq for seqs in acks.values() for seq in seqs])

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """Delete what retention says is due (``retention.py``); returns rows deleted per
        kind. Each batch of ``sweep_batch`` rows is its own short transaction."""
        now = self.clock() if now is None else now
        steps = retention.steps(
            dialect=self.db.dialect,
            retention=self.retention,
            group_retention=self.group_retention,
            claim_window=self.claim_window,
            rejection_window=self.rejection_window,
        )
        done: dict[str, int] = {}
        for kind, step in steps.items():
            done[kind] = 0
            while True:
                with self.db.transaction() as tx:
                    n = step(tx, now, self.sweep_batch)
                done[kind] += n
                if n < self.sweep_batch:
                    break
        return done

    def _touch(self, tx: Tx, group_id: bytes) -> None:
        """The group is active (its lifetime, ``group_retention``): written at most once an
        hour per group, so the hot path rarely writes for it."""
        now = self.clock()
        tx.execute(
            "UPDATE group_meta SET active = ? WHERE group_id = ? AND active < ?",
            (now, group_id, now - 3600.0),
        )


@dataclass(frozen=True)
class _Header:
    """What the DS reads of a message without keys."""

    group_id: bytes
    epoch: int
    content_type: ContentType
    sender_type: str | None  # PublicMessages only

    @property
    def is_commit(self) -> bool:
        return self.content_type == ContentType.commit

    @property
    def external(self) -> bool:
        return self.is_commit and self.sender_type == "new_member_commit"

    @property
    def kind(self) -> str:
        if self.is_commit:
            return "commit"
        return "proposal" if self.content_type == ContentType.proposal else "application"


def _header(msg: MLSMessage) -> _Header:
    if msg.public_message is not None:
        fc = msg.public_message.content
        return _Header(fc.group_id, fc.epoch, fc.content_type, fc.sender.sender_type.name)
    pm = msg.private_message
    if pm is None:
        raise BadRequest("expected a PublicMessage or PrivateMessage")
    return _Header(pm.group_id, pm.epoch, pm.content_type, None)


@dataclass(frozen=True)
class _GroupRow:
    epoch: int
    stored_mode: str  # "public" | "private", then "+request" or "+external" by policy
    public_state: Any
    group_info: Any

    @property
    def mode(self) -> str:
        return self.stored_mode.partition("+")[0]

    @property
    def openness(self) -> str:
        return self.stored_mode.partition("+")[2]


@dataclass(frozen=True)
class _ExternalJoin:
    removed: list[Member]


def _check_epoch(tx: Tx, group_id: bytes, h: _Header, current: int) -> None:
    """Handshakes must be for the current epoch; application messages not for a later one."""
    if h.content_type != ContentType.application and h.epoch != current:
        if h.is_commit and h.epoch < current:
            winner = tx.execute(
                "SELECT seq FROM messages WHERE group_id = ? AND epoch = ? AND kind = 'commit'",
                (group_id, h.epoch),
            )
            raise Conflict(
                f"epoch {h.epoch} already has a commit; the group is at epoch {current}",
                epoch=current,
                winner=int(winner[0][0]) if winner else None,
            )
        raise Conflict(f"the group is at epoch {current}, not {h.epoch}", epoch=current)
    if h.content_type == ContentType.application and h.epoch > current:
        raise Conflict(f"the group is at epoch {current}, not {h.epoch}", epoch=current)


_OPENNESS = {Joins.invite: "", Joins.request: "request", Joins.open: "external"}


def _openness(extensions: Sequence[Extension], fallback: str) -> str:
    """How outsiders may join, by the group's membership policy ("" invite only,
    "request", "external"); a group without a policy keeps what its creator declared."""
    try:
        policy = policy_in(extensions)
    except MLSError as exc:
        raise BadRequest(f"invalid membership policy: {exc}") from None
    return fallback if policy is None else _OPENNESS[policy.joins]


def _checked_group_info(group_info: bytes, ratchet_tree: bytes | None) -> GroupInfo:
    """The GroupInfo, decoded, its ratchet tree (inside or out of band) within the bound."""
    try:
        gi = _decode(group_info).group_info
    except BadRequest as exc:
        raise BadRequest(f"invalid GroupInfo: {exc.message}") from None
    if gi is None:
        raise BadRequest("invalid GroupInfo: expected MLSMessage(GroupInfo)")
    try:
        ext = RatchetTreeExtension.find_in(gi.extensions)
        if ext is not None:
            check_tree_shape(ext.ratchet_tree)
        elif ratchet_tree is not None:
            check_tree_shape(decode_ratchet_tree(ratchet_tree))
    except MLSError as exc:
        raise BadRequest(f"invalid GroupInfo: {exc}") from None
    return gi


def _group_info_extensions(group_info: bytes) -> tuple[Extension, ...]:
    gi = _decode(group_info).group_info
    if gi is None:
        raise BadRequest("expected MLSMessage(GroupInfo)")
    return gi.group_context.extensions


def _current_ids(tx: Tx, client_ids: set[str]) -> set[str]:
    """Client ids as they are now: a device that rotated its key has a new id, though its
    leaves keep the old key until it commits the new one (``AuthenticationService.rotate_key``)."""
    ids = sorted(client_ids)
    aliases: dict[str, str] = {}
    for start in range(0, len(ids), 500):  # one query per 500 members, not one per member
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = tx.execute(
            f"SELECT old_id, new_id FROM client_aliases WHERE old_id IN ({marks})", chunk
        )
        aliases.update((str(r[0]), str(r[1])) for r in rows)
    return {aliases.get(cid, cid) for cid in ids}


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
    "MAX_STORED",
    "SPARSE_FLOOR",
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


def _note_key_package(tx: Tx, ref: bytes, now: float, not_after: int | None) -> None:
    """When a KeyPackage was stored and when its lifetime ends, for the sweep."""
    tx.execute(
        "INSERT INTO key_package_times (ref, created, expires) VALUES (?, ?, ?) "
        "ON CONFLICT (ref) DO NOTHING",
        (ref, now, float(MAX_STORED if not_after is None else not_after)),
    )
