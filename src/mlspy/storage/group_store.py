"""Persisting groups and KeyPackage private keys: one atomic write per state transition.

A :class:`StoredGroup` wraps a :class:`~mlspy.group.Group`. Every method that changes the
group writes the whole new state in one batch before it returns — in particular an encrypted
message is returned only once the advanced sending ratchet is durable, so no (generation, key,
nonce) can be reused after a crash. If the write fails (a crash, or another handle saved first),
the in-memory group is reloaded from the store, so it never runs ahead of what is durable.
Joining consumes the KeyPackage in the same batch that stores the new group (last-resort
KeyPackages are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from mlspy.codec import Reader, Writer, decode_all
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
from mlspy.messages import MLSMessage, Proposal
from mlspy.storage.base import Store, Write

T = TypeVar("T")


def _kp_key(ref: bytes) -> str:
    return f"kp/{ref.hex()}"


def _group_key(group_id: bytes) -> str:
    return f"group/{group_id.hex()}"


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

    def __init__(self, groups: GroupStore, group: Group, version: int | None) -> None:
        self._groups = groups
        self._group = group
        self._key = _group_key(group.group_id)
        self._version = version

    @property
    def group(self) -> Group:
        """The live group; change it only through this object's methods."""
        return self._group

    @property
    def version(self) -> int | None:
        return self._version

    def save(self) -> None:
        """Write the current state (every transition already does)."""
        self._save()

    def _save(self, extra: dict[str, Write] | None = None) -> None:
        batch: dict[str, Write] = {self._key: (self._group.to_bytes(), self._version)}
        if extra:
            batch.update(extra)
        try:
            self._version = self._groups.store.write(batch)[self._key]
        except BaseException:
            self.reload()
            raise

    def reload(self) -> None:
        """Replace the in-memory state with the stored one."""
        stored = self._groups.store.get(self._key)
        if stored is None:
            raise StorageError("the group is no longer in the store")
        self._group = Group.from_bytes(stored.value)
        self._version = stored.version

    def _transition(self, fn: Callable[[Group], T]) -> T:
        result = fn(self._group)
        self._save()
        return result

    # --- Transitions ------------------------------------------------------------------

    def encrypt_application(self, data: bytes, authenticated_data: bytes = b"") -> bytes:
        return self._transition(lambda g: g.encrypt_application(data, authenticated_data))

    def process(self, message: bytes) -> ApplicationMessage | ProposalReceived | StagedCommit:
        return self._transition(lambda g: g.process(message))

    def merge_staged_commit(self, staged: StagedCommit) -> None:
        self._transition(lambda g: g.merge_staged_commit(staged))

    def commit(self, proposals: Sequence[Proposal] = (), **options: object) -> CommitOutput:
        return self._transition(lambda g: g.commit(proposals, **options))  # type: ignore[arg-type]

    def merge_pending_commit(self) -> StagedCommit:
        return self._transition(lambda g: g.merge_pending_commit())

    def clear_pending_commit(self) -> None:
        self._transition(lambda g: g.clear_pending_commit())

    def propose(self, make: Callable[[Group], bytes]) -> bytes:
        """Any ``propose_*`` call, e.g. ``stored.propose(lambda g: g.propose_update())``."""
        return self._transition(make)


class GroupStore:
    """Groups and KeyPackages of one client in a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Whether the last join used a last-resort KeyPackage (the client then rotates it).
        self.used_last_resort = False

    # --- KeyPackages -------------------------------------------------------------------

    def add_key_package(self, bundle: KeyPackageBundle) -> None:
        self.store.write({_kp_key(bundle.ref()): (encode_bundle(bundle), None)})

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
        return StoredGroup(self, Group.from_bytes(stored.value), stored.version)

    def adopt(self, group: Group) -> StoredGroup:
        """Start storing a group created or joined outside this store."""
        return self._new(group)

    def _new(self, group: Group, extra: dict[str, Write] | None = None) -> StoredGroup:
        handle = StoredGroup(self, group, None)
        handle._save(extra)
        return handle

    def create_group(
        self, identity: SigningIdentity, *, group_id: bytes | None = None, **options: object
    ) -> StoredGroup:
        return self._new(Group.create(identity, group_id=group_id, **options))  # type: ignore[arg-type]

    def join(self, welcome: bytes, **options: object) -> StoredGroup:
        """Join with one of our stored KeyPackages; it is deleted in the same write."""
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
        return self._new(group, extra)

    def join_external(
        self, group_info: bytes, identity: SigningIdentity, **options: object
    ) -> tuple[StoredGroup, bytes]:
        group, commit = join_external(group_info, identity, **options)  # type: ignore[arg-type]
        return self._new(group), commit

    def delete_group(self, group_id: bytes) -> None:
        key = _group_key(group_id)
        current = self.store.get(key)
        if current is not None:
            self.store.write({key: (None, current.version)})


__all__ = ["GroupStore", "StoredGroup", "decode_bundle", "encode_bundle"]
