"""Post-quantum KEMs for HPKE: ML-KEM-768, ML-KEM-1024 (FIPS 203) and X-Wing (ML-KEM-768 +
X25519), for the post-quantum MLS cipher suites (``suite.py``).

The KEMs themselves come from ``cryptography`` (``mlkem``, ``x25519``, ``hashlib``'s SHA-3);
this module gives them the shape of an RFC 9180 KEM: serialized keys, ``DeriveKeyPair``,
``Encap``/``Decap``, and validation of a public key. Keys are the raw byte strings of
``draft-ietf-hpke-pq``: an ML-KEM private key is its 64-byte seed d‖z (FIPS 203 §6.1), an
X-Wing private key its 32-byte seed; public keys and ciphertexts are the FIPS 203 encodings
(X-Wing: the ML-KEM part then the X25519 part).

Two ``DeriveKeyPair`` are in use, and a suite says which (``Derivation``):

* ``HPKE_PQ`` — ``draft-ietf-hpke-pq`` (what ``draft-ietf-mls-pq-ciphersuites`` cites)::

      sk = SHAKE256(ikm || "HPKE-v1" || "KEM" || I2OSP(kem_id, 2)
                    || I2OSP(len("DeriveKeyPair"), 2) || "DeriveKeyPair"
                    || I2OSP(Nsk, 2) || "", Nsk)

* ``TS_MLS`` — what ts-mls 1.6 (``@hpke/ml-kem``, ``@hpke/hybridkem-x-wing``) does, for its
  suites 79-88: ML-KEM takes the 64-byte ``ikm`` itself as d‖z (so those suites' KDF must
  output 64 bytes), X-Wing takes ``SHAKE256(ikm, 32)``.

X-Wing (draft-connolly-cfrg-xwing-kem-06 §5): the seed expands to ``SHAKE256(seed, 96)``, the
ML-KEM-768 seed then the X25519 scalar; the shared secret is
``SHA3-256(ss_M || ss_X || ct_X || pk_X || "\\.//^\\")``.

Randomness: ``cryptography`` offers no derandomized ML-KEM encapsulation, so ``encap`` always
draws the ML-KEM randomness from the operating system, even when the caller passes an ``rng``
(the X25519 ephemeral key of X-Wing does come from it). Key derivation is deterministic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from cryptography.hazmat.primitives import hpke as native_hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from mlspy.crypto.rng import Rng, draw
from mlspy.errors import CryptoError

# X-Wing's combiner label (draft-connolly-cfrg-xwing-kem-06 §5.3): the bytes of "\.//^\".
XWING_LABEL = b"\x5c\x2e\x2f\x2f\x5e\x5c"
_HPKE_V1 = b"HPKE-v1"

ML_KEM_768 = 0x0041
ML_KEM_1024 = 0x0042
X_WING = 0x647A


class Derivation(Enum):
    """Which ``DeriveKeyPair`` a suite uses (see the module docstring)."""

    HPKE_PQ = "draft-ietf-hpke-pq"
    TS_MLS = "ts-mls 1.6"


MlKemPrivate = mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey
MlKemPublic = mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey


@dataclass(frozen=True, slots=True)
class _Params:
    """RFC 9180 §7.1 sizes (draft-ietf-hpke-pq §4): Nsecret, Nenc, Npk, Nsk."""

    n_secret: int
    n_enc: int
    n_pk: int
    n_sk: int


_PARAMS = {
    ML_KEM_768: _Params(32, 1088, 1184, 64),
    ML_KEM_1024: _Params(32, 1568, 1568, 64),
    X_WING: _Params(32, 1120, 1216, 32),
}

_NATIVE = {
    ML_KEM_768: native_hpke.KEM.MLKEM768,
    ML_KEM_1024: native_hpke.KEM.MLKEM1024,
    X_WING: native_hpke.KEM.MLKEM768_X25519,
}

_MLKEM_768_PK = 1184
_X25519_SIZE = 32


def is_pq_kem(kem_id: int) -> bool:
    return kem_id in _PARAMS


class PqKem:
    """One post-quantum KEM with one ``DeriveKeyPair``; keys cross as bytes."""

    __slots__ = ("derivation", "kem_id", "native", "params")

    def __init__(self, kem_id: int, derivation: Derivation) -> None:
        self.kem_id = kem_id
        self.derivation = derivation
        self.params = _PARAMS[kem_id]
        self.native = _NATIVE[kem_id]

    # --- Keys ---------------------------------------------------------------------------

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """``DeriveKeyPair(ikm)`` → serialized (sk, pk)."""
        n_sk = self.params.n_sk
        if self.derivation is Derivation.HPKE_PQ:
            label = b"DeriveKeyPair"
            info = (
                _HPKE_V1
                + b"KEM"
                + self.kem_id.to_bytes(2, "big")
                + len(label).to_bytes(2, "big")
                + label
                + n_sk.to_bytes(2, "big")
            )
            sk = hashlib.shake_256(ikm + info).digest(n_sk)
        elif self.kem_id == X_WING:
            sk = hashlib.shake_256(ikm).digest(n_sk)
        else:
            if len(ikm) != n_sk:
                raise CryptoError(
                    f"this suite's ML-KEM keys are derived from {n_sk}-byte secrets, "
                    f"got {len(ikm)} bytes"
                )
            sk = bytes(ikm)
        return sk, self.public_key_of(sk)

    def generate_key_pair(self, *, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """``GenerateKeyPair()``: ``DeriveKeyPair`` over ``Nsk`` random bytes (``rng`` or
        ``os.urandom``), as RFC 9180 §7.1.3 generates DHKEM keys."""
        return self.derive_key_pair(draw(rng, self.params.n_sk))

    def public_key_of(self, sk: bytes) -> bytes:
        return _public_of(self.kem_id, bytes(sk))

    def validate_public(self, pk: bytes) -> None:
        """CryptoError unless ``pk`` decodes (FIPS 203's modulus check on the ML-KEM key;
        X-Wing's X25519 part must not be a small-order point)."""
        load_public(self.kem_id, bytes(pk))
        if self.kem_id == X_WING:
            probe = x25519.X25519PrivateKey.from_private_bytes(b"\x01" * _X25519_SIZE)
            try:
                probe.exchange(x25519.X25519PublicKey.from_public_bytes(pk[-_X25519_SIZE:]))
            except ValueError:
                raise CryptoError("invalid X-Wing public key: small-order X25519 part") from None

    def private_key(self, sk: bytes) -> MlKemPrivate | native_hpke.MLKEM768X25519PrivateKey:
        """The ``cryptography`` key object (for the native HPKE)."""
        return _private_key(self.kem_id, bytes(sk))

    # --- Encap / Decap ------------------------------------------------------------------

    def encap(self, pk: bytes, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """``Encap(pkR)`` → (shared_secret, enc)."""
        key = load_public(self.kem_id, bytes(pk))
        if self.kem_id != X_WING:
            assert isinstance(key, mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey)
            ss, ct = key.encapsulate()
            return ss, ct
        pk_m, pk_x = pk[:_MLKEM_768_PK], pk[_MLKEM_768_PK:]
        ss_m, ct_m = mlkem.MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
        ephemeral = x25519.X25519PrivateKey.from_private_bytes(draw(rng, _X25519_SIZE))
        ct_x = ephemeral.public_key().public_bytes_raw()
        try:
            ss_x = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(pk_x))
        except ValueError:
            raise CryptoError("invalid X-Wing public key: no X25519 shared secret") from None
        return _combine(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x

    def decap(self, enc: bytes, sk: bytes) -> bytes:
        """``Decap(enc, skR)`` → shared_secret (ML-KEM rejects implicitly: a forged ``enc``
        gives a shared secret nobody else has, and the AEAD fails after it)."""
        if len(enc) != self.params.n_enc:
            raise CryptoError("invalid KEM ciphertext size")
        if self.kem_id != X_WING:
            key = _private_key(self.kem_id, bytes(sk))
            assert isinstance(key, mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey)
            try:
                return key.decapsulate(bytes(enc))
            except ValueError:
                raise CryptoError("ML-KEM decapsulation failed") from None
        seed_m, seed_x = _xwing_seeds(bytes(sk))
        ct_m, ct_x = enc[: len(enc) - _X25519_SIZE], enc[len(enc) - _X25519_SIZE :]
        try:
            ss_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed_m).decapsulate(bytes(ct_m))
            x = x25519.X25519PrivateKey.from_private_bytes(seed_x)
            ss_x = x.exchange(x25519.X25519PublicKey.from_public_bytes(bytes(ct_x)))
        except ValueError:
            raise CryptoError("X-Wing decapsulation failed") from None
        pk_x = x.public_key().public_bytes_raw()
        return _combine(ss_m, ss_x, bytes(ct_x), pk_x)


def _combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def _xwing_seeds(sk: bytes) -> tuple[bytes, bytes]:
    if len(sk) != _PARAMS[X_WING].n_sk:
        raise CryptoError("invalid X-Wing private key")
    expanded = hashlib.shake_256(sk).digest(96)
    return expanded[:64], expanded[64:]


def _private_key(kem_id: int, sk: bytes) -> MlKemPrivate | native_hpke.MLKEM768X25519PrivateKey:
    """A private key object, built anew each time: a cache keyed by the seed would keep node
    and init keys in memory after the group state deleted them (forward secrecy)."""
    try:
        if kem_id == ML_KEM_768:
            return mlkem.MLKEM768PrivateKey.from_seed_bytes(sk)
        if kem_id == ML_KEM_1024:
            return mlkem.MLKEM1024PrivateKey.from_seed_bytes(sk)
        seed_m, seed_x = _xwing_seeds(sk)
        return native_hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(seed_m),
            x25519.X25519PrivateKey.from_private_bytes(seed_x),
        )
    except ValueError:
        raise CryptoError("invalid post-quantum KEM private key") from None


