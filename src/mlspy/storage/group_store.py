"""Persisting groups and KeyPackage private keys: one atomic write per state transition.

A :class:`StoredGroup` wraps a :class:`~mlspy.group.Group`. Every method that changes the
group writes the new state in one batch before it returns — in particular an encrypted
message is returned only once the advanced sending ratchet is durable, so no (generation, key,
nonce) can be reused after a crash. If the write fails (a crash, or another handle saved first),
the in-memory group is reloaded from the store, so it never runs ahead of what is durable.
Joining consumes the KeyPackage in the same batch that stores the new group (last-resort
KeyPackages are kept).

A group is stored in two parts (:func:`~mlspy.group.serialize.serialize_state_parts`): the
epoch part under ``group/<id>`` and the secret trees under ``ratchets/<id>``. Handshake
transitions write both; sending or receiving an application message writes only the ratchet
part, so its cost does not grow with the group. Every write includes the ratchet part, whose
version therefore guards the whole state against a second handle. A state stored whole (by
an older mlspy) still loads and is written in parts from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from mlspy.codec import Reader, Writer, decode_all
from mlspy.credentials import CredentialValidator
from mlspy.errors import StorageError, UsageError
from mlspy.group import (
    ApplicationMessage,
    CommitOutput,
    Group,
    KeyPackageBundle,
    ProposalReceived,
    SigningIdentity,
    StagedCommit,
    join_external,
)
from mlspy.group.serialize import (
    EPOCH_PART_MAGIC,
    deserialize_state_parts,
    serialize_ratchet_part,
    serialize_state_parts,
)
from mlspy.messages import MLSMessage, Proposal
from mlspy.storage.base import CHECK, Store, Versioned, Write, delete

T = TypeVar("T")
# More writes made in the same batch as a transition, computed from its result (e.g. the
# application's copy of a received message, an outbox entry): all of them or none are durable.
AlsoWrite = Callable[[T], Mapping[str, Write]] | None
Received = ApplicationMessage | ProposalReceived | StagedCommit


def _kp_key(ref: bytes) -> str:
    return f"kp/{ref.hex()}"


def _group_key(group_id: bytes) -> str:
    return f"group/{group_id.hex()}"


def _ratchet_key(group_id: bytes) -> str:
    return f"ratchets/{group_id.hex()}"


def encode_bundle(bundle: KeyPackageBundle) -> bytes:
    w = Writer()
    w.opaque(MLSMessage.wrap(bundle.key_package).encode())
    w.opaque(bundle.init_private_key)
    w.opaque(bundle.encryption_private_key)
    w.opaque(bundle.signature_private_key)
    return w.getvalue()


def decode_bundle(data: bytes) -> KeyPackageBundle:
    def read(r: Reader) -> KeyPackageBundle:
        msg = MLSMessage.decode(r.opaque())
        if msg.key_package is None:
            raise StorageError("stored KeyPackage bundle holds no KeyPackage")
        return KeyPackageBundle(msg.key_package, r.opaque(), r.opaque(), r.opaque())

    return decode_all(data, read, "stored KeyPackage bundle")


class StoredGroup:
    """A group whose every state transition is written to the store before it returns."""

    def __init__(
        self,
        groups: GroupStore,
        group: Group,
        version: int | None,
        ratchet_version: int | None = None,
        *,
        in_parts: bool | None = None,
    ) -> None:
        self._groups = groups
        self._group = group
        self._key = _group_key(group.group_id)
        self._ratchet_key = _ratchet_key(group.group_id)
        self._version = version
        self._ratchet_version = ratchet_version
        # Whether the store holds this state in parts; a state stored whole (older mlspy)
        # is rewritten in parts by its first write, whatever a stray ratchet key says.
        self._in_parts = ratchet_version is not None if in_parts is None else in_parts

    @property
    def group(self) -> Group:
        """The live group; change it only through this object's methods."""
        return self._group

    @property
    def version(self) -> int | None:
        """The stored version of the epoch part."""
        return self._version

    def save(self) -> None:
        """Write the current state (every transition already does)."""
        self._save()

    def _save(self, extra: Mapping[str, Write] | None = None) -> None:
        epoch_part, ratchet_part = serialize_state_parts(self._group.state)
        batch: dict[str, Write] = {
            self._key: (epoch_part, self._version),
            self._ratchet_key: (ratchet_part, self._ratchet_version),
        }
        if extra:
            batch.update(extra)
        try:
            versions = self._groups.store.write(batch)
        except BaseException:
            self.reload()
            raise
        self._version = versions[self._key]
        self._ratchet_version = versions[self._ratchet_key]
        self._in_parts = True

    def _save_ratchets(self, extra: Mapping[str, Write] | None = None) -> None:
        """Only the secret trees changed (an application message was sent or received)."""
        if not self._in_parts:  # stored whole so far: write the parts first
            self._save(extra)
            return
        batch: dict[str, Write] = {
            self._ratchet_key: (serialize_ratchet_part(self._group.state), self._ratchet_version),
            # Unchanged, but it must still be the version we hold (not, e.g., a group deleted
            # and stored again since this handle loaded it).
            self._key: (CHECK, self._version),
        }
        if extra:
            batch.update(extra)
        try:
            versions = self._groups.store.write(batch)
        except BaseException:
            self.reload()
            raise
        self._ratchet_version = versions[self._ratchet_key]

    def reload(self) -> None:
        """Replace the in-memory state with the stored one."""
        stored = self._groups.store.get(self._key)
        if stored is None:
            raise StorageError("the group is no longer in the store")
        ratchets = self._groups.store.get(self._ratchet_key)
        self._group = _load(stored, ratchets, self._groups.credential_validator)
        self._version = stored.version
        self._ratchet_version = ratchets.version if ratchets is not None else None
        self._in_parts = _in_parts(stored)

    def _transition(self, fn: Callable[[Group], T], also_write: AlsoWrite[T] = None) -> T:
        result = fn(self._group)
        self._save(self._extra(also_write, result))
        return result

    def _extra(self, also_write: AlsoWrite[T], result: T) -> Mapping[str, Write] | None:
        """``also_write(result)``; if it fails, nothing was stored and the live group goes
        back to the stored state."""
        if also_write is None:
            return None
        try:
            return also_write(result)
        except BaseException:
            self.reload()
            raise

    # --- Transitions ------------------------------------------------------------------

    def encrypt_application(self, data: bytes, authenticated_data: bytes = b"") -> bytes:
        result = self._group.encrypt_application(data, authenticated_data)
        self._save_ratchets()
        return result

    def process(self, message: bytes, also_write: AlsoWrite[Received] = None) -> Received:
        """Process a message (a commit stays staged: see :meth:`receive`)."""
        result = self._group.process(message)
        self._save_processed(result, self._extra(also_write, result))
        return result

    def _save_processed(self, result: Received, extra: Mapping[str, Write] | None) -> None:
        """An application message changed only the secret trees; anything else may have
        changed the epoch part too (a cached proposal, a spent handshake key)."""
        if isinstance(result, ApplicationMessage):
            self._save_ratchets(extra)
        else:
            self._save(extra)

    def receive(self, message: bytes, also_write: AlsoWrite[Received] = None) -> Received:
        """Process a message and, if it is a commit, merge it: one write either way, so a
        crash leaves the group before the message or after it, never with the message's key
        spent and its commit unmerged (which would wedge the member in the old epoch). A
        commit that removes us deletes the group in that write. ``also_write`` sees the result
        after the merge."""
        result = self._group.process(message)
        if not isinstance(result, StagedCommit):
            self._save_processed(result, self._extra(also_write, result))
            return result
        try:
            self._group.merge_staged_commit(result)
        except BaseException:
            self.reload()
            raise
        extra = self._extra(also_write, result)
        if result.self_removed:
            batch = dict(extra or {})
            batch.update(self._deletes())
            try:
                self._groups.store.write(batch)
            except BaseException:
                self.reload()
                raise
            return result
        self._save(extra)
        return result

    def _deletes(self) -> dict[str, Write]:
        """The writes that delete this group from the store."""
        batch: dict[str, Write] = {self._key: (None, self._version)}
        if self._ratchet_version is not None:
            batch[self._ratchet_key] = (None, self._ratchet_version)
        return batch

    def merge_staged_commit(self, staged: StagedCommit) -> None:
        self._transition(lambda g: g.merge_staged_commit(staged))

    def commit(
        self,
        proposals: Sequence[Proposal] = (),
        *,
        also_write: Callable[[CommitOutput], dict[str, Write]] | None = None,
        **options: object,
    ) -> CommitOutput:
        """Create a commit (it stays pending). ``also_write(output)`` names more keys to write
        in the same batch as the pending state (e.g. an outbox entry for the commit)."""
        out = self._group.commit(proposals, **options)  # type: ignore[arg-type]
        try:
            extra = also_write(out) if also_write is not None else None
        except BaseException:
            self.reload()  # nothing was stored: neither may the live group keep the commit
            raise
        self._save(extra)
        return out

    def merge_pending_commit(
        self,
        also_write: AlsoWrite[StagedCommit] = None,
        identity: SigningIdentity | None = None,
    ) -> StagedCommit:
        """Merge our pending commit (``identity``: see ``Group.merge_pending_commit``)."""
        return self._transition(lambda g: g.merge_pending_commit(identity), also_write)

    def clear_pending_commit(self, also_write: Mapping[str, Write] | None = None) -> None:
        self._transition(lambda g: g.clear_pending_commit(), lambda _: also_write or {})

    def propose(self, make: Callable[[Group], T], also_write: AlsoWrite[T] = None) -> T:
        """Any ``propose_*`` calls, e.g. ``stored.propose(lambda g: g.propose_update())``,
        stored in one write (``make`` may return several proposals)."""
        return self._transition(make, also_write)


