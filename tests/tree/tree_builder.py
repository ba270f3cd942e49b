"""Build real, signed ratchet trees for tests: members added from KeyPackage-style leaves,
then paths committed with TreeKEM, so parent hashes and unmerged leaves are genuine."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlspy.crypto import CipherSuiteProvider, suite
from mlspy.messages import (
    Capabilities,
    Credential,
    GroupContext,
    LeafNode,
    LeafNodeSource,
    Lifetime,
)
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import (
    CreatedUpdatePath,
    LeafNodeParams,
    TreePrivateKeys,
    create_update_path,
    sign_leaf_node,
)

GROUP_ID = b"test-group"


@dataclass
class Member:
    signature_priv: bytes
    private: TreePrivateKeys


def make_leaf(
    cs: CipherSuiteProvider,
    identity: bytes,
    *,
    credential: Credential | None = None,
    credentials: tuple[int, ...] = (1,),
    signature_key: tuple[bytes, bytes] | None = None,
    encryption_key: tuple[bytes, bytes] | None = None,
) -> tuple[LeafNode, bytes, bytes]:
    """A signed key_package leaf → (leaf, signature private key, encryption private key)."""
    sig_priv, sig_pub = signature_key or cs.signature_key_pair()
    enc_priv, enc_pub = encryption_key or cs.hpke_key_pair()
    leaf = LeafNode(
        enc_pub,
        sig_pub,
        credential or Credential.basic(identity),
        Capabilities((1,), (int(cs.id),), (), (), credentials),
        LeafNodeSource.key_package,
        Lifetime(1_700_000_000, 1_700_000_000 + 365 * 24 * 3600),
        None,
        (),
        b"",
    )
    return sign_leaf_node(cs, sig_priv, leaf, None, None), sig_priv, enc_priv


def context_for(cs: CipherSuiteProvider, epoch: int = 1):  # type: ignore[no-untyped-def]
    def build(tree_hash: bytes) -> bytes:
        return GroupContext(1, int(cs.id), GROUP_ID, epoch, tree_hash, b"", ()).encode()

    return build


@dataclass
class TreeBuilder:
    cs: CipherSuiteProvider = field(default_factory=lambda: suite(1))
    tree: RatchetTree | None = None
    members: dict[int, Member] = field(default_factory=dict)

    def add(self, identity: bytes | None = None) -> LeafIndex:
        leaf, sig_priv, enc_priv = make_leaf(self.cs, identity or b"member")
        if self.tree is None:
            self.tree = RatchetTree.with_one_leaf(self.cs, leaf)
            index = LeafIndex(0)
        else:
            index = self.tree.add_leaf(leaf)
        self.members[index] = Member(sig_priv, TreePrivateKeys(index, {2 * index: enc_priv}))  # type: ignore[dict-item]
        return index

    def commit(self, leaf: int) -> CreatedUpdatePath:
        assert self.tree is not None
        old = self.tree.leaf(LeafIndex(leaf))
        assert old is not None
        params = LeafNodeParams(old.signature_key, old.credential, old.capabilities)
        created = create_update_path(
            self.tree,
            LeafIndex(leaf),
            params,
            self.members[leaf].signature_priv,
            GROUP_ID,
            context_for(self.cs),
        )
        self.members[leaf].private = created.private
        return created


def build_tree(n: int, committers: tuple[int, ...] = (), late_adds: int = 0) -> TreeBuilder:
    """``n`` members, then each of ``committers`` commits a path, then ``late_adds`` more
    members are added (and so become unmerged leaves of the committed parents)."""
    b = TreeBuilder()
    for i in range(n):
        b.add(f"member-{i}".encode())
    for c in committers:
        b.commit(c)
    for i in range(late_adds):
        b.add(f"late-{i}".encode())
    return b
