"""TreeKEM (RFC 9420 §7.4 to §7.6): creating and processing UpdatePaths.

Theory of operation. A committer blanks its direct path, draws a random ``path_secret[0]`` and
derives one path secret per node of its *filtered* direct path
(``path_secret[n] = DeriveSecret(path_secret[n-1], "path")``), each giving a node key pair
(``DeriveKeyPair(DeriveSecret(path_secret[n], "node"))``). It sets the new public keys, chains
the parent hashes from the top down, signs its new leaf (source ``commit``), computes the
provisional GroupContext over the new tree hash, and encrypts each path secret to every node in
the resolution of the corresponding copath child — except leaves added by the same commit.
``commit_secret`` is ``DeriveSecret(last path secret, "path")``.

A receiver merges the public part (same blanking, same parent-hash chain, and checks the
leaf's ``parent_hash``), decrypts the one ciphertext addressed to a node it holds a private key
for under the lowest common ancestor with the sender, derives the path secrets up to the top,
and checks every derived public key against the UpdatePath.

A member's private state (:class:`TreePrivateKeys`) is its leaf's HPKE private key and the
private keys of the nodes on its direct path that it knows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace

from mlspy.crypto import CipherSuiteProvider, MessageSigner
from mlspy.crypto.rng import draw
from mlspy.errors import CryptoError, ParentHashError, UpdatePathError, UsageError
from mlspy.messages import (
    Capabilities,
    Credential,
    Extension,
    HPKECiphertext,
    LeafNode,
    LeafNodeSource,
    ParentNode,
    UpdatePath,
    UpdatePathNode,
)
from mlspy.tree.math import LeafIndex, NodeIndex, common_ancestor
from mlspy.tree.parent_hash import path_parent_hashes
from mlspy.tree.ratchet_tree import RatchetTree

UPDATE_PATH_NODE = "UpdatePathNode"
LEAF_NODE_TBS = "LeafNodeTBS"


def node_key_pair(cs: CipherSuiteProvider, path_secret: bytes) -> tuple[bytes, bytes]:
    """``DeriveKeyPair(DeriveSecret(path_secret, "node"))`` → (private, public) (§7.4)."""
    return cs.derive_key_pair(cs.derive_secret(path_secret, "node"))


def next_path_secret(cs: CipherSuiteProvider, path_secret: bytes) -> bytes:
    return cs.derive_secret(path_secret, "path")


@dataclass
class TreePrivateKeys:
    """A member's HPKE private keys: its leaf (node ``2*leaf``) and known direct-path nodes."""

    leaf: LeafIndex
    keys: dict[NodeIndex, bytes] = field(default_factory=dict)

    def copy(self) -> TreePrivateKeys:
        return TreePrivateKeys(self.leaf, dict(self.keys))

    def prune(self, tree: RatchetTree) -> None:
        """Forget keys of nodes that are now blank or were truncated away (§7.5)."""
        for x in [x for x in self.keys if tree.is_blank(x)]:
            del self.keys[x]

    def set_path(
        self, cs: CipherSuiteProvider, nodes: list[NodeIndex], path_secret: bytes
    ) -> bytes:
        """Install keys for ``nodes`` (bottom-up) from the first one's path secret; returns the
        path secret one above the last node."""
        for x in nodes:
            self.keys[x] = node_key_pair(cs, path_secret)[0]
            path_secret = next_path_secret(cs, path_secret)
        return path_secret

    def __repr__(self) -> str:  # never show private keys
        return f"TreePrivateKeys(leaf={self.leaf}, nodes={sorted(self.keys)}, <secret>)"


@dataclass(frozen=True, slots=True)
class LeafNodeParams:
    """What the committer puts in its new leaf besides keys and parent hash."""

    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    extensions: tuple[Extension, ...] = ()


@dataclass(frozen=True)
class CreatedUpdatePath:
    update_path: UpdatePath
    commit_secret: bytes
    # The path secret of each filtered-direct-path node, for Welcome messages (§12.4.3.1).
    path_secrets: dict[NodeIndex, bytes]
    private: TreePrivateKeys

    def __repr__(self) -> str:  # never show path secrets
        return f"CreatedUpdatePath(nodes={sorted(self.path_secrets)}, <secret>)"


def sign_leaf_node(
    cs: CipherSuiteProvider,
    signature_private_key: bytes | MessageSigner,
    leaf: LeafNode,
    group_id: bytes | None,
    leaf_index: int | None,
) -> LeafNode:
    """Return ``leaf`` with its signature over LeafNodeTBS (§7.2) replaced; the key is the
    raw private key or a :class:`~mlspy.crypto.MessageSigner`."""
    unsigned = replace(leaf, signature=b"")
    signature = cs.sign_with_label(
        signature_private_key, LEAF_NODE_TBS, unsigned.tbs(group_id, leaf_index)
    )
    return replace(unsigned, signature=signature)


