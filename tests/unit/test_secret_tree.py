"""Secret tree ratchets: out-of-order window, single use, two-phase receive (RFC 9420 §9)."""

from __future__ import annotations

import pytest

from mlspy.crypto import suite
from mlspy.errors import SecretTreeError, UsageError
from mlspy.schedule.secret_tree import RatchetType, SecretTree
from mlspy.tree.math import LeafIndex
from parity import raises_exactly

APP = RatchetType.APPLICATION
L0, L1 = LeafIndex(0), LeafIndex(1)


def _pair() -> tuple[SecretTree, SecretTree]:
    cs = suite(1)
    return SecretTree(cs, b"\x07" * 32, 4, max_forward=8), SecretTree(cs, b"\x07" * 32, 4)


def test_sender_and_receiver_agree_out_of_order() -> None:
    sender, receiver = _pair()
    keys = [sender.next_key(L1, APP) for _ in range(5)]
    assert [k.generation for k in keys] == [0, 1, 2, 3, 4]
    for g in (3, 0, 4, 1, 2):
        assert receiver.key_for(L1, APP, g) == keys[g]


def test_key_is_single_use() -> None:
    sender, receiver = _pair()
    sender.next_key(L1, APP)
    receiver.key_for(L1, APP, 0)
    with pytest.raises(SecretTreeError, match="already used"):
        receiver.key_for(L1, APP, 0)


def test_lookup_without_consume_changes_nothing() -> None:
    sender, receiver = _pair()
    k = sender.next_key(L1, APP)
    found = receiver.lookup(L1, APP, 3)
    assert found.key.generation == 3
    # Nothing consumed: generation 0 is still obtainable, and 3 again.
    assert receiver.key_for(L1, APP, 0) == k
    assert receiver.key_for(L1, APP, 3).generation == 3


def test_forward_window() -> None:
    sender, _ = _pair()
    with pytest.raises(SecretTreeError, match="ahead"):
        sender.lookup(L0, APP, 9)
    assert sender.lookup(L0, APP, 8).key.generation == 8


def test_retained_keys_are_bounded() -> None:
    cs = suite(1)
    tree = SecretTree(cs, b"\x01" * 32, 2, max_forward=100, max_retained=3)
    tree.key_for(L0, APP, 10)  # generations 0..9 skipped, only 7, 8, 9 retained
    for g in (7, 8, 9):
        tree.key_for(L0, APP, g)
    with raises_exactly(SecretTreeError):
        tree.key_for(L0, APP, 6)


def test_handshake_and_application_ratchets_differ() -> None:
    tree, _ = _pair()
    assert tree.next_key(L0, RatchetType.HANDSHAKE).key != tree.next_key(L0, APP).key


def test_out_of_range_leaf_and_bad_size() -> None:
    tree, _ = _pair()
    with raises_exactly(SecretTreeError):
        tree.lookup(LeafIndex(4), APP, 0)
    with pytest.raises(UsageError):
        SecretTree(suite(1), b"\x00" * 32, 3)


def test_replayed_lookup_cannot_be_consumed_twice() -> None:
    sender, receiver = _pair()
    sender.next_key(L1, APP)
    sender.next_key(L1, APP)
    a = receiver.lookup(L1, APP, 1)
    b = receiver.lookup(L1, APP, 1)
    receiver.consume(a)
    with raises_exactly(SecretTreeError):
        receiver.consume(b)
    old_a = receiver.lookup(L1, APP, 0)
    old_b = receiver.lookup(L1, APP, 0)
    receiver.consume(old_a)
    with raises_exactly(SecretTreeError):
        receiver.consume(old_b)
