"""Known answers for the post-quantum primitives (issue 20), from published vectors stored in
``tests/data/pq`` (each file names its source):

* ``hpke_pq.json`` — draft-ietf-hpke-pq's base-mode vectors for ML-KEM-768, ML-KEM-1024 and
  X-Wing with two-stage HKDF: ``DeriveKeyPair(ikmR)`` → (skRm, pkRm), ``Decap(enc)`` → the
  shared secret, the key schedule → key, base_nonce, exporter secret, every encryption opened
  (with its aad) and every export reproduced.
* ``xwing.json`` — draft-connolly-cfrg-xwing-kem's vectors: seed → (sk, pk), decapsulation.
* ``mlkem_wycheproof.json`` — Wycheproof ML-KEM: seed → ek, ``decapsulate(c)`` → K; bad seeds
  and ciphertexts refused.
* ``mldsa_wycheproof.json`` — Wycheproof ML-DSA-44/65/87: seed → public key, signatures that must
  and must not verify (pure ML-DSA; a context string where the case has one).

Encapsulation cannot be checked against vectors (``cryptography`` has no derandomized ML-KEM
encapsulation); round trips cover it, here and in ``test_crypto.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

from mlspy.crypto.hpke import AeadId, Hpke, KdfId, KemId
from mlspy.crypto.pqkem import ML_KEM_768, X_WING, Derivation, PqKem
from mlspy.crypto.signature import SignatureScheme, Signer
from mlspy.errors import CryptoError

DATA = Path(__file__).resolve().parents[1] / "data" / "pq"


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


HPKE_PQ = _load("hpke_pq.json")["vectors"]
XWING = _load("xwing.json")["vectors"]
MLKEM = _load("mlkem_wycheproof.json")["tests"]
MLDSA = _load("mldsa_wycheproof.json")["tests"]
u = bytes.fromhex


def test_the_stored_vectors_cover_every_kem() -> None:
    assert {v["kem_id"] for v in HPKE_PQ} == {0x41, 0x42, 0x647A}
    assert len(XWING) == 3 and set(MLKEM) == {"ML-KEM-768", "ML-KEM-1024"}
    assert set(MLDSA) == {"ML-DSA-44", "ML-DSA-65", "ML-DSA-87"}


@pytest.mark.parametrize(
    "v", HPKE_PQ, ids=lambda v: f"kem{v['kem_id']:#06x}-kdf{v['kdf_id']}-aead{v['aead_id']}"
)
def test_hpke_pq_vectors(v: dict[str, Any]) -> None:
    hpke = Hpke(KemId(v["kem_id"]), KdfId(v["kdf_id"]), AeadId(v["aead_id"]), Derivation.HPKE_PQ)
    sk, pk = hpke.derive_key_pair(u(v["ikmR"]))
    assert (sk, pk) == (u(v["skRm"]), u(v["pkRm"]))
    hpke.validate_public(pk)
    shared = hpke._decap(u(v["enc"]), sk)
    assert shared == u(v["shared_secret"])
    key, nonce, exporter = hpke._key_schedule(shared, u(v["info"]))
    assert (key, nonce, exporter) == (u(v["key"]), u(v["base_nonce"]), u(v["exporter_secret"]))
    # Sequence number 0, the single-shot API's (later ones need a context's counter).
    first = v["encryptions"][0]
    opened = hpke.open(sk, u(v["enc"]), u(v["info"]), u(first["aad"]), u(first["ct"]))
    assert opened == u(first["pt"])
    for x in v["exports"]:
        got = hpke.receive_export(sk, u(v["enc"]), u(v["info"]), u(x["exporter_context"]), x["L"])
        assert got == u(x["exported_value"])


@pytest.mark.parametrize("v", XWING, ids=lambda v: v["pk"][:8])
def test_xwing_vectors(v: dict[str, str]) -> None:
    kem = PqKem(X_WING, Derivation.HPKE_PQ)
    assert kem.public_key_of(u(v["sk"])) == u(v["pk"])
    assert kem.decap(u(v["ct"]), u(v["sk"])) == u(v["ss"])
    # A round trip: what we encapsulate to the vector's key, its private key opens.
    ss, ct = kem.encap(u(v["pk"]))
    assert kem.decap(ct, u(v["sk"])) == ss


@pytest.mark.parametrize(
    ("name", "t"),
    [(name, t) for name, tests in MLKEM.items() for t in tests],
    ids=lambda x: x if isinstance(x, str) else str(x["tcId"]),
)
def test_mlkem_wycheproof(name: str, t: dict[str, Any]) -> None:
    kem_id = ML_KEM_768 if name == "ML-KEM-768" else 0x42
    kem = PqKem(kem_id, Derivation.HPKE_PQ)
    if t["result"] == "valid":
        assert kem.public_key_of(u(t["seed"])) == u(t["ek"])
        assert kem.decap(u(t["c"]), u(t["seed"])) == u(t["K"])
        return
    with pytest.raises(CryptoError):
        kem.decap(u(t["c"]), u(t["seed"]))


def test_mlkem_keys_match_cryptography_directly() -> None:
    # The seed is the private key (FIPS 203 §6.1's d||z), as cryptography takes it.
    t = MLKEM["ML-KEM-768"][0]
    native = mlkem.MLKEM768PrivateKey.from_seed_bytes(u(t["seed"]))
    assert native.public_key().public_bytes_raw() == u(t["ek"])


@pytest.mark.parametrize("name", sorted(MLDSA))
def test_mldsa_wycheproof(name: str) -> None:
    scheme = {
        "ML-DSA-44": SignatureScheme.mldsa44,
        "ML-DSA-65": SignatureScheme.mldsa65,
        "ML-DSA-87": SignatureScheme.mldsa87,
    }[name]
    signer = Signer(scheme)
    for group in MLDSA[name]["sign_seed"]:
        assert signer.public_key_of(u(group["privateSeed"])) == u(group["publicKey"])
        for t in group["tests"]:
            if "ctx" in t:
                continue  # MLS signs with the empty context (checked below through cryptography)
            ok = signer.verify(u(group["publicKey"]), u(t["msg"]), u(t["sig"]))
            assert ok == (t["result"] == "valid"), t["tcId"]
    checked = 0
    for t in MLDSA[name]["verify"]:
        pk, msg, sig = u(t["publicKey"]), u(t["msg"]), u(t["sig"])
        if "ctx" in t:  # our Signer never uses a context: check the primitive itself
            cls = {
                "ML-DSA-44": mldsa.MLDSA44PublicKey,
                "ML-DSA-65": mldsa.MLDSA65PublicKey,
                "ML-DSA-87": mldsa.MLDSA87PublicKey,
            }[name]
            try:
                cls.from_public_bytes(pk).verify(sig, msg, u(t["ctx"]))
                ok = True
            except (InvalidSignature, ValueError):
                ok = False
        else:
            ok = signer.verify(pk, msg, sig)
        assert ok == (t["result"] == "valid"), (t["tcId"], t.get("comment"))
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    "scheme", [SignatureScheme.mldsa44, SignatureScheme.mldsa65, SignatureScheme.mldsa87]
)
def test_mldsa_round_trip_and_refusals(scheme: SignatureScheme) -> None:
    signer = Signer(scheme)
    sk, pk = signer.generate_key_pair()
    sig = signer.sign(sk, b"SignContent")
    assert signer.verify(pk, b"SignContent", sig)
    assert not signer.verify(pk, b"SignContent!", sig)
    assert not signer.verify(pk, b"SignContent", sig[:-1])
    assert not signer.verify(pk[:-1], b"SignContent", sig)  # a truncated key is no key
    with pytest.raises(CryptoError):
        signer.sign(sk[:-1], b"x")


@pytest.mark.parametrize("kem_id", [ML_KEM_768, 0x42, X_WING])
@pytest.mark.parametrize("derivation", list(Derivation))
def test_pq_kem_round_trips_and_refusals(kem_id: int, derivation: Derivation) -> None:
    kem = PqKem(kem_id, derivation)
    sk, pk = kem.derive_key_pair(bytes(range(64)))
    assert kem.derive_key_pair(bytes(range(64))) == (sk, pk)  # deterministic
    ss, enc = kem.encap(pk)
    assert kem.decap(enc, sk) == ss
    # A tampered ciphertext yields another secret (ML-KEM rejects implicitly).
    forged = bytes([enc[0] ^ 1]) + enc[1:]
    assert kem.decap(forged, sk) != ss
    with pytest.raises(CryptoError):
        kem.decap(enc[:-1], sk)
    with pytest.raises(CryptoError):
        kem.validate_public(pk[:-1])
    with pytest.raises(CryptoError):
        kem.encap(pk + b"\x00")


def test_xwing_refuses_a_small_order_x25519_part() -> None:
    kem = PqKem(X_WING, Derivation.HPKE_PQ)
    _, pk = kem.generate_key_pair()
    small_order = pk[:-32] + bytes(32)  # the X25519 point 0
    with pytest.raises(CryptoError):
        kem.validate_public(small_order)
    with pytest.raises(CryptoError):
        kem.encap(small_order)


def test_ts_mls_derivation_needs_a_64_byte_secret_for_mlkem() -> None:
    kem = PqKem(ML_KEM_768, Derivation.TS_MLS)
    assert kem.derive_key_pair(bytes(64))[0] == bytes(64)  # the secret is the seed itself
    with pytest.raises(CryptoError):
        kem.derive_key_pair(bytes(48))
