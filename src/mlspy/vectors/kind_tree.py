"""Vector kinds ``tree-operations``, ``tree-validation`` and ``treekem``."""

from __future__ import annotations

from typing import Any

from mlspy.crypto import CipherSuiteProvider, suite
from mlspy.messages import (
    Add,
    GroupContext,
    Proposal,
    Remove,
    Update,
    UpdatePath,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from mlspy.tree.math import LeafIndex, NodeIndex, direct_path
from mlspy.tree.parent_hash import verify_parent_hashes
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import (
    LeafNodeParams,
    TreePrivateKeys,
    create_update_path,
    decrypt_update_path,
    merge_update_path,
    node_key_pair,
)
from mlspy.tree.validation import verify_leaf_signature
from mlspy.vectors.check import CheckFailed, Entry, expect, expect_eq, h


def _tree(cs: CipherSuiteProvider, data: str) -> RatchetTree:
    return RatchetTree.from_nodes(cs, decode_ratchet_tree(h(data)))


def check_tree_operations(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    tree = _tree(cs, e["tree_before"])
    expect_eq("tree_hash_before", tree.tree_hash(), h(e["tree_hash_before"]))
    body = Proposal.decode(h(e["proposal"])).body
    if isinstance(body, Add):
        tree.add_leaf(body.key_package.leaf_node)
    elif isinstance(body, Update):
        tree.update_leaf(LeafIndex(e["proposal_sender"]), body.leaf_node)
    elif isinstance(body, Remove):
        tree.remove_leaf(LeafIndex(body.removed))
    else:
        raise CheckFailed("proposal", f"unexpected proposal type {type(body).__name__}")
    expect_eq("tree_after", encode_ratchet_tree(tree.to_nodes()), h(e["tree_after"]))
    expect_eq("tree_hash_after", tree.tree_hash(), h(e["tree_hash_after"]))


def check_tree_validation(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    tree = _tree(cs, e["tree"])
    for x, want in enumerate(e["resolutions"]):
        expect_eq(f"resolutions[{x}]", tree.resolution(NodeIndex(x)), want)
    hashes = tree.tree_hashes()
    expect_eq("tree_hashes length", len(hashes), len(e["tree_hashes"]))
    for x, want in enumerate(e["tree_hashes"]):
        expect_eq(f"tree_hashes[{x}]", hashes[x], h(want))
    verify_parent_hashes(tree)
    group_id = h(e["group_id"])
    for i, leaf in tree.leaves():
        verify_leaf_signature(cs, leaf, group_id, i)


class _TreeKEM:
    def __init__(self, e: Entry) -> None:
        self.e = e
        self.cs = suite(e["cipher_suite"])
        self.group_id = h(e["group_id"])

    def tree(self) -> RatchetTree:
        return _tree(self.cs, self.e["ratchet_tree"])

    def context(self, tree_hash: bytes) -> bytes:
        return GroupContext(
            version=1,
            cipher_suite=self.e["cipher_suite"],
            group_id=self.group_id,
            epoch=self.e["epoch"],
            tree_hash=tree_hash,
            confirmed_transcript_hash=h(self.e["confirmed_transcript_hash"]),
            extensions=(),
        ).encode()

    def private_states(self, tree: RatchetTree) -> dict[int, tuple[TreePrivateKeys, bytes]]:
        """leaf index -> (private keys, signature private key), checked against the tree."""
        cs = self.cs
        out: dict[int, tuple[TreePrivateKeys, bytes]] = {}
        for lp in self.e["leaves_private"]:
            i = lp["index"]
            leaf = tree.leaf(LeafIndex(i))
            expect(f"leaf {i} is not blank", leaf is not None)
            assert leaf is not None
            enc = h(lp["encryption_priv"])
            expect_eq(f"leaf {i} encryption key", cs.hpke_public_key(enc), leaf.encryption_key)
            keys = TreePrivateKeys(LeafIndex(i), {NodeIndex(2 * i): enc})
            path = direct_path(NodeIndex(2 * i), tree.n_leaves)
            for ps in lp["path_secrets"]:
                x = NodeIndex(ps["node"])
                expect(f"leaf {i}: node {x} is on its direct path", x in path)
                priv, pub = node_key_pair(cs, h(ps["path_secret"]))
                expect_eq(f"leaf {i}: node {x} public key", tree.encryption_key(x), pub)
                keys.keys[x] = priv
            out[i] = (keys, h(lp["signature_priv"]))
        return out

    def process(
        self, privates: dict[int, tuple[TreePrivateKeys, bytes]], sender: int, path: UpdatePath
    ) -> dict[int, tuple[bytes, bytes]]:
        """Every other member processes ``path``: leaf -> (path secret, commit secret)."""
        tree = self.tree()
        fdp = merge_update_path(tree, LeafIndex(sender), path)
        verify_leaf_signature(self.cs, path.leaf_node, self.group_id, sender)
        context = self.context(tree.tree_hash())
        out = {}
        for j, (keys, _) in privates.items():
            if j == sender:
                continue
            _, path_secret, commit_secret = decrypt_update_path(
                tree, keys, LeafIndex(sender), path, fdp, context
            )
            out[j] = (path_secret, commit_secret)
        return out


def check_treekem(e: Entry) -> None:
    t = _TreeKEM(e)
    base = t.tree()
    privates = t.private_states(base)
    for up in e["update_paths"]:
        i = up["sender"]
        path = UpdatePath.decode(h(up["update_path"]))
        results = t.process(privates, i, path)
        for j, (path_secret, commit_secret) in results.items():
            want: Any = up["path_secrets"][j]
            expect_eq(f"sender {i}: leaf {j} path secret", path_secret, h(want))
            expect_eq(f"sender {i}: leaf {j} commit secret", commit_secret, h(up["commit_secret"]))
        merged = t.tree()
        merge_update_path(merged, LeafIndex(i), path)
        expect_eq(f"sender {i}: tree_hash_after", merged.tree_hash(), h(up["tree_hash_after"]))

        # Our own UpdatePath from the same sender must be processed by every other leaf.
        fresh = t.tree()
        old_leaf = fresh.leaf(LeafIndex(i))
        expect(f"sender {i} has private state", i in privates and old_leaf is not None)
        assert old_leaf is not None
        params = LeafNodeParams(
            old_leaf.signature_key,
            old_leaf.credential,
            old_leaf.capabilities,
            old_leaf.extensions,
        )
        created = create_update_path(
            fresh, LeafIndex(i), params, privates[i][1], t.group_id, t.context
        )
        for j, (_, commit_secret) in t.process(privates, i, created.update_path).items():
            expect_eq(
                f"sender {i}: leaf {j} commit secret of our UpdatePath",
                commit_secret,
                created.commit_secret,
            )
