"""Tree validation on join (RFC 9420 §12.4.3.1, §7.3, §7.9.2): each broken rule is rejected
with its own ValidationError subclass, and validation is linear in the number of leaves."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tree_builder import GROUP_ID, TreeBuilder, build_tree, make_leaf

from mlspy.crypto import CipherSuiteProvider
from mlspy.errors import (
    CredentialTypeError,
    DuplicateEncryptionKeyError,
    DuplicateSignatureKeyError,
    LeafSignatureError,
    ParentHashError,
    TreeHashError,
    UnmergedLeafError,
    ValidationError,
)
from mlspy.messages import Certificate, Credential, LeafNode, ParentNode
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import sign_leaf_node
from mlspy.tree.validation import validate_tree
from parity import raises_exactly


def _valid() -> TreeBuilder:
    # 6 members, two committed paths, one late add: parents, blanks and an unmerged leaf.
    return build_tree(6, committers=(0, 4), late_adds=1)


def _validate(tree: RatchetTree) -> None:
    validate_tree(tree, group_id=GROUP_ID, tree_hash=tree.tree_hash())


def _resign(b: TreeBuilder, i: int, leaf: LeafNode, signer: bytes | None = None) -> None:
    assert b.tree is not None
    key = signer if signer is not None else b.members[i].signature_priv
    b.tree.set_leaf(LeafIndex(i), sign_leaf_node(b.cs, key, leaf, None, None))


def _replace(leaf: LeafNode, **changes: object) -> LeafNode:
    fields = {
        "encryption_key": leaf.encryption_key,
        "signature_key": leaf.signature_key,
        "credential": leaf.credential,
        "capabilities": leaf.capabilities,
        "leaf_node_source": leaf.leaf_node_source,
        "lifetime": leaf.lifetime,
        "parent_hash": leaf.parent_hash,
        "extensions": leaf.extensions,
        "signature": leaf.signature,
    }
    fields.update(changes)
    return LeafNode(**fields)  # type: ignore[arg-type]


def test_valid_tree_passes() -> None:
    b = _valid()
    assert b.tree is not None
    _validate(b.tree)


def test_wrong_tree_hash() -> None:
    b = _valid()
    assert b.tree is not None
    with raises_exactly(TreeHashError, r"§12\.4\.3\.1"):
        validate_tree(b.tree, group_id=GROUP_ID, tree_hash=b"\x00" * 32)


def test_one_wrong_parent_hash() -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    x = NodeIndex(3)  # set by leaf 0's commit
    p = tree.parent(x)
    assert p is not None
    tree.set_parent(x, ParentNode(p.encryption_key, b"\x01" * 32, p.unmerged_leaves))
    with raises_exactly(ParentHashError, r"§7\.9\.2"):
        _validate(tree)


def test_duplicate_encryption_key() -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    other = tree.leaf(LeafIndex(2))
    leaf = tree.leaf(LeafIndex(3))
    assert other is not None and leaf is not None
    _resign(b, 3, _replace(leaf, encryption_key=other.encryption_key))
    with raises_exactly(DuplicateEncryptionKeyError, r"§7\.3"):
        _validate(tree)


def test_duplicate_encryption_key_between_parent_and_leaf() -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    p = tree.parent(NodeIndex(3))
    leaf = tree.leaf(LeafIndex(3))
    assert p is not None and leaf is not None
    _resign(b, 3, _replace(leaf, encryption_key=p.encryption_key))
    with raises_exactly(DuplicateEncryptionKeyError):
        _validate(tree)


def test_duplicate_signature_key() -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    other = tree.leaf(LeafIndex(2))
    leaf = tree.leaf(LeafIndex(3))
    assert other is not None and leaf is not None
    _resign(b, 3, _replace(leaf, signature_key=other.signature_key), b.members[2].signature_priv)
    with raises_exactly(DuplicateSignatureKeyError, r"§7\.3"):
        _validate(tree)


def test_bad_leaf_signature() -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    # Leaf 6 lies in no parent hash's sibling subtree, so only its signature breaks.
    leaf = tree.leaf(LeafIndex(6))
    assert leaf is not None
    sig = bytearray(leaf.signature)
    sig[0] ^= 1
    tree.set_leaf(LeafIndex(6), _replace(leaf, signature=bytes(sig)))
    with raises_exactly(LeafSignatureError, "leaf 6"):
        _validate(tree)


def test_credential_type_not_supported_by_another_member() -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    leaf = tree.leaf(LeafIndex(6))
    assert leaf is not None
    x509 = Credential.x509((Certificate(b"not parsed here"),))
    caps = leaf.capabilities
    new_caps = type(caps)(
        caps.versions, caps.cipher_suites, caps.extensions, caps.proposals, (1, 2)
    )
    _resign(b, 6, _replace(leaf, credential=x509, capabilities=new_caps))
    with raises_exactly(CredentialTypeError, "does not support credential type"):
        _validate(tree)


def test_unmerged_leaf_that_does_not_belong() -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    x = NodeIndex(3)  # covers leaves 0..3; leaf 6 is elsewhere
    p = tree.parent(x)
    assert p is not None
    tree.set_parent(x, ParentNode(p.encryption_key, p.parent_hash, (6,)))
    with raises_exactly(UnmergedLeafError, "not a descendant"):
        _validate(tree)


@pytest.mark.parametrize(
    ("unmerged", "message"),
    [((99,), "blank or absent"), ((2, 1), "sorted"), ((1, 1), "sorted")],
)
def test_unmerged_leaf_lists_malformed(unmerged: tuple[int, ...], message: str) -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    p = tree.parent(NodeIndex(3))
    assert p is not None
    tree.set_parent(NodeIndex(3), ParentNode(p.encryption_key, p.parent_hash, unmerged))
    with raises_exactly(UnmergedLeafError, message):
        _validate(tree)


def test_validating_4096_leaves_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    b = build_tree(4096, committers=(0, 4095))
    tree = b.tree
    assert tree is not None
    calls = {"verify": 0, "eq": 0}
    original_verify = CipherSuiteProvider.verify_with_label

    def counting_verify(self: CipherSuiteProvider, *args: bytes) -> bool:
        calls["verify"] += 1
        return original_verify(self, *args)  # type: ignore[arg-type]

    original_eq: Callable[[LeafNode, object], bool] = LeafNode.__eq__

    def counting_eq(self: LeafNode, other: object) -> bool:
        calls["eq"] += 1
        return original_eq(self, other)

    monkeypatch.setattr(CipherSuiteProvider, "verify_with_label", counting_verify)
    monkeypatch.setattr(LeafNode, "__eq__", counting_eq)
    _validate(tree)
    assert calls["verify"] == 4096  # one signature per leaf
    assert calls["eq"] == 0  # no leaf compared with another


def test_validation_does_not_mutate() -> None:
    b = _valid()
    tree = b.tree
    assert tree is not None
    before = tree.to_nodes()
    with pytest.raises(ValidationError):
        validate_tree(tree, group_id=GROUP_ID, tree_hash=b"")
    assert tree.to_nodes() == before


def test_leaf_without_own_credential_type_in_capabilities() -> None:
    b = TreeBuilder()
    b.add(b"a")
    leaf, _, _ = make_leaf(b.cs, b"b", credentials=(2,))
    assert b.tree is not None
    b.tree.add_leaf(leaf)
    with raises_exactly(CredentialTypeError):
        _validate(b.tree)
