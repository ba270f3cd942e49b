"""Primitives of every cipher suite: HPKE paths agree, failures are CryptoError."""

from __future__ import annotations

import pytest

from mlspy.crypto import CipherSuite, suite
from mlspy.errors import CryptoError, UnsupportedCipherSuiteError

ALL = list(CipherSuite)


@pytest.mark.parametrize("cs_id", ALL, ids=[f"suite{int(c)}" for c in ALL])
def test_native_and_composed_hpke_interoperate(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    sk, pk = cs.hpke_key_pair()
    assert cs.hpke_public_key(sk) == pk
    info, pt = b"info", b"path secret" * 3
    enc, ct = cs.hpke.seal(pk, info, b"", pt)
    assert len(enc) == cs.hpke.enc_size
    assert cs.hpke.open_composed(sk, enc, info, b"", ct) == pt
    enc, ct = cs.hpke.seal_composed(pk, info, b"", pt)
    assert cs.hpke.open(sk, enc, info, b"", ct) == pt


@pytest.mark.parametrize("cs_id", ALL, ids=[f"suite{int(c)}" for c in ALL])
def test_hpke_rejects_tampering(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    sk, pk = cs.hpke_key_pair()
    kem_output, ct = cs.encrypt_with_label(pk, "UpdatePathNode", b"ctx", b"secret")
    with pytest.raises(CryptoError):
        cs.decrypt_with_label(sk, "UpdatePathNode", b"other ctx", kem_output, ct)
    with pytest.raises(CryptoError):
        cs.decrypt_with_label(
            sk, "UpdatePathNode", b"ctx", kem_output, ct[:-1] + bytes([ct[-1] ^ 1])
        )
    with pytest.raises(CryptoError):
        cs.decrypt_with_label(sk, "UpdatePathNode", b"ctx", kem_output[:-1], ct)
    with pytest.raises(CryptoError):
        cs.decrypt_with_label(sk, "UpdatePathNode", b"ctx", b"\x00" * len(kem_output), ct)


@pytest.mark.parametrize("cs_id", ALL, ids=[f"suite{int(c)}" for c in ALL])
def test_hpke_exporter_agrees(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    sk, pk = cs.hpke_key_pair()
    enc, secret = cs.hpke.send_export(pk, b"", b"MLS 1.0 external init secret", cs.nh)
    assert len(secret) == cs.nh
    assert cs.hpke.receive_export(sk, enc, b"", b"MLS 1.0 external init secret", cs.nh) == secret
    other_sk, _ = cs.hpke_key_pair()
    assert (
        cs.hpke.receive_export(other_sk, enc, b"", b"MLS 1.0 external init secret", cs.nh) != secret
    )


@pytest.mark.parametrize("cs_id", ALL, ids=[f"suite{int(c)}" for c in ALL])
def test_derive_key_pair_is_deterministic(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    a = cs.derive_key_pair(b"\x01" * cs.nh)
    assert a == cs.derive_key_pair(b"\x01" * cs.nh)
    assert a != cs.derive_key_pair(b"\x02" * cs.nh)
    assert cs.hpke_public_key(a[0]) == a[1]


@pytest.mark.parametrize("cs_id", ALL, ids=[f"suite{int(c)}" for c in ALL])
def test_signatures(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    sk, pk = cs.signature_key_pair()
    assert cs.signature_public_key(sk) == pk
    sig = cs.sign_with_label(sk, "LeafNodeTBS", b"content")
    assert cs.verify_with_label(pk, "LeafNodeTBS", b"content", sig)
    assert not cs.verify_with_label(pk, "KeyPackageTBS", b"content", sig)
    assert not cs.verify_with_label(pk, "LeafNodeTBS", b"content!", sig)
    assert not cs.verify_with_label(pk, "LeafNodeTBS", b"content", sig[:-1])
    assert not cs.verify_with_label(b"\x00" * 3, "LeafNodeTBS", b"content", sig)
    with pytest.raises(CryptoError):
        cs.sign_with_label(b"", "LeafNodeTBS", b"content")


def test_ecdsa_signatures_are_der() -> None:
    cs = suite(CipherSuite.MLS_128_DHKEMP256_AES128GCM_SHA256_P256)
    sk, _ = cs.signature_key_pair()
    sig = cs.sign_with_label(sk, "x", b"y")
    assert sig[0] == 0x30 and sig[1] == len(sig) - 2  # DER SEQUENCE


def test_mac_and_aead() -> None:
    cs = suite(1)
    tag = cs.mac(b"k" * 32, b"data")
    assert cs.verify_mac(b"k" * 32, b"data", tag)
    assert not cs.verify_mac(b"k" * 32, b"data", tag[:-1] + bytes([tag[-1] ^ 1]))
    ct = cs.aead_seal(b"k" * 16, b"n" * 12, b"aad", b"pt")
    assert cs.aead_open(b"k" * 16, b"n" * 12, b"aad", ct) == b"pt"
    with pytest.raises(CryptoError):
        cs.aead_open(b"k" * 16, b"n" * 12, b"aad!", ct)
    with pytest.raises(CryptoError):
        cs.aead_open(b"k" * 16, b"n" * 11, b"aad", ct)


def test_unknown_suite() -> None:
    with pytest.raises(UnsupportedCipherSuiteError, match="0x0a0a"):
        suite(0x0A0A)


def test_invalid_hpke_keys() -> None:
    cs = suite(2)
    with pytest.raises(CryptoError):
        cs.hpke_public_key(b"\x00" * 32)  # zero scalar is not a valid P-256 key
    with pytest.raises(CryptoError):
        cs.encrypt_with_label(b"\x04" + b"\x00" * 64, "x", b"", b"pt")


@pytest.mark.parametrize("cs_id", [1, 3, 4, 6])
def test_small_order_points_rejected(cs_id: int) -> None:
    cs = suite(cs_id)
    zero = bytes(cs.hpke.enc_size)
    with pytest.raises(CryptoError):
        cs.hpke.validate_public(zero)
    with pytest.raises(CryptoError):
        cs.encrypt_with_label(zero, "UpdatePathNode", b"", b"secret")