def _excluding(resolution: list[NodeIndex], excluded: Collection[int]) -> list[NodeIndex]:
    if not excluded:
        return resolution
    return [x for x in resolution if not (x & 1 == 0 and (x >> 1) in excluded)]


def create_update_path(
    tree: RatchetTree,
    leaf: LeafIndex,
    params: LeafNodeParams,
    signature_private_key: bytes | MessageSigner,
    group_id: bytes,
    context_for: Callable[[bytes], bytes],
    *,
    excluded_leaves: Collection[int] = (),
    path_secret: bytes | None = None,
    rng: Callable[[int], bytes] | None = None,
) -> CreatedUpdatePath:
    """Refresh ``leaf``'s path in ``tree`` (mutated in place) and build the UpdatePath.

    ``context_for(tree_hash)`` returns the encoded provisional GroupContext for the new tree
    hash; ``excluded_leaves`` are the leaves added by the same commit (§7.6).

    ``rng`` (``os.urandom`` by default) supplies the randomness: the new leaf HPKE key pair
    (RFC 9180 §7.1.3 ``DeriveKeyPair`` over ``rng(Nsk)``), the leaf's ``path_secret[0]``
    unless ``path_secret`` is given (§7.4), and the HPKE encapsulations of EncryptWithLabel
    (§5.1.3). With a deterministic ``rng`` the UpdatePath is a function of the inputs (up to
    ECDSA signature randomness).
    """
    cs = tree.cipher_suite
    if tree.leaf(leaf) is None:
        raise UsageError(f"leaf {leaf} is blank")
    tree.blank_direct_path(leaf)
    fdp = tree.filtered_direct_path(leaf)

    leaf_priv, leaf_pub = cs.hpke_key_pair(rng=rng)
    private = TreePrivateKeys(leaf, {NodeIndex(2 * leaf): leaf_priv})
    secret = path_secret if path_secret is not None else draw(rng, cs.nh)
    secrets: dict[NodeIndex, bytes] = {}
    publics: list[bytes] = []
    for x in fdp:
        secrets[x] = secret
        priv, pub = node_key_pair(cs, secret)
        private.keys[x] = priv
        publics.append(pub)
        tree.set_parent(x, ParentNode(pub, b"", ()))
        secret = next_path_secret(cs, secret)
    commit_secret = secret

    _, leaf_parent_hash = path_parent_hashes(tree, leaf, fdp)
    new_leaf = sign_leaf_node(
        cs,
        signature_private_key,
        LeafNode(
            leaf_pub,
            params.signature_key,
            params.credential,
            params.capabilities,
            LeafNodeSource.commit,
            None,
            leaf_parent_hash,
            params.extensions,
            b"",
        ),
        group_id,
        leaf,
    )
    tree.set_leaf(leaf, new_leaf)

    context = context_for(tree.tree_hash())
    nodes: list[UpdatePathNode] = []
    for x, pub in zip(fdp, publics, strict=True):
        resolution = _excluding(tree.resolution(tree.copath_child(x, leaf)), excluded_leaves)
        ciphertexts = []
        for r in resolution:
            key = tree.encryption_key(r)
            if key is None:  # pragma: no cover - resolutions hold non-blank nodes only
                raise UsageError(f"node {r} in a resolution is blank")
            kem_output, ct = cs.encrypt_with_label(
                key, UPDATE_PATH_NODE, context, secrets[x], rng=rng
            )
            ciphertexts.append(HPKECiphertext(kem_output, ct))
        nodes.append(UpdatePathNode(pub, tuple(ciphertexts)))
    return CreatedUpdatePath(UpdatePath(new_leaf, tuple(nodes)), commit_secret, secrets, private)