class GroupStore:
    """Groups and KeyPackages of one client in a :class:`Store`."""

    def __init__(
        self, store: Store, *, credential_validator: CredentialValidator | None = None
    ) -> None:
        self.store = store
        # Never stored: re-attached to every group loaded (the Authentication Service hook).
        self.credential_validator = credential_validator
        # Whether the last join used a last-resort KeyPackage (the client then rotates it).
        self.used_last_resort = False

    # --- KeyPackages -------------------------------------------------------------------

    def add_key_package(self, bundle: KeyPackageBundle) -> None:
        self.add_key_packages([bundle])

    def add_key_packages(
        self, bundles: Sequence[KeyPackageBundle], also_write: Mapping[str, Write] | None = None
    ) -> None:
        """Store the private keys of new KeyPackages, all in one write (with ``also_write``)."""
        batch: dict[str, Write] = {_kp_key(b.ref()): (encode_bundle(b), None) for b in bundles}
        batch.update(also_write or {})
        if batch:
            self.store.write(batch)

    def key_package(self, ref: bytes) -> KeyPackageBundle | None:
        stored = self.store.get(_kp_key(ref))
        return decode_bundle(stored.value) if stored is not None else None

    def delete_key_package(self, ref: bytes) -> None:
        """Forget a KeyPackage's private keys (e.g. a replaced last-resort one)."""
        delete(self.store, _kp_key(ref))

    def key_packages(self) -> list[KeyPackageBundle]:
        out = []
        for key in self.store.keys("kp/"):
            stored = self.store.get(key)
            if stored is not None:
                out.append(decode_bundle(stored.value))
        return out

    # --- Groups ------------------------------------------------------------------------

    def group_ids(self) -> list[bytes]:
        return [bytes.fromhex(k.removeprefix("group/")) for k in self.store.keys("group/")]

    def load(self, group_id: bytes) -> StoredGroup:
        stored = self.store.get(_group_key(group_id))
        if stored is None:
            raise UsageError(f"no stored group {group_id.hex()}")
        ratchets = self.store.get(_ratchet_key(group_id))
        return StoredGroup(
            self,
            _load(stored, ratchets, self.credential_validator),
            stored.version,
            ratchets.version if ratchets is not None else None,
            in_parts=_in_parts(stored),
        )

    def adopt(self, group: Group) -> StoredGroup:
        """Start storing a group created or joined outside this store."""
        return self._new(group)

    def _new(self, group: Group, extra: Mapping[str, Write] | None = None) -> StoredGroup:
        handle = StoredGroup(self, group, None)
        handle._save(extra)
        return handle

    def put(self, group: Group, also_write: Mapping[str, Write] | None = None) -> StoredGroup:
        """Store ``group`` in place of whatever state of the same group id is stored (e.g. a
        group rejoined by external commit replacing the lost state), in one write."""
        versions = {
            key: current.version
            for key in (_group_key(group.group_id), _ratchet_key(group.group_id))
            if (current := self.store.get(key)) is not None
        }
        handle = StoredGroup(
            self,
            group,
            versions.get(_group_key(group.group_id)),
            versions.get(_ratchet_key(group.group_id)),
            in_parts=True,
        )
        handle._save(also_write)
        return handle

    def create_group(
        self, identity: SigningIdentity, *, group_id: bytes | None = None, **options: object
    ) -> StoredGroup:
        return self._new(Group.create(identity, group_id=group_id, **options))  # type: ignore[arg-type]

    def join(
        self,
        welcome: bytes,
        also_write: AlsoWrite[Group] = None,
        **options: object,
    ) -> StoredGroup:
        """Join with one of our stored KeyPackages; it is deleted in the same write (with
        ``also_write(group)``)."""
        bundles = self.key_packages()
        group = Group.join(welcome, bundles, **options)  # type: ignore[arg-type]
        own = group.tree.leaf(group.own_leaf_index)
        used = next(b for b in bundles if b.key_package.leaf_node == own)
        self.used_last_resort = used.is_last_resort
        extra: dict[str, Write] = {}
        if not used.is_last_resort:
            key = _kp_key(used.ref())
            current = self.store.get(key)
            extra[key] = (None, current.version if current else None)
        if also_write is not None:
            extra.update(also_write(group))
        return self._new(group, extra)

    def join_external(
        self, group_info: bytes, identity: SigningIdentity, **options: object
    ) -> tuple[StoredGroup, bytes]:
        group, commit = join_external(group_info, identity, **options)  # type: ignore[arg-type]
        return self._new(group), commit

    def delete_group(self, group_id: bytes, also_write: Mapping[str, Write] | None = None) -> None:
        batch: dict[str, Write] = dict(also_write or {})
        for key in (_group_key(group_id), _ratchet_key(group_id)):
            current = self.store.get(key)
            if current is not None:
                batch[key] = (None, current.version)
        if batch:
            self.store.write(batch)


def _in_parts(stored: Versioned) -> bool:
    return stored.value[:4] == EPOCH_PART_MAGIC


def _load(
    stored: Versioned, ratchets: Versioned | None, validator: CredentialValidator | None
) -> Group:
    """A group from its epoch and ratchet parts, or from a state stored whole."""
    if not _in_parts(stored):
        return Group.from_bytes(stored.value, credential_validator=validator)
    if ratchets is None:
        raise StorageError("the stored group has no ratchet part")
    return Group(
        deserialize_state_parts(stored.value, ratchets.value, credential_validator=validator)
    )


__all__ = ["GroupStore", "StoredGroup", "decode_bundle", "encode_bundle"]
