"""The client SDK: one :class:`Client` per device, talking to a Delivery Service.

Theory of operation. A client registers its identity with the Authentication Service, keeps a
pool of KeyPackages on the DS (topping it up and replacing a used last-resort one), and holds
its groups in a :class:`~mlspy.storage.GroupStore`, so every state transition is durable. One
background task receives: it wakes on the DS's WebSocket push (and polls as a fallback),
fetches the queue in order, processes each message (joining from Welcomes, merging commits,
decrypting application messages), acknowledges, and emits :class:`Event` values on
:attr:`Client.events`.

The hard cases are handled here so applications need not: a commit that loses its epoch (409)
is dropped, the winning commit is processed, and the caller's intent is retried if it still
applies; a client that was offline catches up in order; a removal ends the group; a client that
lost a group's state rejoins by external commit, removing its stale leaf (RFC 9750 §6.6).

Proposals. A proposal (e.g. a member's request to leave) takes effect only when committed,
and until then a member may not send application messages (RFC 9420 §12.4). So when proposals
are pending, one member commits them: the lowest leaf not removed by them, as soon as it
receives them; and any member about to send commits them first, so an offline committer does
not stall the group.

Our own commits. The DS does not echo a sender's messages back, so the one way to learn that
our commit won is the DS's answer to the submission. If that answer is lost (a timeout, a
dropped connection, a crash), the commit may have been accepted while we still sit in the old
epoch, where every later message would be unusable. So a commit goes into an outbox in the
client's store, in the same write as the pending commit, before it is sent; it stays there
until the DS's answer is known. Transport failures are retried with the same bytes, and
whatever is left in the outbox is resubmitted before the next receive (also after a restart):
the DS answers an identical resubmission of an accepted commit with its original sequence
number, so we merge; a 409 means another commit won, so we drop ours and process the winner.
Once an attempt's fate is unknown, a refusal that comes before the DS looks at the commit (an
expired token, a rate limit, a server error) settles nothing: the commit stays in the outbox
and receiving waits, since every message after an accepted commit of ours needs it merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from mlspy.client.rules import DefaultRules, Rules
from mlspy.codec import Reader, Writer, decode_all
from mlspy.credentials import CredentialError, CredentialValidator
from mlspy.ds.client import (
    ASCredentialValidator,
    DSClient,
    DSConflict,
    DSRequestError,
    new_recovery_secret,
    recovery_hash,
)
from mlspy.errors import MLSError, UsageError
from mlspy.group import (
    ApplicationMessage,
    CommitOutput,
    Group,
    GroupConfig,
    Joins,
    MembershipPolicy,
    ProposalReceived,
    QueuedProposal,
    SigningIdentity,
    StagedCommit,
    create_key_package,
    join_external,
    new_member_add_proposal,
)
from mlspy.group.public_group import PublicGroup
from mlspy.messages import (
    Add,
    Capabilities,
    ContentType,
    Credential,
    KeyPackage,
    MLSMessage,
    Proposal,
    Remove,
    Sender,
    SenderType,
)
from mlspy.storage import GroupStore, MemoryStore, Store, StoredGroup, Write
from mlspy.storage.base import delete

COMMIT_RETRIES = 8
SUBMIT_ATTEMPTS = 3  # tries of one submission when the DS cannot be reached
# Refusals given before the DS looks at a commit: they say nothing of an earlier attempt.
_NOT_JUDGED = frozenset({401, 429})
OUTBOX = "outbox/"  # store key prefix: our commits whose fate the DS has not told us
PROCESSED = "processed"  # store key: queued messages processed but not yet acknowledged
RECOVERY = "recovery"  # store key: the recovery secret of our name (show it to the user)
RETIRED = "retired/"  # store key prefix: replaced last-resort KeyPackages, by ref -> when
# How long a replaced last-resort KeyPackage's private keys are kept: someone may have claimed
# it just before, and their Welcome still needs them. Then they go (forward secrecy, §16.8).
LAST_RESORT_GRACE = 3600.0


@dataclass(frozen=True)
class Event:
    """Something that happened in a group: ``kind`` is one of "message", "joined",
    "member_joined", "member_left", "epoch", "removed", and "join_request" (an outsider,
    ``sender``, asks to join: ``Client.approve`` lets them in)."""

    kind: str
    group_id: bytes
    epoch: int
    sender: str = ""
    text: str = ""
    members: tuple[str, ...] = ()


def _name(credential: Credential) -> str:
    return (credential.identity or b"?").decode(errors="replace")


def member_names(group: Group) -> tuple[str, ...]:
    return tuple(_name(m.credential) for m in group.members())


def _pending_removals(group: Group) -> set[int]:
    """Leaves that pending Remove proposals would remove."""
    return {
        int(q.proposal.body.removed)
        for q in group.pending_proposals
        if isinstance(q.proposal.body, Remove)
    }


def _outbox_key(group_id: bytes) -> str:
    return OUTBOX + group_id.hex()


def _encode_identity(identity: SigningIdentity) -> bytes:
    w = Writer()
    w.uint16(identity.cipher_suite)
    identity.credential.encode_to(w)
    w.opaque(identity.signature_private_key)
    w.opaque(identity.signature_key)
    identity.capabilities.encode_to(w)
    return w.getvalue()


def _decode_identity(data: bytes) -> SigningIdentity:
    def read(r: Reader) -> SigningIdentity:
        return SigningIdentity(
            r.uint16(),
            Credential.decode_from(r),
            r.opaque(),
            r.opaque(),
            Capabilities.decode_from(r),
        )

    return decode_all(data, read, "stored identity")


class _OwnOldLeaf:
    """While a recovered name rejoins: our own credential is accepted with the lost key
    too (its leaf is the one the external commit removes); everything else is validated
    as usual."""

    def __init__(self, config: GroupConfig, identity: SigningIdentity) -> None:
        assert config.credential_validator is not None
        self.usual: CredentialValidator = config.credential_validator
        self.credential = identity.credential

    def validate(self, credential: Credential, signature_key: bytes) -> None:
        try:
            self.usual.validate(credential, signature_key)
        except CredentialError:
            if credential != self.credential:
                raise


@dataclass(frozen=True)
class _Outgoing:
    """A commit on its way to the DS, with what is submitted alongside it."""

    commit: bytes
    welcome: bytes | None
    group_info: bytes | None

    def encode(self) -> bytes:
        w = Writer()
        w.opaque(self.commit)
        w.optional(self.welcome, Writer.opaque)
        w.optional(self.group_info, Writer.opaque)
        return w.getvalue()

    @staticmethod
    def decode(data: bytes) -> _Outgoing:
        return decode_all(
            data,
            lambda r: _Outgoing(r.opaque(), r.optional(Reader.opaque), r.optional(Reader.opaque)),
            "outbox entry",
        )


class Client:
    """A device: identity, KeyPackages, groups, and the receive loop."""

    def __init__(
        self,
        server: str,
        name: str,
        *,
        store: Store | None = None,
        cipher_suite: int = 1,
        key_packages: int = 3,
        config: GroupConfig | None = None,
        poll_interval: float = 1.0,
        verify: bool | str = True,
        last_resort_grace: float = LAST_RESORT_GRACE,
        rules: Rules | None = None,
        invite_code: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.name = name
        self.store = store or MemoryStore()
        self.groups = GroupStore(self.store)
        self.config = config or GroupConfig()
        self.pool_size = key_packages
        self.poll_interval = poll_interval
        self.last_resort_grace = last_resort_grace
        stored = self.store.get("identity")
        self.identity = (
            _decode_identity(stored.value)
            if stored is not None
            else SigningIdentity.generate(name.encode(), cipher_suite)
        )
        if stored is None:
            self.store.write({"identity": (_encode_identity(self.identity), None)})
        self.ds = DSClient(self.server, self.identity, verify=verify)
        # Every credential met — in a Welcome's tree, Adds, Updates, commit paths, external
        # joins — is checked against the Authentication Service (§5.3.1), unless the
        # application brings its own validator.
        if self.config.credential_validator is None:
            self.config = replace(self.config, credential_validator=ASCredentialValidator(self.ds))
        self.groups.credential_validator = self.config.credential_validator
        self.rules: Rules = rules or DefaultRules()
        # Names are accounts: the first registration may need an invite code (the server's
        # policy); the recovery secret made for the name is shown once (``start``, ``recover``).
        self.invite_code = invite_code
        self.new_recovery_secret: str | None = None
        # Outsiders' requests to join, by (group id, name): their KeyPackages; and those
        # the rules admit, to be added once the current receive is done.
        self._requests: dict[tuple[bytes, str], KeyPackage] = {}
        self._auto_approve: set[tuple[bytes, str]] = set()
        # Commits we rejected and reported, by group: (epoch they ended, committer's
        # signature key, or None for an outsider's external commit).
        self._rejected: dict[bytes, tuple[int, bytes | None]] = {}
        self._undone: dict[bytes, int] = {}  # groups the DS rolled back, to the epoch
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._committing = 0  # nesting depth of _commit_locked (no auto-commits inside one)
        self._replenish_due = False
        self._rotate_last_resort = False
        # Open handles on stored groups: loading a group decodes its whole state (O(n)), so
        # it is done once, not per message. Every change still goes through the handle to the
        # store before it returns.
        self._handles: dict[bytes, StoredGroup] = {}

    # --- Lifecycle ----------------------------------------------------------------------

    @property
    def recovery_secret(self) -> str | None:
        """The secret that recovers our name on a new device if this one is lost."""
        stored = self.store.get(RECOVERY)
        return stored.value.decode() if stored is not None else None

    async def start(self) -> None:
        """Register (first time: with ``invite_code`` where the server needs one, and the
        hash of a new recovery secret, then in ``new_recovery_secret`` for the application to
        show its user once) and log in, top up KeyPackages, start receiving."""
        secret = self.recovery_secret
        if secret is None:
            secret = new_recovery_secret()
            self.store.write({RECOVERY: (secret.encode(), None)})
        await asyncio.to_thread(
            functools.partial(
                self.ds.register,
                invite_code=self.invite_code,
                recovery_hash=recovery_hash(self.name.encode(), secret),
            )
        )
        if self.ds.recovery_set:
            self.new_recovery_secret = secret
        await asyncio.to_thread(self.ds.login)
        self._drop_unsent_commits()
        await self.replenish()
        await self.sync()
        self._task = asyncio.create_task(self._receive_loop())

    async def recover(self, secret: str) -> list[bytes]:
        """On a new device (a fresh store), instead of ``start``: take our name over with its
        recovery secret. The AS binds the name to this device's key (the lost key can no
        longer log in) and a new recovery secret replaces the old (``new_recovery_secret``:
        show it); the client rejoins, by external commits that remove the old leaf, the
        groups whose delivery lists held the name, then starts. Returns the groups rejoined."""
        previous = self.store.get(RECOVERY)
        fresh = new_recovery_secret()
        expected = previous.version if previous is not None else None
        # Kept before asking: if the answer is lost, the DS may hold the new secret's hash.
        version = self.store.write({RECOVERY: (fresh.encode(), expected)})
        name = self.name.encode()
        try:
            groups = await asyncio.to_thread(
                self.ds.recover, name, secret, recovery_hash(name, fresh)
            )
        except DSRequestError:
            old = previous.value if previous is not None else None
            self.store.write({RECOVERY: (old, version[RECOVERY])})
            raise
        self.new_recovery_secret = fresh
        await asyncio.to_thread(self.ds.login)
        # Our old leaf in each group has the lost key, which the AS no longer binds to our
        # name: accepted while rejoining (the external commit removes it), never after.
        usual = self.config
        self.config = replace(usual, credential_validator=_OwnOldLeaf(usual, self.identity))
        rejoined = []
        try:
            for gid in groups:
                with contextlib.suppress(MLSError, httpx.HTTPError):
                    await self.join_external(gid, resync=True)
                    rejoined.append(gid)
        finally:
            self.config = usual
            self._handles.clear()  # reloaded from the store, with the usual validator
        await self.start()
        return rejoined

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await asyncio.to_thread(self.ds.close)

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def next_event(self, timeout: float = 10.0) -> Event:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def iter_events(self) -> AsyncIterator[Event]:
        while True:
            yield await self.events.get()

    # --- KeyPackages ----------------------------------------------------------------

    async def replenish(self, *, rotate_last_resort: bool = False) -> None:
        """Keep ``pool_size`` unclaimed KeyPackages and one last-resort on the DS."""
        count, last_resort = await asyncio.to_thread(
            self.ds.count_key_packages, self.identity.cipher_suite
        )
        bundles = [create_key_package(self.identity) for _ in range(self.pool_size - count)]
        if not last_resort or rotate_last_resort:
            now = str(time.time()).encode()
            for old in self.groups.key_packages():
                key = RETIRED + old.ref().hex()
                if old.is_last_resort and self.store.get(key) is None:
                    self.store.write({key: (now, None)})
            bundles.append(create_key_package(self.identity, last_resort=True))
        if bundles:
            for b in bundles:
                self.groups.add_key_package(b)
            await asyncio.to_thread(self.ds.upload_key_packages, bundles)

    # --- Groups -----------------------------------------------------------------------

    def group(self, group_id: bytes) -> StoredGroup:
        handle = self._handles.get(group_id)
        if handle is None:
            handle = self._handles[group_id] = self.groups.load(group_id)
        return handle

    def _forget(self, group_id: bytes) -> None:
        self._handles.pop(group_id, None)
        with contextlib.suppress(MLSError):
            self.groups.delete_group(group_id)

    def group_ids(self) -> list[bytes]:
        return self.groups.group_ids()

    def members(self, group_id: bytes) -> tuple[str, ...]:
        return member_names(self.group(group_id).group)

    async def create_group(
        self, *, policy: MembershipPolicy | None = None, external_joins: bool = False
    ) -> bytes:
        """A new group on the DS, with its membership policy (default: invite only;
        ``external_joins`` is short for ``MembershipPolicy(Joins.open)``). The policy travels
        in the group (``mlspy.group.policy``): members change it only by commit."""
        if policy is None:
            policy = MembershipPolicy(Joins.open if external_joins else Joins.invite)
        stored = self.groups.create_group(
            self.identity, config=self.config, extensions=(policy.to_extension(),)
        )
        self._handles[stored.group.group_id] = stored
        await asyncio.to_thread(
            self.ds.create_group,
            stored.group.group_info(),
            external_joins=policy.joins == Joins.open,
        )
        return stored.group.group_id

    # --- What we commit by ourselves -------------------------------------------------

    def _admit(self, group: Group) -> Callable[[QueuedProposal], bool]:
        return lambda q: self.rules.admit(group, q)

    def _admitted(self, group: Group) -> list[QueuedProposal]:
        admit = self._admit(group)
        return [q for q in group.pending_proposals if admit(q)]

    def _pending_only(self, stored: StoredGroup) -> list[Proposal] | None:
        """A commit intent: just the admitted pending proposals (None once committed)."""
        return [] if self._admitted(stored.group) else None

    async def approve(self, group_id: bytes, user: str) -> bool:
        """Let in an outsider who asked to join (a ``join_request`` event): add the
        KeyPackage of their request. False when no request from ``user`` is known."""
        async with self._lock:
            return await self._approve_locked(group_id, user)

    async def _approve_locked(self, group_id: bytes, user: str) -> bool:
        kp = self._requests.pop((group_id, user), None)
        if kp is None:
            return False

        def add(stored: StoredGroup) -> list[Proposal] | None:
            return None if user in member_names(stored.group) else [Proposal(Add(kp))]

        await self._commit_locked(group_id, add)
        return True

    async def _on_join_request(self, gid: bytes, stored: StoredGroup, data: bytes) -> None:
        """An outsider asks to join. The request is judged as any proposal (the group's
        policy, the KeyPackage, the AS binding) but not cached: until the application
        approves it, it is not a proposal this member commits (RFC 9420 §12.1.8: external
        proposals that are not authorized are invalid), so it neither blocks our sending
        (§12.4) nor dies with the epoch; approval adds its KeyPackage by value."""
        state = stored.group.state
        epoch = state.epoch
        view = PublicGroup(
            epoch.context,
            epoch.tree,
            epoch.interim_transcript_hash,
            config=state.config,
            proposals=OrderedDict(state.proposals),
        )
        try:
            event = view.process(data)
        except MLSError:
            return
        if not isinstance(event, ProposalReceived) or not isinstance(event.proposal.body, Add):
            return
        kp = event.proposal.body.key_package
        name = _name(kp.leaf_node.credential)
        self._requests[(gid, name)] = kp
        await self.events.put(Event("join_request", gid, stored.group.epoch, sender=name))
        queued = QueuedProposal(event.proposal, Sender.new_member_proposal(), None)
        if self.rules.admit(stored.group, queued):
            self._auto_approve.add((gid, name))

    async def request_join(self, group_id: bytes) -> None:
        """Ask to join a group that takes requests: an Add of our own KeyPackage
        (``new_member_proposal``, §12.1.8); a member's approval brings a Welcome."""
        bundle = create_key_package(self.identity)
        self.groups.add_key_package(bundle)
        epoch = 0
        for _ in range(COMMIT_RETRIES):
            request = new_member_add_proposal(
                group_id, epoch, bundle.key_package, self.identity.signature_private_key
            )
            try:
                await asyncio.to_thread(self.ds.submit, group_id, request)
                return
            except DSConflict as exc:  # the group is at another epoch: ask again there
                if exc.epoch is None:
                    raise
                epoch = exc.epoch
        raise UsageError("could not submit a join request")

    async def _commit(
        self, group_id: bytes, make: Callable[[StoredGroup], list[Proposal] | None]
    ) -> CommitOutput | None:
        """Commit ``make(group)``'s proposals (and any pending ones); on a lost race process
        the winner and ask ``make`` again (it returns None when the intent no longer
        applies)."""
        async with self._lock:
            return await self._commit_locked(group_id, make)

    async def _commit_locked(
        self, group_id: bytes, make: Callable[[StoredGroup], list[Proposal] | None]
    ) -> CommitOutput | None:
        self._committing += 1
        try:
            for _ in range(COMMIT_RETRIES):
                stored = self.group(group_id)
                proposals = make(stored)
                if proposals is None:
                    return None
                out = stored.commit(
                    proposals,
                    admit=self._admit(stored.group),
                    also_write=self._outbox_entry(group_id),
                )
                outgoing = _Outgoing(out.commit, out.welcome, out.group_info)
                if await self._deliver(group_id, outgoing, known_fresh=True):
                    return out
                await self._sync_locked()
        finally:
            self._committing -= 1
        raise UsageError(f"could not win a commit after {COMMIT_RETRIES} races")

    # --- The outbox of our commits ----------------------------------------------------

    def _outbox_entry(self, group_id: bytes) -> Callable[[CommitOutput], dict[str, Write]]:
        """The outbox write for a commit, made in the same batch as its pending state."""
        key = _outbox_key(group_id)

        def write(out: CommitOutput) -> dict[str, Write]:
            stored = self.store.get(key)
            entry = _Outgoing(out.commit, out.welcome, out.group_info).encode()
            return {key: (entry, stored.version if stored else None)}

        return write

    def _outbox_drop(self, group_id: bytes) -> None:
        delete(self.store, _outbox_key(group_id))

    def _abandon(self, group_id: bytes) -> None:
        """Our commit never took effect: forget it, pending state and outbox entry."""
        self.group(group_id).clear_pending_commit()
        self._outbox_drop(group_id)

    async def _deliver(
        self, group_id: bytes, outgoing: _Outgoing, *, known_fresh: bool = False
    ) -> bool:
        """Submit our pending commit until the DS answers: True when it was accepted (now
        merged), False when another commit won (ours dropped). ``known_fresh``: no earlier
        attempt can have reached the DS. If the DS cannot be reached, or refuses an attempt
        whose predecessor's fate is unknown, the commit stays pending in the outbox and the
        error propagates."""
        uncertain = not known_fresh
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                await asyncio.to_thread(
                    self.ds.submit,
                    group_id,
                    outgoing.commit,
                    welcome=outgoing.welcome,
                    group_info=outgoing.group_info,
                )
                break
            except DSConflict:
                self._abandon(group_id)
                return False
            except DSRequestError as exc:
                if exc.status >= 500:
                    uncertain = True  # it may have been stored before the failure
                    if attempt == SUBMIT_ATTEMPTS - 1:
                        raise
                elif exc.status in _NOT_JUDGED and uncertain:
                    raise  # says nothing of the earlier attempt: keep it in the outbox
                else:
                    # The DS judged the commit (an accepted one it would have acknowledged
                    # again), or nothing went through before: it never took effect.
                    self._abandon(group_id)
                    raise
            except httpx.TransportError:
                uncertain = True
                if attempt == SUBMIT_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(0.1 * 2**attempt)
        stored = self.group(group_id)
        staged = stored.merge_pending_commit()
        self._outbox_drop(group_id)
        await self._emit_commit(group_id, stored.group, staged, self.name)
        return True

    async def _flush_outbox(self) -> None:
        """Settle commits left undecided by a lost answer or a restart. Until each is
        settled the error propagates and nothing is received (see the module docstring)."""
        for key in self.store.keys(OUTBOX):
            group_id = bytes.fromhex(key[len(OUTBOX) :])
            entry = self.store.get(key)
            if entry is None:
                continue
            outgoing = _Outgoing.decode(entry.value)
            if group_id in self.group_ids():
                handle = self.group(group_id)
                handle.reload()  # decide on the stored state, not on what this handle saw
                if handle.group.pending_commit_message == outgoing.commit:
                    try:
                        await self._deliver(group_id, outgoing)
                    except DSRequestError:
                        if self.store.get(key) is not None:
                            raise  # still undecided
                    continue
            # Not our pending commit any more (merged, dropped or superseded): stale.
            self._outbox_drop(group_id)

    def _drop_unsent_commits(self) -> None:
        """A pending commit without its outbox entry was never sent (both are written
        together, the entry first removed after the DS's answer): forget it."""
        for group_id in self.group_ids():
            key = _outbox_key(group_id)
            stored = self.group(group_id)
            pending = stored.group.pending_commit_message
            entry = self.store.get(key)
            if pending is not None and (
                entry is None or _Outgoing.decode(entry.value).commit != pending
            ):
                stored.clear_pending_commit()

    async def invite(self, group_id: bytes, user: str) -> None:
        kp_bytes = await asyncio.to_thread(
            self.ds.claim_key_package, user.encode(), self.identity.cipher_suite
        )
        kp = MLSMessage.decode(kp_bytes).key_package
        if kp is None:
            raise UsageError("the DS returned something that is not a KeyPackage")

        def add(stored: StoredGroup) -> list[Proposal] | None:
            if user in member_names(stored.group):
                return None
            return [Proposal(Add(kp))]

        await self._commit(group_id, add)

    async def remove(self, group_id: bytes, user: str) -> None:
        def remove(stored: StoredGroup) -> list[Proposal] | None:
            for m in stored.group.members():
                if _name(m.credential) == user and m.leaf_index != stored.group.own_leaf_index:
                    if m.leaf_index in _pending_removals(stored.group):
                        return []  # already proposed (e.g. they asked to leave): commit it
                    return [Proposal(Remove(m.leaf_index))]
            return None

        await self._commit(group_id, remove)

    async def update(self, group_id: bytes) -> None:
        """An empty commit with a fresh path (post-compromise security for us)."""
        await self._commit(group_id, lambda stored: [])

    async def leave(self, group_id: bytes) -> None:
        """Ask to be removed: a Remove proposal for our own leaf, which another member
        commits (a member cannot commit its own removal, RFC 9420 §12.2)."""
        async with self._lock:
            stored = self.group(group_id)
            own = stored.group.own_leaf_index
            proposal = stored.propose(lambda g: g.propose_remove(own))
            await asyncio.to_thread(self.ds.submit, group_id, proposal)

    async def send(self, group_id: bytes, text: str) -> None:
        async with self._lock:
            stored = self.group(group_id)
            if self._admitted(stored.group):
                if stored.group.own_leaf_index in _pending_removals(stored.group):
                    raise UsageError("we asked to leave this group: it awaits our removal")
                # Pending proposals forbid sending (§12.4): commit them first (those we
                # admit: an outsider's request to join waits for approval).
                await self._commit_locked(group_id, self._pending_only)
                stored = self.group(group_id)
            data = stored.encrypt_application(text.encode())
            await asyncio.to_thread(self.ds.submit, group_id, data)

    async def _commit_proposals_if_ours(self, group_id: bytes) -> None:
        """Commit pending proposals if we are the member to do it: the lowest leaf that they
        do not remove (every member computes the same choice)."""
        if group_id not in self.group_ids():
            return
        g = self.group(group_id).group
        if not self._admitted(g):
            return
        removed = _pending_removals(g)
        staying = [m.leaf_index for m in g.members() if m.leaf_index not in removed]
        if staying and staying[0] == g.own_leaf_index:
            await self._commit_locked(group_id, self._pending_only)

    async def join_external(self, group_id: bytes, *, resync: bool = False) -> None:
        """Join (or, with ``resync``, rejoin after losing state) by external commit."""
        async with self._lock:
            await self._join_external_locked(group_id, resync=resync)

    async def _join_external_locked(self, group_id: bytes, *, resync: bool) -> None:
        for _ in range(COMMIT_RETRIES):
            info = await asyncio.to_thread(self.ds.group_info, group_id)
            prior = None
            if resync:
                prior = next(
                    (leaf for leaf, name in _tree_members(info) if name == self.name), None
                )
            group, commit = join_external(
                info, self.identity, remove_prior=prior, config=self.config
            )
            try:
                await asyncio.to_thread(
                    self.ds.submit, group_id, commit, group_info=group.pending_group_info()
                )
            except DSConflict:
                await asyncio.sleep(0.05)
                continue
            group.merge_pending_commit()
            self._forget(group_id)
            self._handles[group_id] = self.groups.adopt(group)
            await self.events.put(
                Event("joined", group_id, group.epoch, members=member_names(group))
            )
            return
        raise UsageError("could not win an external commit")

    # --- Receiving --------------------------------------------------------------------

    async def sync(self) -> None:
        async with self._lock:
            await self._sync_locked()

    # The queue: everything not yet acknowledged is fetched each time (not "after the last
    # seq seen": with several DS connections or nodes, sequence numbers of different groups
    # can become visible out of order). Messages processed but not yet acknowledged (a crash
    # in between) are remembered under PROCESSED so they are not processed twice.

    def _processed(self) -> tuple[set[int], int | None]:
        stored = self.store.get(PROCESSED)
        if stored is None:
            return set(), None
        return {int(x) for x in stored.value.split()}, stored.version

    def _set_processed(self, seqs: set[int], version: int | None) -> int | None:
        """Store the set; returns its new version (None: the key is gone)."""
        if not seqs and version is None:
            return None
        value = " ".join(str(x) for x in sorted(seqs)).encode() if seqs else None
        written = self.store.write({PROCESSED: (value, version)})[PROCESSED]
        return written if seqs else None

    def _purge_retired(self) -> None:
        """Delete replaced last-resort KeyPackages whose grace period is over."""
        now = time.time()
        for key in self.store.keys(RETIRED):
            entry = self.store.get(key)
            if entry is not None and float(entry.value) + self.last_resort_grace <= now:
                self.groups.delete_key_package(bytes.fromhex(key[len(RETIRED) :]))
                self.store.write({key: (None, entry.version)})

    async def _sync_locked(self) -> None:
        self._purge_retired()
        await self._flush_outbox()
        proposals_for: set[bytes] = set()
        while True:
            items = await asyncio.to_thread(self.ds.fetch, 0)
            if not items:
                break
            done, version = self._processed()
            for item in items:
                if item["seq"] in done:
                    continue
                if await self._handle(item):
                    proposals_for.add(item["group_id"])
                done.add(item["seq"])
                version = self._set_processed(done, version)
            await asyncio.to_thread(self.ds.ack, [i["seq"] for i in items])
            self._set_processed(done - {i["seq"] for i in items}, version)
        await self._replenish_if_due()
        if not self._committing:
            await self._recover_undone()
            approve, self._auto_approve = self._auto_approve, set()
            for gid, name in sorted(approve):
                with contextlib.suppress(MLSError, httpx.HTTPError):
                    await self._approve_locked(gid, name)
            for gid in proposals_for:
                await self._commit_proposals_if_ours(gid)

    async def _report_if_rejected_commit(self, gid: bytes, group: Group, data: bytes) -> None:
        """Report a commit for our current epoch that we rejected (RFC 9750 §8: members
        judge what the DS cannot); the DS undoes it unless members already moved on."""
        try:
            msg = MLSMessage.decode(data)
        except MLSError:
            return
        pm, priv = msg.public_message, msg.private_message
        if pm is not None:
            is_commit, epoch = pm.content.content_type == ContentType.commit, pm.content.epoch
        elif priv is not None:
            is_commit, epoch = priv.content_type == ContentType.commit, priv.epoch
        else:
            return
        if not is_commit or epoch != group.epoch:
            return
        committer = group.sender_of(msg)  # None: an outsider's external commit
        with contextlib.suppress(DSRequestError, httpx.HTTPError):
            await asyncio.to_thread(self.ds.reject_commit, gid, epoch)
        self._rejected[gid] = (epoch, committer.signature_key if committer is not None else None)

    async def _recover_undone(self) -> None:
        """After the DS undid a commit: a member that had merged it (its committer, or one
        that accepted it) rejoins at the restored epoch by external commit; one that rejected
        a member's commit removes that member (an insider whose commit the others reject is
        removed: it may be compromised or broken)."""
        undone, self._undone = self._undone, {}
        for gid, epoch in undone.items():
            if gid not in self.group_ids():
                continue
            group = self.group(gid).group
            rejected = self._rejected.pop(gid, None)
            if group.epoch > epoch:
                try:
                    await self._join_external_locked(gid, resync=True)
                except (MLSError, httpx.HTTPError):
                    self._forget(gid)  # e.g. added by the undone commit: not a member
                    await self.events.put(Event("removed", gid, epoch))
                continue
            if rejected is None or rejected[0] != epoch or rejected[1] is None:
                continue
            key = rejected[1]

            def evict(stored: StoredGroup, key: bytes = key) -> list[Proposal] | None:
                for m in stored.group.members():
                    if m.signature_key == key and m.leaf_index != stored.group.own_leaf_index:
                        return [Proposal(Remove(m.leaf_index))]
                return None

            with contextlib.suppress(MLSError, httpx.HTTPError):
                await self._commit_locked(gid, evict)

    async def _replenish_if_due(self) -> None:
        """After a join by Welcome: top up the pool and replace a used last-resort
        KeyPackage."""
        if self._replenish_due:
            await self.replenish(rotate_last_resort=self._rotate_last_resort)
            self._replenish_due = self._rotate_last_resort = False

    async def _handle(self, item: dict[str, Any]) -> bool:
        """Process one queued message; True when it was a proposal (to be committed)."""
        gid: bytes = item["group_id"]
        if item["kind"] == "welcome":
            try:
                stored = self.groups.join(item["data"], config=self.config)
                self._handles[stored.group.group_id] = stored
            except MLSError:
                return False  # not for a KeyPackage we still hold
            g = stored.group
            self._replenish_due = True
            self._rotate_last_resort |= self.groups.used_last_resort
            # Top up first, so the pool is full by the time anyone sees the join; if the DS
            # cannot take it now, the end of this receive (or the next) tries again.
            with contextlib.suppress(DSRequestError, httpx.HTTPError):
                await self._replenish_if_due()
            await self.events.put(Event("joined", gid, g.epoch, members=member_names(g)))
            return False
        if gid not in self.group_ids():
            return False
        if item["kind"] == "rollback":
            self._undone[gid] = int(item["epoch"])
            return False
        stored = self.group(gid)
        if _is_join_request(item["data"]):
            await self._on_join_request(gid, stored, item["data"])
            return False
        try:
            event = stored.process(item["data"])
        except MLSError:
            # A message we cannot use (e.g. from before we joined) — or a commit of our
            # epoch that we reject: then the DS moved on without us, so we report it.
            await self._report_if_rejected_commit(gid, stored.group, item["data"])
            return False
        if isinstance(event, ProposalReceived):
            return self._admit(stored.group)(stored.group.pending_proposals[-1])
        if isinstance(event, ApplicationMessage):
            name = _name(event.sender.credential)
            await self.events.put(
                Event(
                    "message",
                    gid,
                    event.epoch,
                    sender=name,
                    text=event.data.decode(errors="replace"),
                )
            )
        elif isinstance(event, StagedCommit):
            before = set(member_names(stored.group))
            stored.merge_staged_commit(event)
            if event.self_removed:
                self._forget(gid)
                # Confirm the removal: an encrypted group's DS cannot verify it by itself.
                with contextlib.suppress(DSRequestError, httpx.HTTPError):
                    await asyncio.to_thread(self.ds.leave_group, gid)
                await self.events.put(Event("removed", gid, stored.group.epoch))
                return False
            await self._emit_commit(gid, stored.group, event, "", before)
        return False

    async def _emit_commit(
        self,
        gid: bytes,
        group: Group,
        staged: StagedCommit,
        sender: str,
        before: set[str] | None = None,
    ) -> None:
        after = member_names(group)
        if before is not None:
            for name in sorted(set(after) - before):
                await self.events.put(Event("member_joined", gid, group.epoch, sender=name))
            for name in sorted(before - set(after)):
                await self.events.put(Event("member_left", gid, group.epoch, sender=name))
        await self.events.put(Event("epoch", gid, group.epoch, sender=sender, members=after))

    async def _receive_loop(self) -> None:
        base = self.server.replace("http", "ws", 1)
        while True:
            try:
                import websockets

                # The token of the moment: the client logs in again when one expires.
                async with websockets.connect(f"{base}/v1/ws?token={self.ds.token}") as sock:
                    while True:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(sock.recv(), timeout=self.poll_interval)
                        await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(self.poll_interval)
                with contextlib.suppress(Exception):
                    await self.sync()


def _is_join_request(data: bytes) -> bool:
    """A PublicMessage proposal from a would-be member (``new_member_proposal``)."""
    try:
        pm = MLSMessage.decode(data).public_message
    except MLSError:
        return False
    return pm is not None and pm.content.sender.sender_type == SenderType.new_member_proposal


def _tree_members(group_info: bytes) -> list[tuple[int, str]]:
    from mlspy.group.public_group import PublicGroup

    public = PublicGroup.from_group_info(group_info)
    return [(int(m.leaf_index), _name(m.credential)) for m in public.members()]


__all__ = ["Client", "Event", "member_names"]