def merge_update_path(
    tree: RatchetTree,
    sender: LeafIndex,
    path: UpdatePath,
    *,
    excluded_leaves: Collection[int] = (),
    joiner: bool = False,
) -> list[NodeIndex]:
    """Merge the public part of ``path`` into ``tree`` and check it (§7.5, §12.4.2).

    Checks before touching the tree: the path length, the ciphertext count at every node
    (resolution of the copath child minus ``excluded_leaves``), that the new leaf key differs
    from the committer's current one, that no new public key is already in the tree, and that
    every new key is a usable KEM key. Then merges and checks the leaf's parent_hash. On a
    failure after merging started the tree is left modified: callers work on a copy.
    For an external commit the caller first inserts the joiner's leaf and sets ``joiner``
    (there is no previous leaf key to differ from).

    Returns the sender's filtered direct path. Leaf signature and §7.3 checks are the
    caller's (they need the group context).
    """
    cs = tree.cipher_suite
    current = tree.leaf(sender)
    if current is None:
        raise UpdatePathError(f"the committer's leaf {sender} is blank")
    if path.leaf_node.leaf_node_source != LeafNodeSource.commit:
        raise UpdatePathError(
            "an UpdatePath leaf_node must have leaf_node_source commit", rule="LN-19"
        )
    # Blanking the direct path does not change any copath resolution, so the filtered direct
    # path and resolutions can be computed before mutating.
    fdp = tree.filtered_direct_path(sender)
    if len(path.nodes) != len(fdp):
        raise UpdatePathError(
            f"UpdatePath has {len(path.nodes)} nodes, the filtered direct path {len(fdp)}",
            rule="CM-15",
        )
    for x, node in zip(fdp, path.nodes, strict=True):
        expected = len(_excluding(tree.resolution(tree.copath_child(x, sender)), excluded_leaves))
        if len(node.encrypted_path_secret) != expected:
            raise UpdatePathError(
                f"node {x} has {len(node.encrypted_path_secret)} ciphertexts for a resolution "
                f"of {expected}",
                rule="CM-16",
            )
    new_keys = [path.leaf_node.encryption_key, *(n.encryption_key for n in path.nodes)]
    if not joiner and path.leaf_node.encryption_key == current.encryption_key:
        raise UpdatePathError(
            "the committer's new leaf must have a new encryption key", rule="LN-21"
        )
    if len(set(new_keys)) != len(new_keys):
        raise UpdatePathError("an UpdatePath repeats a public key")
    for key in new_keys:
        holder = tree.find_encryption_key(key)
        if holder is not None and holder != 2 * sender:
            raise UpdatePathError(f"UpdatePath key already used by node {holder}", rule="CM-19")
        try:
            cs.hpke.validate_public(key)
        except CryptoError as exc:
            raise UpdatePathError("UpdatePath carries an invalid public key", rule="CM-20") from exc
    tree.blank_direct_path(sender)
    for x, node in zip(fdp, path.nodes, strict=True):
        tree.set_parent(x, ParentNode(node.encryption_key, b"", ()))
    _, leaf_parent_hash = path_parent_hashes(tree, sender, fdp)
    if path.leaf_node.parent_hash != leaf_parent_hash:
        raise ParentHashError(
            "the committer's leaf parent_hash does not match its path", rule="CM-21"
        )
    tree.set_leaf(sender, path.leaf_node)
    return fdp


def decrypt_update_path(
    tree: RatchetTree,
    private: TreePrivateKeys,
    sender: LeafIndex,
    path: UpdatePath,
    fdp: list[NodeIndex],
    context: bytes,
    *,
    excluded_leaves: Collection[int] = (),
) -> tuple[TreePrivateKeys, bytes, bytes]:
    """Decrypt our path secret from a merged UpdatePath (§7.6).

    Returns the updated private keys (a new object), the path secret decrypted at the lowest
    common ancestor, and the commit secret.
    """
    cs = tree.cipher_suite
    me = private.leaf
    if me == sender:
        raise UsageError("a committer does not decrypt its own UpdatePath")
    lca = common_ancestor(NodeIndex(2 * me), NodeIndex(2 * sender))
    try:
        index = fdp.index(lca)
    except ValueError as exc:
        raise UpdatePathError("our common ancestor with the committer is not on its path") from exc
    resolution = _excluding(tree.resolution(tree.copath_child(lca, sender)), excluded_leaves)
    ciphertexts = path.nodes[index].encrypted_path_secret
    if len(ciphertexts) != len(resolution):
        raise UpdatePathError(
            f"node {lca} has {len(ciphertexts)} ciphertexts for a resolution of {len(resolution)}",
            rule="CM-16",
        )
    found = next(
        ((pos, private.keys[x]) for pos, x in enumerate(resolution) if x in private.keys), None
    )
    if found is None:
        raise UpdatePathError("no private key for any node in the copath resolution")
    position, key = found
    ct = ciphertexts[position]
    try:
        path_secret = cs.decrypt_with_label(
            key, UPDATE_PATH_NODE, context, ct.kem_output, ct.ciphertext
        )
    except CryptoError as exc:
        raise UpdatePathError(
            "cannot decrypt the path secret addressed to us", rule="CM-17"
        ) from exc

    updated = private.copy()
    for x in tree.direct_path(sender):
        updated.keys.pop(x, None)  # replaced or blanked by the commit
    secret = path_secret
    for k in range(index, len(fdp)):
        priv, pub = node_key_pair(cs, secret)
        if pub != path.nodes[k].encryption_key:
            raise UpdatePathError(
                f"derived public key of node {fdp[k]} does not match", rule="CM-18"
            )
        updated.keys[fdp[k]] = priv
        secret = next_path_secret(cs, secret)
    updated.prune(tree)
    return updated, path_secret, secret
