"""The secret tree and its per-sender hash ratchets (RFC 9420 §9).

Theory of operation: the tree stores only the node secrets not yet consumed. To reach a leaf,
the lowest stored ancestor is split into its two children (``"tree"``, ``"left"``/``"right"``)
and deleted, down to the leaf, whose secret seeds the handshake and application ratchets and is
deleted in turn (§9.2 deletion schedule). Each ratchet keeps its next secret and generation plus
a bounded cache of keys for skipped generations, so out-of-order messages within the window
decrypt; a key is deleted as soon as it is used.

Receiving is two-phase so a failed decryption consumes nothing: :meth:`SecretTree.lookup`
computes the key for a generation without touching the state, and :meth:`SecretTree.consume`
applies that lookup once the AEAD accepted the ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mlspy.codec import Reader, Writer
from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import DecodeError, SecretTreeError, UsageError
from mlspy.tree.math import LeafIndex, NodeIndex, left, level, right, root

# Defaults comparable to other stacks: how far ahead of the current generation a received
# message may be, and how many skipped keys a ratchet keeps for late messages.
DEFAULT_MAX_FORWARD = 1024
DEFAULT_MAX_RETAINED = 1024


class RatchetType(Enum):
    HANDSHAKE = "handshake"
    APPLICATION = "application"


@dataclass(frozen=True, slots=True)
class RatchetKey:
    generation: int
    key: bytes
    nonce: bytes

    def __repr__(self) -> str:  # never show key material
        return f"RatchetKey(generation={self.generation}, <secret>)"


@dataclass(slots=True)
class HashRatchet:
    """One sender ratchet: ``ratchet_secret_[N]_[generation]`` and keys kept for late messages."""

    secret: bytes
    generation: int = 0
    retained: dict[int, tuple[bytes, bytes]] | None = None

    def __repr__(self) -> str:  # never show key material
        return f"HashRatchet(generation={self.generation}, <secret>)"


def _derive(cs: CipherSuiteProvider, secret: bytes, generation: int) -> tuple[bytes, bytes, bytes]:
    """(key, nonce, next secret) for ``generation`` from ``ratchet_secret_[N]_[generation]``."""
    return (
        cs.derive_tree_secret(secret, "key", generation, cs.nk),
        cs.derive_tree_secret(secret, "nonce", generation, cs.nn),
        cs.derive_tree_secret(secret, "secret", generation, cs.nh),
    )


@dataclass(frozen=True, slots=True)
class Lookup:
    """A key found for (leaf, type, generation), and how to advance the ratchet if it is used."""

    leaf: LeafIndex
    ratchet_type: RatchetType
    key: RatchetKey
    # Secret and generation after consuming, and keys skipped on the way (None: from cache).
    next_secret: bytes | None
    skipped: tuple[RatchetKey, ...]

    def __repr__(self) -> str:  # never show key material
        return f"Lookup(leaf={self.leaf}, generation={self.key.generation}, <secret>)"


class SecretTree:
    """Secret tree of one epoch for a group of ``n_leaves`` leaves (a power of two)."""

    __slots__ = ("_cs", "_max_forward", "_max_retained", "_n_leaves", "_nodes", "_ratchets")

    def __init__(
        self,
        cs: CipherSuiteProvider,
        encryption_secret: bytes,
        n_leaves: int,
        *,
        max_forward: int = DEFAULT_MAX_FORWARD,
        max_retained: int = DEFAULT_MAX_RETAINED,
    ) -> None:
        if n_leaves < 1 or n_leaves & (n_leaves - 1):
            raise UsageError(f"a secret tree needs a power-of-two leaf count, got {n_leaves}")
        self._cs = cs
        self._n_leaves = n_leaves
        self._nodes: dict[int, bytes] = {root(n_leaves): encryption_secret}
        self._ratchets: dict[tuple[int, RatchetType], HashRatchet] = {}
        self._max_forward = max_forward
        self._max_retained = max_retained

    @property
    def n_leaves(self) -> int:
        return self._n_leaves

    # --- Tree secrets --------------------------------------------------------------------

    def _leaf_secret(self, leaf: LeafIndex, *, consume: bool = True) -> bytes:
        """Derive and remove the leaf's node secret, consuming its ancestors (§9.2).

        With ``consume=False`` the secret is derived without changing the tree: a message
        that fails authentication afterwards must leave the state exactly as it was."""
        if not 0 <= leaf < self._n_leaves:
            raise SecretTreeError(f"leaf {leaf} is outside the secret tree", rule="ST-07")
        target = NodeIndex(2 * leaf)
        # Find the lowest stored ancestor-or-self; walk down from the root.
        node = root(self._n_leaves)
        path = []
        while True:
            path.append(node)
            if node == target or level(node) == 0:
                break
            node = left(node) if target < node else right(node)
        start = None
        for n in reversed(path):
            if n in self._nodes:
                start = n
                break
        if start is None:
            raise SecretTreeError(f"the secret of leaf {leaf} was already consumed")
        cs = self._cs
        node = start
        if not consume:
            secret = self._nodes[node]
            while node != target:
                side = b"left" if target < node else b"right"
                secret = cs.expand_with_label(secret, "tree", side, cs.nh)
                node = left(node) if target < node else right(node)
            return secret
        while node != target:
            secret = self._nodes.pop(node)
            lc, rc = left(node), right(node)
            self._nodes[lc] = cs.expand_with_label(secret, "tree", b"left", cs.nh)
            self._nodes[rc] = cs.expand_with_label(secret, "tree", b"right", cs.nh)
            node = lc if target < node else rc
        return self._nodes.pop(target)

    def _ratchet(self, leaf: LeafIndex, ratchet_type: RatchetType) -> HashRatchet:
        r = self._ratchets.get((leaf, ratchet_type))
        if r is not None:
            return r
        leaf_secret = self._leaf_secret(leaf)
        cs = self._cs
        hs = HashRatchet(cs.expand_with_label(leaf_secret, "handshake", b"", cs.nh))
        app = HashRatchet(cs.expand_with_label(leaf_secret, "application", b"", cs.nh))
        self._ratchets[(leaf, RatchetType.HANDSHAKE)] = hs
        self._ratchets[(leaf, RatchetType.APPLICATION)] = app
        return hs if ratchet_type is RatchetType.HANDSHAKE else app

    # --- Sending -------------------------------------------------------------------------

    def next_key(self, leaf: LeafIndex, ratchet_type: RatchetType) -> RatchetKey:
        """The key for the next message ``leaf`` sends; the ratchet advances (single use)."""
        r = self._ratchet(leaf, ratchet_type)
        key, nonce, nxt = _derive(self._cs, r.secret, r.generation)
        out = RatchetKey(r.generation, key, nonce)
        if r.generation >= 0xFFFFFFFF:
            raise SecretTreeError("sender ratchet exhausted (generation is a uint32)")
        r.secret = nxt
        r.generation += 1
        return out

    # --- Receiving -----------------------------------------------------------------------

    def lookup(self, leaf: LeafIndex, ratchet_type: RatchetType, generation: int) -> Lookup:
        """The key for ``generation`` of ``leaf``'s ratchet, without consuming it.

        Raises :class:`SecretTreeError` when the key was already used or deleted, or the
        generation lies beyond the forward window.
        """
        if not 0 <= leaf < self._n_leaves:
            raise SecretTreeError(f"sender leaf {leaf} is outside the group", rule="ST-07")
        r = self._ratchets.get((leaf, ratchet_type))
        if r is None:
            # The ratchet roots are derived without consuming tree secrets: only
            # :meth:`consume`, after the message authenticated, changes the tree.
            leaf_secret = self._leaf_secret(leaf, consume=False)
            label = "handshake" if ratchet_type is RatchetType.HANDSHAKE else "application"
            r = HashRatchet(self._cs.expand_with_label(leaf_secret, label, b"", self._cs.nh))
        if generation < r.generation:
            cached = r.retained.get(generation) if r.retained else None
            if cached is None:
                raise SecretTreeError(
                    f"key for generation {generation} was already used or is too old", rule="ST-01"
                )
            return Lookup(leaf, ratchet_type, RatchetKey(generation, *cached), None, ())
        if generation - r.generation > self._max_forward:
            raise SecretTreeError(
                f"generation {generation} is more than {self._max_forward} ahead of {r.generation}",
                rule="ST-05",
            )
        cs = self._cs
        secret = r.secret
        skipped: list[RatchetKey] = []
        for g in range(r.generation, generation):
            key, nonce, secret = _derive(cs, secret, g)
            skipped.append(RatchetKey(g, key, nonce))
        key, nonce, secret = _derive(cs, secret, generation)
        return Lookup(
            leaf, ratchet_type, RatchetKey(generation, key, nonce), secret, tuple(skipped)
        )

    def consume(self, found: Lookup) -> None:
        """Apply a :meth:`lookup` after the key decrypted a message: delete the key."""
        r = self._ratchet(found.leaf, found.ratchet_type)
        g = found.key.generation
        if found.next_secret is None:
            if r.retained is None or r.retained.pop(g, None) is None:
                raise SecretTreeError(f"key for generation {g} was already used", rule="ST-03")
            return
        if g < r.generation:
            # Another lookup of the same generation was consumed first: a replay.
            raise SecretTreeError(f"key for generation {g} was already used", rule="ST-03")
        if found.skipped:
            if r.retained is None:
                r.retained = {}
            for k in found.skipped:
                r.retained[k.generation] = (k.key, k.nonce)
            # Bound memory: forget the oldest skipped keys beyond the retention limit.
            # Insertion order is generation order, so the oldest keys come first.
            while len(r.retained) > self._max_retained:
                del r.retained[next(iter(r.retained))]
        r.secret = found.next_secret
        r.generation = g + 1

    def key_for(self, leaf: LeafIndex, ratchet_type: RatchetType, generation: int) -> RatchetKey:
        """Look up and consume in one step (for tests and tools)."""
        found = self.lookup(leaf, ratchet_type, generation)
        self.consume(found)
        return found.key


def sender_data_key_nonce(
    cs: CipherSuiteProvider, sender_data_secret: bytes, ciphertext: bytes
) -> tuple[bytes, bytes]:
    """Sender-data key and nonce from the first ``KDF.Nh`` bytes of the ciphertext (§6.3.2)."""
    sample = ciphertext[: cs.nh]
    return (
        cs.expand_with_label(sender_data_secret, "key", sample, cs.nk),
        cs.expand_with_label(sender_data_secret, "nonce", sample, cs.nn),
    )


def encode_secret_tree(tree: SecretTree, w: Writer) -> None:
    """The full state of a secret tree, for storage: unconsumed node secrets, ratchet
    positions and retained keys (private: never sent)."""
    w.uint32(tree._n_leaves)
    w.uint32(tree._max_forward)
    w.uint32(tree._max_retained)
    w.vector(sorted(tree._nodes.items()), _write_node_secret)
    ratchets = sorted(
        (
            (leaf, 0 if t is RatchetType.HANDSHAKE else 1, r)
            for (leaf, t), r in tree._ratchets.items()
        ),
        key=lambda item: (item[0], item[1]),
    )
    w.vector(ratchets, _write_ratchet)


def _write_node_secret(w: Writer, item: tuple[int, bytes]) -> None:
    w.uint32(item[0])
    w.opaque(item[1])


def _write_ratchet(w: Writer, item: tuple[int, int, HashRatchet]) -> None:
    leaf, kind, r = item
    w.uint32(leaf)
    w.uint8(kind)
    w.opaque(r.secret)
    w.uint32(r.generation)
    w.vector(sorted((r.retained or {}).items()), _write_retained)


def _write_retained(w: Writer, item: tuple[int, tuple[bytes, bytes]]) -> None:
    w.uint32(item[0])
    w.opaque(item[1][0])
    w.opaque(item[1][1])


def decode_secret_tree(cs: CipherSuiteProvider, r: Reader) -> SecretTree:
    n_leaves = r.uint32()
    max_forward = r.uint32()
    max_retained = r.uint32()
    if n_leaves < 1 or n_leaves & (n_leaves - 1):
        raise DecodeError(f"stored secret tree has {n_leaves} leaves", r.position)
    tree = SecretTree(cs, b"", n_leaves, max_forward=max_forward, max_retained=max_retained)
    tree._nodes = dict(r.vector(lambda rr: (rr.uint32(), rr.opaque())))

    def read_ratchet(rr: Reader) -> tuple[tuple[int, RatchetType], HashRatchet]:
        leaf = rr.uint32()
        kind = rr.uint8()
        if kind > 1:
            raise DecodeError(f"stored ratchet type {kind}", rr.position)
        secret = rr.opaque()
        generation = rr.uint32()
        retained = dict(rr.vector(lambda r3: (r3.uint32(), (r3.opaque(), r3.opaque()))))
        t = RatchetType.HANDSHAKE if kind == 0 else RatchetType.APPLICATION
        return (leaf, t), HashRatchet(secret, generation, retained or None)

    tree._ratchets = dict(r.vector(read_ratchet))
    return tree
