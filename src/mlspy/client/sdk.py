"""The client SDK: one :class:`Client` per device, talking to a Delivery Service.

Theory of operation. A client registers its identity with the Authentication Service, keeps a
pool of KeyPackages on the DS (topping it up and replacing a used last-resort one), and holds
its groups in a :class:`~mlspy.storage.GroupStore`, so every state transition is durable. One
background task receives, and processes each queued message in order (joining from Welcomes,
merging commits, decrypting application messages, recording notices), then acknowledges it.

Delivery. The messages and the acks travel on the DS's WebSocket (``/v1/ws``,
``mlspy.client.push``): the DS sends every queued message as it is queued, and again on a later
socket while it is not acknowledged; each batch that arrives is processed and acknowledged in
one ``{"ack": [...]}`` frame, so a delivered message costs no HTTP round trip. What we send
(messages, commits, proposals) goes on the socket too while it is open, and over HTTP when it
is not or a frame would be too large (``_post``). HTTP is the fallback: ``sync()`` fetches the
queue and acknowledges over HTTP; the client does so at start and whenever the socket ends
(catching up), and every poll interval while it is down. The socket is opened again with
growing pauses (1013: the DS's database is away), at once after logging in again when the DS
refused an expired token (4401). Both paths process what they bring with the same code, under
the lock that commits and sends take too. While the socket is quiet, the work a receive leaves
(confirming a removal, topping up KeyPackages, committing pending proposals, settling our
commits) is done every poll interval.

Nothing is lost across a crash. What the application is told goes into an inbox in the
client's store (``client.inbox``), in the same write as the state change that produced it: a
received message's key is consumed, its plaintext stored as an event and the queue item marked
processed in one batch; a commit is processed and merged in one batch. Only then is the DS
acknowledged. The application takes events with ``async for event in client.events()``, which
acknowledges each when the loop asks for the next (or ``next_event``/``ack``); an event not
acknowledged is delivered again after a restart, with the same ``id``, and never after it is
acknowledged. A queued message already marked processed is skipped; one whose key we already
consumed (the DS delivered it twice) is recognized as a duplicate and logged, not reported.

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

Every step that writes and talks, in order (W: one atomic store write; DS: a call). A crash
(SIGKILL) can fall between any two; why each gap is harmless:

- receive a queued message: W(state + events + processed mark) → DS ack → W(drop mark).
  Before W: the message comes again. Between W and the ack: it comes again, is marked
  processed, skipped. After the ack: the stale mark is dropped at the next acknowledgement.
  On the WebSocket the ack is a frame the DS does not answer, so it may be lost with the
  socket: the mark stays after it, and is dropped only once an HTTP ack (at the next
  ``sync``, or once ``CONFIRM_EVERY`` marks have gathered) confirmed it — until then the
  message, if it comes again (on the next socket, or over HTTP), is skipped. An HTTP ack made
  while a socket is open may cross that socket's copy of the message, sent before it: the
  copy comes after the mark is dropped, and is skipped as one the socket's ledger
  (``push.Ledger``) knows was acknowledged meanwhile.
- commit (invite, remove, update, approve, committing pending proposals): [invite: DS claim
  of a KeyPackage] → W(pending commit + outbox) → DS submit → W(merge + outbox dropped +
  events). Before the first W nothing was sent (a claimed KeyPackage is wasted; its owner's
  pool refills). Between the first W and the answer the outbox settles it at the next start
  (resubmitted: merged if accepted, dropped on 409); a pending commit without its outbox entry
  was never sent and is dropped.
- join by external commit: DS GroupInfo → W(joining: the new state with the commit pending)
  → DS submit → W(group stored in place of any old state + joining dropped + event). A
  joining entry is settled at the next start like the outbox (resubmitted: the group is taken
  if accepted, the entry dropped on 409).
- leave: W(our Remove proposal cached + leaving) → DS submit → W(leaving marked sent). A
  leaving entry not sent is submitted at the next receive; one whose epoch has passed while we
  are still a member is proposed again; it goes with the group when a commit removes us.
- removed by a commit: W(group deleted + event + confirm-removal) → DS leave → W(drop it);
  unconfirmed removals are confirmed again at the next receive.
- create a group: W(group + creating) → DS create → W(drop creating); at start a group still
  marked creating is registered again (the DS answering "exists" settles it).
- KeyPackages (top-up, last-resort rotation): DS count → W(private keys + unsent marks +
  retired marks for the replaced last-resort one, rotation flag cleared) → DS upload →
  W(drop marks). Marked KeyPackages are uploaded again at the next start (the DS keeps one copy
  of each, and never makes a claimed one claimable again); a join with a last-resort KeyPackage
  sets the rotation flag in the join's write.
- send: W(sending ratchet advanced) → DS submit (retried with the same bytes). Killed before
  the submit, ``send`` never returned: the application sends again. Submitted twice, the second
  copy's key is already spent at every receiver, who drops it as a duplicate.
- report a rejected commit: DS report → W(rejected + processed mark); rolled back by the DS:
  W(undone + processed mark), acted on after the receive, then dropped.
- ask to join (``request_join``): W(the KeyPackage's private keys) → DS submit. Killed
  between, the request never left and nobody holds the KeyPackage's public part, so its keys
  serve nobody; they stay in the store (not cleaned up).
- an outsider's request to join: W(request + event + processed mark); approval commits as
  above, then W(drop the request).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import httpx

from mlspy.client import push
from mlspy.client import records as rec
from mlspy.client.events import (
    Event,
    Joined,
    JoinRequest,
    Message,
    Removed,
)
from mlspy.client.inbox import Inbox, Staged
from mlspy.client.records import Joining, Leaving, Outgoing, Rejected, Request
from mlspy.client.rules import DefaultRules, Rules
from mlspy.client.who import commit_events, leave_requests, member_devices
from mlspy.codec import Reader, Writer, decode_all
from mlspy.credentials import CredentialError, CredentialValidator
from mlspy.ds.client import (
    ASCredentialValidator,
    DSClient,
    DSConflict,
    DSRequestError,
    new_recovery_secret,
    recovery_hash,
    submit_body,
)
from mlspy.errors import MLSError, SecretTreeError, StorageError, UsageError
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
    policy_in,
)
from mlspy.group.public_group import PublicGroup
from mlspy.messages import (
    Add,
    Capabilities,
    ContentType,
    Credential,
    CredentialType,
    KeyPackage,
    MLSMessage,
    Proposal,
    Remove,
    Sender,
    SenderType,
    WireFormat,
)
from mlspy.storage import GroupStore, MemoryStore, Store, StoredGroup, Write
from mlspy.users import device_identity, same_user, split_identity, user_of

log = logging.getLogger("mlspy.client")

COMMIT_RETRIES = 8
SUBMIT_ATTEMPTS = 3  # tries of one submission when the DS cannot be reached
# Refusals given before the DS looks at a commit: they say nothing of an earlier attempt.
_NOT_JUDGED = frozenset({401, 429})
# Secret-tree rules broken by a message whose key is gone: we consumed it already (the DS
# delivered the message twice), or it is older than the ratchet keeps keys for.
_KEY_GONE = frozenset({"ST-01", "ST-03"})
# How long a replaced last-resort KeyPackage's private keys are kept: someone may have claimed
# it just before, and their Welcome still needs them. Then they go (forward secrecy, §16.8).
LAST_RESORT_GRACE = 3600.0
# The WebSocket never confirms an ack: processed marks of messages acknowledged on it are
# kept, and confirmed by one HTTP ack once this many have gathered (or at the next sync).
CONFIRM_EVERY = 256
ACK_CHUNK = 5000  # seqs per HTTP ack (the DS takes at most 10,000)
RECONNECT_MAX = 30.0  # the longest wait before opening the WebSocket again, in seconds


def _name(credential: Credential) -> str:
    """The user a credential names (``mlspy.users``: one of the user's devices)."""
    return user_of(credential.identity)


def _device_name(credential: Credential) -> str:
    return (credential.identity or b"?").decode(errors="replace")


def member_names(group: Group) -> tuple[str, ...]:
    """The group's users, each once, in the order of their first leaf."""
    return tuple(dict.fromkeys(_name(m.credential) for m in group.members()))


def _leaves_of(group: Group, user: str) -> list[int]:
    """The leaves of ``user``'s devices."""
    return [int(m.leaf_index) for m in group.members() if _name(m.credential) == user]


def _leaf_of(group: Group, identity: bytes) -> int | None:
    return next(
        (int(m.leaf_index) for m in group.members() if m.credential.identity == identity), None
    )


def _pending_removals(group: Group) -> set[int]:
    """Leaves that pending Remove proposals would remove."""
    return {
        int(q.proposal.body.removed)
        for q in group.pending_proposals
        if isinstance(q.proposal.body, Remove)
    }


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
    """While a recovered user rejoins: the leaves of our user's lost devices are accepted
    though the AS no longer binds them (the external commit removes one, the commit after it
    the others); everything else is validated as usual."""

    def __init__(self, config: GroupConfig, identity: SigningIdentity) -> None:
        assert config.credential_validator is not None
        self.usual: CredentialValidator = config.credential_validator
        self.user = user_of(identity.credential.identity)

    def validate(self, credential: Credential, signature_key: bytes) -> None:
        try:
            self.usual.validate(credential, signature_key)
        except CredentialError:
            if user_of(credential.identity) != self.user:
                raise

    def same_member(self, old: Credential, new: Credential) -> bool:
        return same_user(old, new)


def _outgoing(out: CommitOutput, group: Group) -> Outgoing:
    """Our commit (pending in ``group``) as it goes to the DS."""
    staged = group.pending_commit
    added = staged.added if staged is not None else ()
    adds = tuple(m.identity for m in added if m.identity is not None)
    return Outgoing(out.commit, out.welcome, out.group_info, adds)


def _open(group: Group) -> bool:
    """Whether the group's policy lets outsiders join by external commit."""
    policy = policy_in(group.extensions)
    return policy is not None and policy.joins == Joins.open


class Client:
    """A device: identity, KeyPackages, groups, the receive loop and the inbox."""

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
        device: str = "",
        pairing_code: str | None = None,
    ) -> None:
        """A device of user ``name``: ``device`` names it among the user's devices (``""``:
        the user's one device, named by the bare user name). A further device of an existing
        user registers with a ``pairing_code`` from one of the others (``pairing_code()``).
        ``poll_interval`` (seconds): how often the queue is fetched over HTTP while the
        WebSocket is down, and the first pause before it is opened again."""
        self.server = server.rstrip("/")
        self.name = name  # the user
        self.device = device
        self.pairing_code_for_start = pairing_code
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
            else SigningIdentity.generate(device_identity(name, device), cipher_suite)
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
        self.inbox = Inbox(self.store)
        self._task: asyncio.Task[None] | None = None
        # Held by whatever processes the queue or changes a group: the socket's batches,
        # sync(), commits, sending.
        self._lock = asyncio.Lock()
        self._ledger = push.Ledger()
        self._socket: push.PushSocket | None = None  # open and accepted: messages come on it
        self._committing = 0  # nesting depth of _commit_locked (no auto-commits inside one)
        self._replenish_due = False
        # Open handles on stored groups: loading a group decodes its whole state (O(n)), so
        # it is done once, not per message. Every change still goes through the handle to the
        # store before it returns.
        self._handles: dict[bytes, StoredGroup] = {}

    # --- Lifecycle ----------------------------------------------------------------------

    @property
    def recovery_secret(self) -> str | None:
        """The secret that recovers our name on a new device if this one is lost."""
        stored = self.store.get(rec.RECOVERY)
        return stored.value.decode() if stored is not None else None

    async def start(self, *, receive: bool = True) -> None:
        """Register (first time: with ``invite_code`` where the server needs one, and the
        hash of a new recovery secret, then in ``new_recovery_secret`` for the application to
        show its user once) and log in, settle what a crash left undone, top up KeyPackages,
        start receiving (``receive=False``: not now, nor in the background; the application
        calls :meth:`sync`)."""
        secret = self.recovery_secret
        if secret is None:
            secret = new_recovery_secret()
            self.store.write({rec.RECOVERY: (secret.encode(), None)})
        await self._finish_rotation()
        await asyncio.to_thread(
            functools.partial(
                self.ds.register,
                invite_code=self.invite_code,
                recovery_hash=recovery_hash(self.name.encode(), secret),
                pairing_code=self.pairing_code_for_start,
            )
        )
        if self.ds.recovery_set:
            self.new_recovery_secret = secret
        await asyncio.to_thread(self.ds.login)
        self._drop_unsent_commits()
        await self._register_created()
        await self._upload_unsent()
        await self.replenish()
        if receive:
            await self.sync()
            self._task = asyncio.create_task(self._receive_loop())

    async def recover(self, secret: str) -> list[bytes]:
        """On a new device (a fresh store), instead of ``start``: take our name over with its
        recovery secret. The AS binds the name to this device's key (the lost key can no
        longer log in) and a new recovery secret replaces the old (``new_recovery_secret``:
        show it); the client rejoins, by external commits that remove the old leaf, the
        groups whose delivery lists held the name, then starts. Returns the groups rejoined."""
        previous = self.store.get(rec.RECOVERY)
        fresh = new_recovery_secret()
        expected = previous.version if previous is not None else None
        # Kept before asking: if the answer is lost, the DS may hold the new secret's hash.
        version = self.store.write({rec.RECOVERY: (fresh.encode(), expected)})
        name = self.name.encode()
        try:
            groups = await asyncio.to_thread(
                self.ds.recover, name, secret, recovery_hash(name, fresh)
            )
        except DSRequestError:
            old = previous.value if previous is not None else None
            self.store.write({rec.RECOVERY: (old, version[rec.RECOVERY])})
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
                try:
                    await self.join_external(gid, resync=True)
                    rejoined.append(gid)
                    # Our user's other lost devices, revoked by the recovery, go too.
                    await self._commit(gid, _remover(lambda g: _leaves_of(g, self.name)))
                except (MLSError, DSRequestError, httpx.HTTPError) as exc:
                    log.warning("%s: could not rejoin group %s: %s", self.name, gid.hex(), exc)
        finally:
            self.config = usual
            self._handles.clear()  # reloaded from the store, with the usual validator
        await self.start()
        return rejoined

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # Cancelled again until it ends: a cancel can be lost in code we await (Python
            # 3.11's asyncio.wait_for swallows one that lands as the awaited thing completes,
            # gh-86296), and then stop() would wait for the receive loop forever.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            if not task.cancelled() and task.exception() is not None:
                log.info("%s: the receive loop ended: %r", self.name, task.exception())
        await asyncio.to_thread(self.ds.close)

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- Events for the application (the inbox) -------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order, waiting for new ones: ``async for event in
        client.events()``. An event is acknowledged when the loop asks for the next one, so
        one whose handling was cut short by a crash is delivered again after the restart.
        Leaving the loop (``break``, an exception) leaves the current event unacknowledged:
        it comes first again; call :meth:`ack` before ``break`` when done with it."""
        while True:
            event = await self.inbox.get()
            acked = False
            try:
                yield event
                self.inbox.ack(event)
                acked = True
            finally:
                if not acked:
                    self.inbox.put_back(event)

    async def next_event(self, timeout: float | None = 10.0, *, ack: bool = True) -> Event:
        """The next event (waiting at most ``timeout`` seconds). With ``ack=False`` it stays
        in the inbox until :meth:`ack`: delivered again after a restart."""
        async with asyncio.timeout(timeout):  # not wait_for: it may swallow a cancel (3.11)
            event = await self.inbox.get()
        if ack:
            self.inbox.ack(event)
        return event

    def ack(self, event: Event) -> None:
        """The application is done with ``event``: it is never delivered again."""
        self.inbox.ack(event)

    async def wait_for(
        self, kind: str, group_id: bytes | None = None, timeout: float | None = 10.0
    ) -> Event:
        """The next event of ``kind`` (in ``group_id``, if given), acknowledging it and the
        events passed over on the way (for scripts that wait for one thing)."""

        async def find() -> Event:
            while True:
                event = await self.next_event(None)
                if event.kind == kind and group_id in (None, event.group_id):
                    return event

        async with asyncio.timeout(timeout):
            return await find()

    def _publish(self, events: list[Event], more: Mapping[str, Write] | None = None) -> None:
        """Store events (and ``more``) in one write of their own, then hand them out."""
        staged = Staged(self.inbox)
        self.store.write(staged.writes(events, more))
        staged.done()

    # --- Devices of our user ----------------------------------------------------------

    async def pairing_code(self) -> str:
        """A single-use code (ten minutes) that enrols a new device of our user:
        ``Client(server, user, device=..., pairing_code=code)``. Once it registers, our
        devices add it to every group of ours."""
        return await asyncio.to_thread(self.ds.pairing_code)

    async def devices(self) -> list[str]:
        """The names of our user's devices (``""``: the one named by the bare user name)."""
        return [str(d["device"]) for d in await asyncio.to_thread(self.ds.devices)]

    async def revoke(self, device: str) -> None:
        """Revoke a device of our user (a lost phone): the AS no longer binds it, and our
        devices remove it from every group (this one too, at its next receive)."""
        await asyncio.to_thread(self.ds.revoke_device, device)
        await self.sync()

    async def rotate_key(self) -> None:
        """Rotate this device's signature key (Basic credentials: the same credential, a new
        key pair): the AS binds the device to the new key, then a commit in each group
        carries it (an UpdatePath LeafNode with the new key, validated as the same device);
        KeyPackages of the old key are replaced. Crash-safe: the new key is stored before
        the AS is asked, and a restart finishes what was left."""
        if self.identity.credential.credential_type != CredentialType.basic:
            raise UsageError("an X.509 device rotates its key with a new certificate")
        async with self._lock:
            new = SigningIdentity.generate(
                self.identity.credential.identity or b"", self.identity.cipher_suite
            )
            self.store.write({rec.NEXT_IDENTITY: (_encode_identity(new), None)})
            await self._finish_rotation()
            await self._rotate_groups()
        await self.replenish(rotate_last_resort=True)

    async def _finish_rotation(self) -> None:
        """A rotated key stored but perhaps not bound yet: bind it (unless the AS already
        did: then our old key no longer logs in), then make it this device's identity."""
        stored = self.store.get(rec.NEXT_IDENTITY)
        if stored is None:
            return
        new = _decode_identity(stored.value)
        try:
            await asyncio.to_thread(self.ds.login)  # with the old key: not rotated yet
        except DSRequestError as exc:
            if exc.status != 401:
                raise
            self.ds.identity = new  # the AS binds the new key already
        else:
            await asyncio.to_thread(self.ds.rotate_key, new)
        current = self.store.get(rec.IDENTITY)
        self.store.write(
            {
                rec.IDENTITY: (_encode_identity(new), current.version if current else None),
                rec.NEXT_IDENTITY: (None, stored.version),
            }
        )
        self.identity = new
        self.ds.identity = new
        if self._socket is not None:
            # The DS names a device by its key: the queue moved to the new key's client id,
            # while a socket open now keeps serving the old one (empty from now on).
            await self._socket.close("key rotated")

    def _rotation_for(self, group: Group) -> SigningIdentity | None:
        """Our identity, if the group's leaf still has an older key of ours."""
        if group.state.identity.signature_key == self.identity.signature_key:
            return None
        return self.identity

    async def _rotate_groups(self) -> None:
        """Commit our new key in every group whose leaf still has the old one."""
        for gid in self.group_ids():
            if self._rotation_for(self.group(gid).group) is not None:
                try:
                    await self._commit_locked(gid, lambda stored: [])
                except (MLSError, DSRequestError, httpx.HTTPError) as exc:
                    log.info("%s: key rotation in group %s: %s", self.name, gid.hex()[:16], exc)

    # --- KeyPackages ----------------------------------------------------------------

    async def replenish(self, *, rotate_last_resort: bool = False) -> None:
        """Keep ``pool_size`` unclaimed KeyPackages and one last-resort on the DS."""
        count, last_resort = await asyncio.to_thread(
            self.ds.count_key_packages, self.identity.cipher_suite
        )
        bundles = [create_key_package(self.identity) for _ in range(self.pool_size - count)]
        extra: dict[str, Write] = {}
        rotate = rotate_last_resort or self.store.get(rec.ROTATE) is not None
        if not last_resort or rotate:
            now = str(time.time()).encode()
            for old in self.groups.key_packages():
                key = rec.RETIRED + old.ref().hex()
                if old.is_last_resort and self.store.get(key) is None:
                    extra[key] = (now, None)
            bundles.append(create_key_package(self.identity, last_resort=True))
            extra.update(rec.put(self.store, rec.ROTATE, None))
        if not bundles:
            return
        for b in bundles:
            extra[rec.UNSENT + b.ref().hex()] = (b"", None)
        # The private keys first (a Welcome for a KeyPackage the DS hands out needs them),
        # marked unsent until the DS has them.
        self.groups.add_key_packages(bundles, extra)
        await asyncio.to_thread(self.ds.upload_key_packages, bundles)
        self._drop_marks(rec.UNSENT + b.ref().hex() for b in bundles)

    async def _upload_unsent(self) -> None:
        """KeyPackages stored but perhaps never uploaded (a crash in ``replenish``)."""
        keys = self.store.keys(rec.UNSENT)
        bundles = [
            b
            for key in keys
            if (b := self.groups.key_package(bytes.fromhex(key[len(rec.UNSENT) :]))) is not None
        ]
        if bundles:
            await asyncio.to_thread(self.ds.upload_key_packages, bundles)
        self._drop_marks(keys)

    def _drop_marks(self, keys: Any) -> None:
        batch: dict[str, Write] = {}
        for key in keys:
            batch.update(rec.put(self.store, key, None))
        if batch:
            self.store.write(batch)

    # --- Groups -----------------------------------------------------------------------

    def group(self, group_id: bytes) -> StoredGroup:
        handle = self._handles.get(group_id)
        if handle is None:
            handle = self._handles[group_id] = self.groups.load(group_id)
        return handle

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
        group = Group.create(self.identity, config=self.config, extensions=(policy.to_extension(),))
        key = rec.group_key(rec.CREATING, group.group_id)
        self._handles[group.group_id] = self.groups.put(group, {key: (b"", None)})
        await self._register_group(group.group_id)
        return group.group_id

    async def _register_group(self, group_id: bytes) -> None:
        """Create the group on the DS; then it is no longer marked as being created."""
        group = self.group(group_id).group
        with contextlib.suppress(DSConflict):  # already there: an earlier attempt got through
            await asyncio.to_thread(
                functools.partial(
                    self.ds.create_group,
                    group.group_info(),
                    external_joins=_open(group),
                    encrypted_handshakes=(
                        self.config.handshake_wire_format == WireFormat.mls_private_message
                    ),
                )
            )
        self._drop_marks([rec.group_key(rec.CREATING, group_id)])

    async def _register_created(self) -> None:
        for key in self.store.keys(rec.CREATING):
            gid = rec.group_of(key, rec.CREATING)
            if gid in self.group_ids():
                await self._register_group(gid)
            else:
                self._drop_marks([key])

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
        key = rec.request_key(group_id, user)
        stored_request = self.store.get(key)
        if stored_request is None or group_id not in self.group_ids():
            return False
        request = Request.decode(stored_request.value)
        kp = MLSMessage.decode(request.key_package).key_package
        if kp is None:
            return False

        def add(stored: StoredGroup) -> list[Proposal] | None:
            return None if user in member_names(stored.group) else [Proposal(Add(kp))]

        await self._commit_locked(group_id, add)
        self._drop_marks([key])
        return True

    def _join_request(
        self, gid: bytes, stored: StoredGroup, data: bytes
    ) -> tuple[dict[str, Write], list[Event]]:
        """An outsider asks to join: the writes that record it and the event (none if it is
        invalid). The
        request is judged as any proposal (the group's policy, the KeyPackage, the AS
        binding) but not cached: until the application approves it, it is not a proposal
        this member commits (RFC 9420 §12.1.8: external proposals that are not authorized
        are invalid), so it neither blocks our sending (§12.4) nor dies with the epoch;
        approval adds its KeyPackage by value."""
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
            return {}, []
        if not isinstance(event, ProposalReceived) or not isinstance(event.proposal.body, Add):
            return {}, []
        kp = event.proposal.body.key_package
        name = _name(kp.leaf_node.credential)
        queued = QueuedProposal(event.proposal, Sender.new_member_proposal(), None)
        auto = self.rules.admit(stored.group, queued)
        request = Request(MLSMessage.wrap(kp).encode(), auto)
        event_out = JoinRequest(gid, stored.group.epoch, user=name)
        return rec.put(self.store, rec.request_key(gid, name), request.encode()), [event_out]

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
                await self._post(group_id, request)
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
                    also_write=self._outbox_entry(stored),
                    new_identity=self._rotation_for(stored.group),
                )
                if await self._deliver(group_id, _outgoing(out, stored.group), known_fresh=True):
                    return out
                await self._sync_locked()
        finally:
            self._committing -= 1
        raise UsageError(f"could not win a commit after {COMMIT_RETRIES} races")

    async def _post(
        self,
        group_id: bytes,
        message: bytes,
        *,
        welcome: bytes | None = None,
        group_info: bytes | None = None,
        adds: Sequence[bytes] = (),
    ) -> int:
        """Submit to the DS: on the WebSocket while it is open (no HTTP round trip; the
        DS judges it by the same rules), else — or when it does not fit in a frame — over
        HTTP. A socket that ends before the answer raises ``httpx.TransportError``, which
        the callers' retries already treat as "may or may not have arrived"."""
        sock = self._socket
        if sock is not None:
            body = submit_body(message, welcome=welcome, group_info=group_info, adds=adds)
            try:
                seq = await sock.submit(group_id, body)
            except push.Closed as closed:
                raise httpx.TransportError(
                    f"the WebSocket ended before the DS answered: {closed}"
                ) from None
            except DSRequestError as exc:
                # 401: our token expired since the socket opened; HTTP logs in again and
                # retries (the DS closes this socket with 4401 at its next check). 503: the
                # DS's database is away; HTTP waits its Retry-After and retries, as always.
                if exc.status not in (401, 503):
                    raise
                seq = None
            if seq is not None:
                return seq
        return await asyncio.to_thread(
            self.ds.submit, group_id, message, welcome=welcome, group_info=group_info, adds=adds
        )

    # --- The outbox of our commits ----------------------------------------------------

    def _outbox_entry(self, stored: StoredGroup) -> Callable[[CommitOutput], dict[str, Write]]:
        """The outbox write for a commit, made in the same batch as its pending state."""
        key = rec.group_key(rec.OUTBOX, stored.group.group_id)
        return lambda out: rec.put(self.store, key, _outgoing(out, stored.group).encode())

    def _abandon(self, group_id: bytes) -> None:
        """Our commit never took effect: forget it, pending state and outbox entry, in one
        write."""
        key = rec.group_key(rec.OUTBOX, group_id)
        self.group(group_id).clear_pending_commit(rec.put(self.store, key, None))

    async def _submit(
        self,
        group_id: bytes,
        outgoing: Outgoing,
        *,
        known_fresh: bool,
        on_refused: Callable[[], None],
    ) -> bool:
        """Submit a commit until the DS answers: True when it was accepted, False when
        another commit won (``on_refused`` has dropped ours). ``known_fresh``: no earlier
        attempt can have reached the DS. If the DS cannot be reached, or refuses an attempt
        whose predecessor's fate is unknown, the commit stays as it is and the error
        propagates; a refusal that settles it calls ``on_refused`` first."""
        uncertain = not known_fresh
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                await self._post(
                    group_id,
                    outgoing.commit,
                    welcome=outgoing.welcome,
                    group_info=outgoing.group_info,
                    adds=outgoing.adds,
                )
                return True
            except DSConflict:
                on_refused()
                return False
            except DSRequestError as exc:
                if exc.status >= 500:
                    uncertain = True  # it may have been stored before the failure
                    if attempt == SUBMIT_ATTEMPTS - 1:
                        raise
                elif exc.status in _NOT_JUDGED and uncertain:
                    raise  # says nothing of the earlier attempt: keep it
                else:
                    # The DS judged the commit (an accepted one it would have acknowledged
                    # again), or nothing went through before: it never took effect.
                    on_refused()
                    raise
            except httpx.TransportError:
                uncertain = True
                if attempt == SUBMIT_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _deliver(
        self, group_id: bytes, outgoing: Outgoing, *, known_fresh: bool = False
    ) -> bool:
        """Submit our pending commit (see ``_submit``); once accepted, merge it, drop the
        outbox entry and tell the application, in one write."""
        accepted = await self._submit(
            group_id,
            outgoing,
            known_fresh=known_fresh,
            on_refused=lambda: self._abandon(group_id),
        )
        if not accepted:
            return False
        stored = self.group(group_id)
        staged = Staged(self.inbox)
        outbox = rec.put(self.store, rec.group_key(rec.OUTBOX, group_id), None)
        before = member_devices(stored.group)
        leaving = leave_requests(stored.group)
        stored.merge_pending_commit(
            lambda done: staged.writes(commit_events(stored.group, done, before, leaving), outbox),
            identity=self.identity,
        )
        staged.done()
        return True

    async def _flush_outbox(self) -> None:
        """Settle commits left undecided by a lost answer or a restart. Until each is
        settled the error propagates and nothing is received (see the module docstring)."""
        for key in self.store.keys(rec.OUTBOX):
            group_id = rec.group_of(key, rec.OUTBOX)
            entry = self.store.get(key)
            if entry is None:
                continue
            outgoing = Outgoing.decode(entry.value)
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
            self._drop_marks([key])
        for key in self.store.keys(rec.JOINING):
            entry = self.store.get(key)
            if entry is not None:
                gid = rec.group_of(key, rec.JOINING)
                with contextlib.suppress(DSConflict):
                    await self._settle_join(gid, Joining.decode(entry.value), known_fresh=False)

    def _drop_unsent_commits(self) -> None:
        """A pending commit without its outbox entry was never sent (both are written
        together, the entry first removed after the DS's answer): forget it."""
        for group_id in self.group_ids():
            key = rec.group_key(rec.OUTBOX, group_id)
            stored = self.group(group_id)
            pending = stored.group.pending_commit_message
            entry = self.store.get(key)
            if pending is not None and (
                entry is None or Outgoing.decode(entry.value).commit != pending
            ):
                stored.clear_pending_commit()

    async def invite(self, group_id: bytes, user: str) -> None:
        """Add every current device of ``user`` (one KeyPackage of each, claimed at the DS)."""
        claimed = await asyncio.to_thread(
            self.ds.claim_user_key_packages, user.encode(), self.identity.cipher_suite
        )
        await self._commit(group_id, self._adder(claimed))

    async def _add_device(self, group_id: bytes, identity: bytes) -> None:
        """Add one device (a new device of our user) to a group."""
        kp = await asyncio.to_thread(
            self.ds.claim_key_package, identity, self.identity.cipher_suite
        )
        await self._commit_locked(group_id, self._adder([kp]))

    @staticmethod
    def _adder(claimed: list[bytes]) -> Callable[[StoredGroup], list[Proposal] | None]:
        kps: list[KeyPackage] = []
        for data in claimed:
            kp = MLSMessage.decode(data).key_package
            if kp is None:
                raise UsageError("the DS returned something that is not a KeyPackage")
            kps.append(kp)

        def add(stored: StoredGroup) -> list[Proposal] | None:
            there = {m.credential.identity for m in stored.group.members()}
            new = [Proposal(Add(kp)) for kp in kps if kp.leaf_node.credential.identity not in there]
            return new or None

        return add

    async def remove(self, group_id: bytes, user: str) -> None:
        """Remove every device of ``user`` (not ours: ``leave`` for that)."""
        if user == self.name:
            raise UsageError("to remove our own user from a group, leave it")
        await self._commit(group_id, _remover(lambda g: _leaves_of(g, user)))

    async def update(self, group_id: bytes) -> None:
        """An empty commit with a fresh path (post-compromise security for us)."""
        await self._commit(group_id, lambda stored: [])

    # --- Leaving ------------------------------------------------------------------------

    async def leave(self, group_id: bytes) -> None:
        """Ask to be removed: a Remove proposal for our own leaf, which another member
        commits (a member cannot commit its own removal, RFC 9420 §12.2). The request is
        kept, and made again in each new epoch, until a commit removes us."""
        async with self._lock:
            self._propose_leave(group_id)
            await self._send_leave(group_id)

    def _propose_leave(self, group_id: bytes) -> None:
        """Remove proposals for every device of our user (we leave as a user), cached in the
        group and recorded, in one write."""
        stored = self.group(group_id)
        leaves = _leaves_of(stored.group, self.name)
        key = rec.group_key(rec.LEAVING, group_id)
        stored.propose(
            lambda g: tuple(g.propose_remove(leaf) for leaf in leaves),
            lambda proposals: rec.put(
                self.store, key, Leaving(stored.group.epoch, proposals, False).encode()
            ),
        )

    async def _send_leave(self, group_id: bytes) -> None:
        key = rec.group_key(rec.LEAVING, group_id)
        entry = self.store.get(key)
        if entry is None:
            return
        leaving = Leaving.decode(entry.value)
        with contextlib.suppress(DSConflict):  # the epoch moved on: proposed again there
            for proposal in leaving.proposals:
                await self._post(group_id, proposal)
            self.store.write({key: (replace(leaving, sent=True).encode(), entry.version)})

    async def _renew_leaves(self) -> None:
        """Our requests to leave: submitted if a crash kept them from the DS, proposed again
        in a new epoch, forgotten with the group."""
        for key in self.store.keys(rec.LEAVING):
            gid = rec.group_of(key, rec.LEAVING)
            entry = self.store.get(key)
            if entry is None:
                continue
            if gid not in self.group_ids():
                self._drop_marks([key])
                continue
            leaving = Leaving.decode(entry.value)
            if leaving.epoch != self.group(gid).group.epoch:
                self._propose_leave(gid)
            elif leaving.sent:
                continue
            with contextlib.suppress(DSRequestError, httpx.HTTPError):
                await self._send_leave(gid)

    # --- Sending ------------------------------------------------------------------------

    async def send(self, group_id: bytes, payload: bytes | str) -> None:
        """Encrypt and submit an application message (bytes; text is sent UTF-8 encoded);
        once this returns, the DS has it."""
        async with self._lock:
            stored = self.group(group_id)
            if self._admitted(stored.group):
                if stored.group.own_leaf_index in _pending_removals(stored.group):
                    raise UsageError("we asked to leave this group: it awaits our removal")
                # Pending proposals forbid sending (§12.4): commit them first (those we
                # admit: an outsider's request to join waits for approval).
                await self._commit_locked(group_id, self._pending_only)
                stored = self.group(group_id)
            data = stored.encrypt_application(
                payload.encode() if isinstance(payload, str) else bytes(payload)
            )
            for attempt in range(SUBMIT_ATTEMPTS):
                try:
                    await self._post(group_id, data)
                    return
                except httpx.TransportError:
                    # Sent again with the same bytes: a copy that did arrive twice is
                    # dropped by every receiver (its key is spent).
                    if attempt == SUBMIT_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.1 * 2**attempt)

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

    # --- Joining by external commit ---------------------------------------------------

    async def join_external(self, group_id: bytes, *, resync: bool = False) -> None:
        """Join (or, with ``resync``, rejoin after losing state) by external commit."""
        async with self._lock:
            await self._join_external_locked(group_id, resync=resync)

    async def _join_external_locked(self, group_id: bytes, *, resync: bool) -> None:
        key = rec.group_key(rec.JOINING, group_id)
        for _ in range(COMMIT_RETRIES):
            info = await asyncio.to_thread(self.ds.group_info, group_id)
            prior = None
            if resync:  # our old leaf: this device's, else a lost device's of our user
                own = device_identity(self.name, self.device)
                mine = {i: leaf for leaf, i in _tree_members(info) if user_of(i) == self.name}
                prior = mine.get(own, min(mine.values(), default=None))
            group, commit = join_external(
                info, self.identity, remove_prior=prior, config=self.config
            )
            joining = Joining(group.to_bytes(), Outgoing(commit, None, group.pending_group_info()))
            # Kept before it is sent: whatever the DS does with it, a restart can settle it.
            self.store.write(rec.put(self.store, key, joining.encode()))
            if await self._settle_join(group_id, joining, known_fresh=True, group=group):
                return
            await asyncio.sleep(0.05)
        raise UsageError("could not win an external commit")

    async def _settle_join(
        self,
        group_id: bytes,
        joining: Joining,
        *,
        known_fresh: bool,
        group: Group | None = None,
    ) -> bool:
        """Submit our external commit (again); accepted: the new group replaces any state
        of it we had, in the same write as the entry's removal and the "joined" event; lost
        to another commit: the entry is dropped (False)."""
        key = rec.group_key(rec.JOINING, group_id)
        accepted = await self._submit(
            group_id,
            joining.outgoing,
            known_fresh=known_fresh,
            on_refused=lambda: self._drop_marks([key]),
        )
        if not accepted:
            return False
        if group is None:
            group = Group.from_bytes(
                joining.state, credential_validator=self.config.credential_validator
            )
        group.merge_pending_commit()
        self._handles.pop(group_id, None)
        staged = Staged(self.inbox)
        done = (
            rec.put(self.store, key, None)
            | rec.put(self.store, rec.group_key(rec.UNDONE, group_id), None)
            | rec.put(self.store, rec.group_key(rec.CONFIRM, group_id), None)
        )
        joined = Joined(group_id, group.epoch, members=member_names(group))
        self._handles[group_id] = self.groups.put(group, staged.writes([joined], done))
        staged.done()
        return True

    # --- Receiving --------------------------------------------------------------------

    async def sync(self) -> None:
        async with self._lock:
            await self._sync_locked()

    # The queue: everything not yet acknowledged is fetched each time (not "after the last
    # seq seen": with several DS connections or nodes, sequence numbers of different groups
    # can become visible out of order). A message is marked processed in the same write as
    # its effect, so one processed but not yet acknowledged (a crash in between) is skipped.

    def _processed(self) -> set[int]:
        done = {int(k[len(rec.PROCESSED) :]) for k in self.store.keys(rec.PROCESSED)}
        old = self.store.get(rec.OLD_PROCESSED)  # the set as older mlspy kept it
        if old is not None:
            done |= {int(x) for x in old.value.split()}
        return done

    def _purge_retired(self) -> None:
        """Delete replaced last-resort KeyPackages whose grace period is over."""
        now = time.time()
        for key in self.store.keys(rec.RETIRED):
            entry = self.store.get(key)
            if entry is not None and float(entry.value) + self.last_resort_grace <= now:
                self.groups.delete_key_package(bytes.fromhex(key[len(rec.RETIRED) :]))
                self.store.write({key: (None, entry.version)})

    async def _sync_locked(self) -> None:
        """Receive over HTTP: fetch the queue, process it, acknowledge (the answer confirms
        the ack), until it is empty; then confirm the acks made on the WebSocket."""
        await self._before_receive()
        proposals_for: set[bytes] = set()
        while True:
            items = await asyncio.to_thread(self.ds.fetch, 0)
            if not items:
                break
            await self._receive(items, proposals_for)
            await self._confirm_acks([i["seq"] for i in items])
        # Marks left: messages acknowledged on the WebSocket, which never says whether an
        # ack took effect (or processed before a crash). Acknowledged again here (acks are
        # idempotent), then dropped.
        left = sorted(self._processed())
        if left:
            await self._confirm_acks(left)
        await self._after_receive(proposals_for)

    async def _before_receive(self) -> None:
        """What must be settled before anything is received: our undecided commits (every
        message after an accepted commit of ours needs it merged; raises while undecided)."""
        self._purge_retired()
        await self._flush_outbox()

    async def _receive(
        self, items: list[dict[str, Any]], proposals_for: set[bytes], *, pushed: bool = False
    ) -> None:
        """Process queued messages in order, whatever brought them (an HTTP fetch, or the
        WebSocket when ``pushed``): each is marked processed in the write of its effect, and
        one already marked is skipped. Adds to ``proposals_for`` the groups that received
        proposals to be committed. The caller holds the lock and acknowledges them after."""
        done = self._processed()
        for item in items:
            seq = item["seq"]
            if pushed and self._ledger.stale(seq):
                continue  # acknowledged over HTTP after the socket sent it: processed then
            if seq not in done and await self._handle(item):
                proposals_for.add(item["group_id"])
            if pushed:
                self._ledger.received(seq)

    async def _confirm_acks(self, seqs: list[int]) -> None:
        """Acknowledge over HTTP, whose answer says the DS dropped them; only then drop their
        processed marks."""
        for i in range(0, len(seqs), ACK_CHUNK):
            chunk = seqs[i : i + ACK_CHUNK]
            await asyncio.to_thread(self.ds.ack, chunk)
            self._drop_marks([rec.processed_key(s) for s in chunk] + [rec.OLD_PROCESSED])
            self._ledger.dropped(chunk)

    async def _after_receive(self, proposals_for: set[bytes]) -> None:
        """What a receive may have left to do, and what earlier ones could not finish."""
        await self._confirm_removals()
        await self._replenish_if_due()
        if not self._committing:
            await self._rotate_groups()
            await self._follow_devices()
            await self._renew_leaves()
            await self._recover_undone()
            for key in self.store.keys(rec.REQUEST):
                entry = self.store.get(key)
                if entry is not None and Request.decode(entry.value).auto:
                    with contextlib.suppress(MLSError, httpx.HTTPError):
                        await self._approve_locked(
                            rec.group_of(key, rec.REQUEST), rec.request_name(key)
                        )
            for gid in proposals_for:
                await self._commit_proposals_if_ours(gid)

    async def _report_if_rejected_commit(
        self, gid: bytes, group: Group, data: bytes
    ) -> dict[str, Write]:
        """Report a commit for our current epoch that we rejected (RFC 9750 §8: members
        judge what the DS cannot); the DS undoes it unless members already moved on. Returns
        the write that records the report."""
        try:
            msg = MLSMessage.decode(data)
        except MLSError:
            return {}
        pm, priv = msg.public_message, msg.private_message
        if pm is not None:
            is_commit, epoch = pm.content.content_type == ContentType.commit, pm.content.epoch
        elif priv is not None:
            is_commit, epoch = priv.content_type == ContentType.commit, priv.epoch
        else:
            return {}
        if not is_commit or epoch != group.epoch:
            return {}
        committer = group.sender_of(msg)  # None: an outsider's external commit
        with contextlib.suppress(DSRequestError, httpx.HTTPError):
            await asyncio.to_thread(self.ds.reject_commit, gid, epoch)
        rejected = Rejected(epoch, committer.signature_key if committer is not None else None)
        return rec.put(self.store, rec.group_key(rec.REJECTED, gid), rejected.encode())

    async def _recover_undone(self) -> None:
        """After the DS undid a commit: a member that had merged it (its committer, or one
        that accepted it) rejoins at the restored epoch by external commit; one that rejected
        a member's commit removes that member (an insider whose commit the others reject is
        removed: it may be compromised or broken)."""
        for key in self.store.keys(rec.UNDONE):
            gid = rec.group_of(key, rec.UNDONE)
            entry = self.store.get(key)
            if entry is None:
                continue
            epoch = int(entry.value)
            rejected_key = rec.group_key(rec.REJECTED, gid)
            stored_rejected = self.store.get(rejected_key)
            rejected = Rejected.decode(stored_rejected.value) if stored_rejected else None
            if gid not in self.group_ids():
                self._drop_marks([key, rejected_key])
                continue
            if self.group(gid).group.epoch > epoch:
                try:
                    await self._join_external_locked(gid, resync=True)  # drops the mark
                except (MLSError, httpx.HTTPError):
                    # E.g. added by the undone commit: not a member.
                    self._handles.pop(gid, None)
                    self.groups.delete_group(gid, rec.put(self.store, key, None))
                    self._publish([Removed(gid, epoch)])
                continue
            self._drop_marks([key, rejected_key])
            if rejected is None or rejected.epoch != epoch or rejected.committer is None:
                continue
            committer = rejected.committer

            def evict(stored: StoredGroup, key: bytes = committer) -> list[Proposal] | None:
                for m in stored.group.members():
                    if m.signature_key == key and m.leaf_index != stored.group.own_leaf_index:
                        return [Proposal(Remove(m.leaf_index))]
                return None

            with contextlib.suppress(MLSError, httpx.HTTPError):
                await self._commit_locked(gid, evict)

    async def _replenish_if_due(self) -> None:
        """After a join by Welcome: top up the pool and replace a used last-resort
        KeyPackage (``replenish`` sees the rotation flag the join wrote)."""
        if self._replenish_due or self.store.get(rec.ROTATE) is not None:
            await self.replenish()
            self._replenish_due = False

    async def _confirm_removals(self) -> None:
        """Tell the DS we processed the commit that removed us (an encrypted group's DS
        cannot verify a removal by itself)."""
        for key in self.store.keys(rec.CONFIRM):
            try:
                await asyncio.to_thread(self.ds.leave_group, rec.group_of(key, rec.CONFIRM))
            except DSRequestError as exc:
                if exc.status >= 500 or exc.status in _NOT_JUDGED:
                    continue  # try again at the next receive
                # 404: not on the delivery list (a public group's DS saw the removal).
            except httpx.HTTPError:
                continue
            self._drop_marks([key])

    async def _handle(self, item: dict[str, Any]) -> bool:
        """Process one queued message, marking it processed in the same write as its effect;
        True when it was a proposal to be committed."""
        gid: bytes = item["group_id"]
        done: dict[str, Write] = {rec.processed_key(item["seq"]): (b"", None)}
        if item["kind"] == "welcome":
            if gid in self.group_ids():
                # A member already: the DS is replaying an old Welcome; a group is joined
                # once (after a removal the group is gone, and a new Welcome is welcome).
                log.info(
                    "%s: queue item %d: a Welcome to a group we are in", self.name, item["seq"]
                )
                self.store.write(done)
                return False
            await self._on_welcome(item["data"], done)
            return False
        if item["kind"] in ("device_added", "device_revoked"):
            self.store.write(done | self._device_notice(item["kind"], item["data"]))
            return False
        if gid not in self.group_ids():
            self.store.write(done)
            return False
        if item["kind"] == "rollback":
            undone = str(int(item["epoch"])).encode()
            self.store.write(done | rec.put(self.store, rec.group_key(rec.UNDONE, gid), undone))
            return False
        stored = self.group(gid)
        if _is_join_request(item["data"]):
            writes, events = self._join_request(gid, stored, item["data"])
            self._publish(events, done | writes)
            return False
        before = member_devices(stored.group)
        leaving = leave_requests(stored.group)
        staged = Staged(self.inbox)
        try:
            result = stored.receive(
                item["data"],
                lambda r: staged.writes(
                    _events_of(r, stored.group, before, leaving),
                    done | self._removal_writes(gid, r),
                ),
            )
        except StorageError:
            raise  # not the message's fault: it stays unprocessed
        except SecretTreeError as exc:
            if exc.rule not in _KEY_GONE:
                return await self._rejected(gid, stored, item, done, exc)
            # Its key is spent: we processed this message already (the DS delivered it
            # twice) or it is older than the keys we keep. Not an attack: nothing to report,
            # and what it said reached the inbox the first time.
            log.info(
                "%s: queue item %d: already processed, or too old to decrypt (%s)",
                self.name,
                item["seq"],
                exc,
            )
            self.store.write(done)
            return False
        except MLSError as exc:
            return await self._rejected(gid, stored, item, done, exc)
        staged.done()
        if isinstance(result, StagedCommit) and result.self_removed:
            self._handles.pop(gid, None)
            await self._confirm_removals()
        if isinstance(result, ProposalReceived):
            return self._admit(stored.group)(stored.group.pending_proposals[-1])
        return False

    def _device_notice(self, kind: str, identity: bytes) -> dict[str, Write]:
        """Our user enrolled or revoked a device: recorded (with the processed mark) and
        carried out in our groups after the receive (``_follow_devices``)."""
        if user_of(identity) != self.name or identity == self.identity.credential.identity:
            return {}
        prefix = rec.ENROLLED if kind == "device_added" else rec.REVOKED
        return rec.put(self.store, prefix + identity.hex(), b"")

    async def _follow_devices(self) -> None:
        """A new device of our user joins every group of ours; a revoked one leaves them. In
        each group the lowest of our user's devices does it (every device of ours computes
        the same choice). What fails (a new device with no KeyPackage uploaded yet) is tried
        again at the next receive."""
        for prefix in (rec.ENROLLED, rec.REVOKED):
            for key in self.store.keys(prefix):
                identity = bytes.fromhex(key[len(prefix) :])
                done = True
                for gid in self.group_ids():
                    g = self.group(gid).group
                    ours = _leaves_of(g, self.name)
                    if not ours or ours[0] != g.own_leaf_index:
                        continue
                    present = _leaf_of(g, identity) is not None
                    try:
                        if prefix == rec.ENROLLED and not present:
                            await self._add_device(gid, identity)
                        elif prefix == rec.REVOKED and present:
                            await self._commit_locked(gid, _remover(_device_leaf(identity)))
                    except (MLSError, DSRequestError, httpx.HTTPError) as exc:
                        log.info(
                            "%s: device %r in group %s: %s",
                            self.name,
                            identity,
                            gid.hex()[:16],
                            exc,
                        )
                        done = False
                if done:
                    self._drop_marks([key])

    async def _rejected(
        self,
        gid: bytes,
        stored: StoredGroup,
        item: dict[str, Any],
        done: dict[str, Write],
        exc: MLSError,
    ) -> bool:
        """A message we cannot use (e.g. from before we joined) — or a commit of our epoch
        that we reject: then the DS moved on without us, so we report it."""
        log.info("%s: queue item %d unusable: %s", self.name, item["seq"], exc)
        report = await self._report_if_rejected_commit(gid, stored.group, item["data"])
        self.store.write(done | report)
        return False

    def _removal_writes(self, gid: bytes, result: object) -> dict[str, Write]:
        """With the commit that removes us: what goes with the group (our request to leave)
        and the removal to confirm to the DS."""
        if not isinstance(result, StagedCommit) or not result.self_removed:
            return {}
        return rec.put(self.store, rec.group_key(rec.LEAVING, gid), None) | rec.put(
            self.store, rec.group_key(rec.CONFIRM, gid), b""
        )

    async def _on_welcome(self, data: bytes, done: dict[str, Write]) -> None:
        """Join from a Welcome: the group, the KeyPackage's deletion, the "joined" event and
        the processed mark in one write."""
        staged = Staged(self.inbox)

        def writes(g: Group) -> dict[str, Write]:
            # A removal from this group not yet confirmed is past: confirming it now would
            # take us off the delivery list we are back on.
            more = done | rec.put(self.store, rec.group_key(rec.CONFIRM, g.group_id), None)
            if self.groups.used_last_resort:  # replace it (``replenish``)
                more |= rec.put(self.store, rec.ROTATE, b"")
            joined = Joined(g.group_id, g.epoch, members=member_names(g))
            return staged.writes([joined], more)

        try:
            stored = self.groups.join(data, writes, config=self.config)
        except StorageError:
            raise
        except MLSError:
            self.store.write(done)  # not for a KeyPackage we still hold
            return
        self._handles[stored.group.group_id] = stored
        self._replenish_due = True
        # Top up first, so the pool is full by the time the application sees the join (the
        # event is stored already); if the DS cannot take it now, the end of this receive
        # (or the next) tries again.
        try:
            with contextlib.suppress(DSRequestError, httpx.HTTPError):
                await self._replenish_if_due()
        finally:
            staged.done()

    # --- The delivery path: the WebSocket, with HTTP as the fallback ----------------------

    async def _receive_loop(self) -> None:
        """Receive over the DS's WebSocket; whenever it ends, over HTTP (catching up, and
        confirming the acks made on the socket) until it is open again."""
        failures = 0
        while True:
            token = self.ds.token
            healthy, code = await self._push_session()
            failures = 0 if healthy else min(failures + 1, 16)
            delay = min(RECONNECT_MAX, self.poll_interval * 2**failures)
            delay *= 0.5 + random.random() / 2  # clients dropped together come back spread
            if code == push.TOKEN_REFUSED:
                # Our token expired (or was revoked): log in again. After a socket that was
                # accepted, reconnect at once; refused from the start, back off.
                try:
                    await asyncio.to_thread(self.ds.renew_token, token)
                    if healthy:
                        delay = 0.0
                except (DSRequestError, httpx.HTTPError) as exc:
                    log.info("%s: cannot log in again: %s", self.name, exc)
            await self._poll(delay)

    async def _push_session(self) -> tuple[bool, int | None]:
        """Receive over one WebSocket until it ends. Returns whether it was healthy (the DS
        accepted it, and it did not end because processing failed) and the code it was closed
        with (1013: the DS's database is away; 4401: our token)."""
        url = push.ws_url(self.server)
        # Open before the connection: an HTTP ack from now on may race the socket's copy.
        self._ledger.open()
        try:
            async with push.PushSocket(url, self.ds.token, verify=self.ds.verify) as sock:
                self._socket = sock
                while not self._ledger.overflowing:
                    items = await sock.batch(self.poll_interval)
                    if items:
                        await self._receive_pushed(sock, items)
                    else:
                        await self._housekeeping()
            return True, None  # renewed, to forget the seqs it never sent
        except push.Closed as closed:
            log.info("%s: %s", self.name, closed)
            return closed.ready, closed.code
        except Exception as exc:
            # Processing stopped (e.g. a commit of ours is undecided): nothing after the
            # failure is marked or acknowledged; the next socket sends it again. Not healthy:
            # reconnecting at once would fail the same way.
            log.info("%s: receiving on the WebSocket stopped: %r", self.name, exc)
            return False, None
        finally:
            self._socket = None
            self._ledger.close()

    async def _receive_pushed(self, sock: push.PushSocket, items: list[dict[str, Any]]) -> None:
        """A batch from the socket: processed as a fetched one, acknowledged in one frame."""
        async with self._lock:
            await self._before_receive()  # raises while a commit of ours is undecided
            proposals_for: set[bytes] = set()
            await self._receive(items, proposals_for, pushed=True)
            # Every item is marked processed now (or was acknowledged over HTTP already).
            await sock.ack([i["seq"] for i in items])
            try:
                if len(self._ledger.delivered) >= CONFIRM_EVERY:
                    await self._confirm_acks(sorted(self._processed()))
                await self._after_receive(proposals_for)
            except (MLSError, httpx.HTTPError) as exc:
                # Tried again at the next batch or housekeeping.
                log.info("%s: after a receive: %s", self.name, exc)

    async def _housekeeping(self) -> None:
        """While the socket is quiet: what earlier receives could not finish (what the
        receive of a message would do), without fetching the queue."""
        async with self._lock:
            try:
                await self._before_receive()
                await self._after_receive(set())
            except (MLSError, httpx.HTTPError) as exc:
                log.info("%s: housekeeping: %s", self.name, exc)

    async def _poll(self, duration: float) -> None:
        """The socket is down: receive over HTTP now, then every poll interval until
        ``duration`` seconds have passed."""
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        while True:
            try:
                await self.sync()
            except Exception as exc:
                log.info("%s: receiving over HTTP: %r", self.name, exc)
            left = end - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(self.poll_interval, left))


