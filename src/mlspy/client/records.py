"""What the client keeps in its store besides groups, KeyPackages and the inbox: the
records that let every step survive a crash (see the theory of operation in ``client.sdk``).

Each record's key names its kind; groups are named by their id in hex."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Writer, decode_all
from mlspy.storage import Store, Write

OUTBOX = "outbox/"  # + group: our commit whose fate the DS has not told us
JOINING = "joining/"  # + group: our external commit (and the state it makes) not yet settled
LEAVING = "leaving/"  # + group: we asked to be removed (our Remove proposal)
CREATING = "creating/"  # + group: created here, not yet known to be on the DS
CONFIRM = "confirm-removal/"  # + group: a removal to confirm to the DS (encrypted groups)
PROCESSED = "processed/"  # + seq: a queued message processed but not yet acknowledged
OLD_PROCESSED = "processed"  # the same, as one set (older mlspy)
UNDONE = "undone/"  # + group: the DS rolled the group back to this epoch
REJECTED = "rejected/"  # + group: a commit we rejected and reported
REQUEST = "request/"  # + group/name: an outsider's request to join
ENROLLED = "device-added/"  # + identity: a new device of our user, to add to our groups
REVOKED = "device-revoked/"  # + identity: a revoked device of our user, to remove
UNSENT = "kp-unsent/"  # + ref: a KeyPackage stored but perhaps not uploaded yet
ROTATE = "rotate-last-resort"  # our last-resort KeyPackage was used: replace it
RECOVERY = "recovery"  # the recovery secret of our name (show it to the user)
IDENTITY = "identity"  # this device's signing identity
NEXT_IDENTITY = "identity-next"  # a rotated key not yet known to be bound at the AS
RETIRED = "retired/"  # + ref: replaced last-resort KeyPackages -> when


def group_key(prefix: str, group_id: bytes) -> str:
    return prefix + group_id.hex()


def group_of(key: str, prefix: str) -> bytes:
    return bytes.fromhex(key[len(prefix) :].split("/")[0])


def processed_key(seq: int) -> str:
    return f"{PROCESSED}{seq:020d}"


def put(store: Store, key: str, value: bytes | None) -> dict[str, Write]:
    """The write that sets (None: deletes) ``key``, whatever version it has now."""
    current = store.get(key)
    if current is None and value is None:
        return {}
    return {key: (value, current.version if current is not None else None)}


@dataclass(frozen=True)
class Outgoing:
    """A commit on its way to the DS, with what is submitted alongside it."""

    commit: bytes
    welcome: bytes | None
    group_info: bytes | None
    # The identities the commit adds: an encrypted group's DS cannot read them from the
    # commit, and delivers the Welcome's owners only when the committer names them.
    adds: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        w = Writer()
        w.opaque(self.commit)
        w.optional(self.welcome, Writer.opaque)
        w.optional(self.group_info, Writer.opaque)
        w.vector(self.adds, Writer.opaque)
        return w.getvalue()

    @staticmethod
    def decode(data: bytes) -> Outgoing:
        def read(r: Reader) -> Outgoing:
            commit, welcome, info = r.opaque(), r.optional(Reader.opaque), r.optional(Reader.opaque)
            # Entries written by older mlspy end here.
            adds = tuple(r.vector(Reader.opaque)) if r.remaining else ()
            return Outgoing(commit, welcome, info, adds)

        return decode_all(data, read, "outbox entry")


@dataclass(frozen=True)
class Joining:
    """An external commit of ours (``outgoing``) and the group state it leads to, with the
    commit pending: kept before the commit is submitted, so whatever the DS did with it, a
    restarted client can settle it (merge and take the group, or drop it)."""

    state: bytes
    outgoing: Outgoing

    def encode(self) -> bytes:
        w = Writer()
        w.opaque(self.state)
        w.opaque(self.outgoing.encode())
        return w.getvalue()

    @staticmethod
    def decode(data: bytes) -> Joining:
        return decode_all(
            data, lambda r: Joining(r.opaque(), Outgoing.decode(r.opaque())), "joining entry"
        )


@dataclass(frozen=True)
class Leaving:
    """Our request to be removed: the Remove proposals (of every device of our user) made in
    ``epoch``, and whether the DS took them. They are made again in each new epoch until a
    commit removes us."""

    epoch: int
    proposals: tuple[bytes, ...]
    sent: bool

    def encode(self) -> bytes:
        w = Writer()
        w.uint64(self.epoch)
        w.vector(self.proposals, Writer.opaque)
        w.uint8(int(self.sent))
        return w.getvalue()

    @staticmethod
    def decode(data: bytes) -> Leaving:
        return decode_all(
            data,
            lambda r: Leaving(r.uint64(), tuple(r.vector(Reader.opaque)), bool(r.uint8())),
            "leave request",
        )


@dataclass(frozen=True)
class Rejected:
    """A commit ending ``epoch`` that we rejected and reported; ``committer``: its signature
    key (None: an outsider's external commit)."""

    epoch: int
    committer: bytes | None

    def encode(self) -> bytes:
        w = Writer()
        w.uint64(self.epoch)
        w.optional(self.committer, Writer.opaque)
        return w.getvalue()

    @staticmethod
    def decode(data: bytes) -> Rejected:
        return decode_all(
            data, lambda r: Rejected(r.uint64(), r.optional(Reader.opaque)), "rejected commit"
        )


@dataclass(frozen=True)
class Request:
    """An outsider's request to join: their KeyPackage (an MLSMessage), and whether our rules
    admit it without the application's approval."""

    key_package: bytes
    auto: bool

    def encode(self) -> bytes:
        w = Writer()
        w.opaque(self.key_package)
        w.uint8(int(self.auto))
        return w.getvalue()

    @staticmethod
    def decode(data: bytes) -> Request:
        return decode_all(data, lambda r: Request(r.opaque(), bool(r.uint8())), "join request")


def request_key(group_id: bytes, name: str) -> str:
    return f"{REQUEST}{group_id.hex()}/{name.encode().hex()}"


def request_name(key: str) -> str:
    return bytes.fromhex(key.rsplit("/", 1)[1]).decode(errors="replace")