def _public_of(kem_id: int, sk: bytes) -> bytes:
    if kem_id == X_WING:
        seed_m, seed_x = _xwing_seeds(sk)
        m = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed_m).public_key().public_bytes_raw()
        x = x25519.X25519PrivateKey.from_private_bytes(seed_x).public_key().public_bytes_raw()
        return m + x
    key = _private_key(kem_id, sk)
    assert isinstance(key, mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey)
    return key.public_key().public_bytes_raw()


@lru_cache(maxsize=8192)
def load_public(kem_id: int, pk: bytes) -> MlKemPublic | native_hpke.MLKEM768X25519PublicKey:
    """A public key object (cached: a committer encrypts to the same keys commit after
    commit); CryptoError if ``pk`` is not one."""
    if len(pk) != _PARAMS[kem_id].n_pk:
        raise CryptoError("invalid post-quantum KEM public key size")
    try:
        if kem_id == ML_KEM_768:
            return mlkem.MLKEM768PublicKey.from_public_bytes(pk)
        if kem_id == ML_KEM_1024:
            return mlkem.MLKEM1024PublicKey.from_public_bytes(pk)
        return native_hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(pk[:_MLKEM_768_PK]),
            x25519.X25519PublicKey.from_public_bytes(pk[_MLKEM_768_PK:]),
        )
    except ValueError:
        raise CryptoError("invalid post-quantum KEM public key") from None