def _events_of(
    result: object, group: Group, before: dict[str, tuple[str, ...]], leaving: set[str]
) -> list[Event]:
    """What a received message tells the application (``group`` after it)."""
    gid = group.group_id
    if isinstance(result, ApplicationMessage):
        sender, device = split_identity(result.sender.credential.identity)
        return [Message(gid, result.epoch, sender=sender, device=device, data=result.data)]
    if isinstance(result, StagedCommit):
        if result.self_removed:
            by = user_of(result.committer.identity) if result.committer is not None else ""
            return [Removed(gid, group.epoch, by=by)]
        return commit_events(group, result, before, leaving)
    return []


def _is_join_request(data: bytes) -> bool:
    """A PublicMessage proposal from a would-be member (``new_member_proposal``)."""
    try:
        pm = MLSMessage.decode(data).public_message
    except MLSError:
        return False
    return pm is not None and pm.content.sender.sender_type == SenderType.new_member_proposal


def _tree_members(group_info: bytes) -> list[tuple[int, bytes]]:
    """(leaf, identity) of every member of a GroupInfo's tree."""
    public = PublicGroup.from_group_info(group_info)
    return [(int(m.leaf_index), m.credential.identity or b"") for m in public.members()]


def _device_leaf(identity: bytes) -> Callable[[Group], list[int]]:
    def leaves(group: Group) -> list[int]:
        leaf = _leaf_of(group, identity)
        return [] if leaf is None else [leaf]

    return leaves


def _remover(
    leaves_of: Callable[[Group], list[int]],
) -> Callable[[StoredGroup], list[Proposal] | None]:
    """A commit intent removing ``leaves_of(group)`` (not our own leaf): Removes for those not
    already proposed, an empty list to commit the pending ones, None when none is left."""

    def remove(stored: StoredGroup) -> list[Proposal] | None:
        g = stored.group
        leaves = [leaf for leaf in leaves_of(g) if leaf != g.own_leaf_index]
        if not leaves:
            return None
        pending = _pending_removals(g)
        return [Proposal(Remove(leaf)) for leaf in leaves if leaf not in pending]

    return remove


__all__ = ["Client", "member_names"]
