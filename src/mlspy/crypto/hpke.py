"""HPKE base mode (RFC 9180) for the KEMs, KDFs and AEADs of the MLS cipher suites.

Theory of operation: ``cryptography`` ships a native single-shot HPKE (``hazmat.primitives.hpke``)
for DHKEM over X25519 and the NIST curves; that is the fastest path, so :meth:`Hpke.seal` and
:meth:`Hpke.open` use it whenever the KEM is covered. For DHKEM(X448) — and for what the native
API does not expose (the exporter interface used by external commits, RFC 9420 §8.3, and
``DeriveKeyPair``, RFC 9180 §7.1.3) — RFC 9180 is composed here from ``cryptography``'s DH,
HKDF/HMAC and AEAD primitives. Unit tests cross-check the two paths against each other.

Injected randomness: key generation, :meth:`Hpke.seal` and :meth:`Hpke.send_export` take an
optional keyword ``rng`` (see :mod:`mlspy.crypto.rng`). Without it they draw from
``os.urandom`` and ``seal`` keeps the native fast path. With it, ``GenerateKeyPair()`` is
``DeriveKeyPair(rng(Nsk))`` (RFC 9180 §7.1.3, the way the RFC's own test vectors fix ``ikmE``)
and encapsulation runs on the composed path, so the output is a deterministic function of the
inputs and the ``rng`` stream. Both paths produce ordinary RFC 9180 ciphertexts: either opens
the other's.

Key formats are those of RFC 9180 §7.1.1 (``SerializePublicKey`` / ``SerializePrivateKey``):
raw 32/56-byte strings for X25519/X448, the uncompressed SEC1 point and the big-endian scalar
for the NIST curves.

The post-quantum KEMs (ML-KEM-768, ML-KEM-1024, X-Wing) are in :mod:`mlspy.crypto.pqkem`;
``Hpke`` runs the same key schedule over them (native single-shot where ``cryptography`` has
it, composed for the exporter and with a non-empty ``aad``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hpke as native_hpke
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlspy.crypto import pqkem
from mlspy.crypto.pqkem import ML_KEM_768, ML_KEM_1024, X_WING, Derivation, PqKem, is_pq_kem
from mlspy.crypto.rng import Rng, draw
from mlspy.errors import CryptoError, InternalError


class KemId(IntEnum):
    DHKEM_P256_HKDF_SHA256 = 0x0010
    DHKEM_P384_HKDF_SHA384 = 0x0011
    DHKEM_P521_HKDF_SHA512 = 0x0012
    DHKEM_X25519_HKDF_SHA256 = 0x0020
    DHKEM_X448_HKDF_SHA512 = 0x0021
    # draft-ietf-hpke-pq
    ML_KEM_768 = ML_KEM_768
    ML_KEM_1024 = ML_KEM_1024
    X_WING = X_WING


class KdfId(IntEnum):
    HKDF_SHA256 = 0x0001
    HKDF_SHA384 = 0x0002
    HKDF_SHA512 = 0x0003


class AeadId(IntEnum):
    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002
    CHACHA20_POLY1305 = 0x0003


_HASHES: dict[KdfId, type[hashes.HashAlgorithm]] = {
    KdfId.HKDF_SHA256: hashes.SHA256,
    KdfId.HKDF_SHA384: hashes.SHA384,
    KdfId.HKDF_SHA512: hashes.SHA512,
}

# (key size Nk, nonce size Nn) per AEAD, RFC 9180 §7.3.
_AEAD_SIZES: dict[AeadId, tuple[int, int]] = {
    AeadId.AES_128_GCM: (16, 12),
    AeadId.AES_256_GCM: (32, 12),
    AeadId.CHACHA20_POLY1305: (32, 12),
}


@dataclass(frozen=True, slots=True)
class _KemParams:
    """RFC 9180 §7.1: Nsecret, Nenc, Npk, Nsk, the KEM's KDF, and the curve if NIST."""

    n_secret: int
    n_enc: int
    n_sk: int
    kdf: KdfId
    curve: ec.EllipticCurve | None
    # Bitmask applied to the first candidate byte in DeriveKeyPair for NIST curves (§7.1.3).
    bitmask: int
    order: int


# Group orders of the NIST curves (SEC 2 §2.4.2, §2.5.1, §2.6.1); signature.py uses them too.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
    "581A0DB248B0A77AECEC196ACCC52973",
    16,
)
P521_ORDER = int(
    "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA"
    "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
    16,
)

_KEMS: dict[KemId, _KemParams] = {
    KemId.DHKEM_P256_HKDF_SHA256: _KemParams(
        32, 65, 32, KdfId.HKDF_SHA256, ec.SECP256R1(), 0xFF, P256_ORDER
    ),
    KemId.DHKEM_P384_HKDF_SHA384: _KemParams(
        48, 97, 48, KdfId.HKDF_SHA384, ec.SECP384R1(), 0xFF, P384_ORDER
    ),
    KemId.DHKEM_P521_HKDF_SHA512: _KemParams(
        64, 133, 66, KdfId.HKDF_SHA512, ec.SECP521R1(), 0x01, P521_ORDER
    ),
    KemId.DHKEM_X25519_HKDF_SHA256: _KemParams(32, 32, 32, KdfId.HKDF_SHA256, None, 0, 0),
    KemId.DHKEM_X448_HKDF_SHA512: _KemParams(64, 56, 56, KdfId.HKDF_SHA512, None, 0, 0),
}

_NATIVE_KEM = {
    KemId.DHKEM_P256_HKDF_SHA256: native_hpke.KEM.P256,
    KemId.DHKEM_P384_HKDF_SHA384: native_hpke.KEM.P384,
    KemId.DHKEM_P521_HKDF_SHA512: native_hpke.KEM.P521,
    KemId.DHKEM_X25519_HKDF_SHA256: native_hpke.KEM.X25519,
}
_NATIVE_KDF = {
    KdfId.HKDF_SHA256: native_hpke.KDF.HKDF_SHA256,
    KdfId.HKDF_SHA384: native_hpke.KDF.HKDF_SHA384,
    KdfId.HKDF_SHA512: native_hpke.KDF.HKDF_SHA512,
}
_NATIVE_AEAD = {
    AeadId.AES_128_GCM: native_hpke.AEAD.AES_128_GCM,
    AeadId.AES_256_GCM: native_hpke.AEAD.AES_256_GCM,
    AeadId.CHACHA20_POLY1305: native_hpke.AEAD.CHACHA20_POLY1305,
}

_HPKE_V1 = b"HPKE-v1"

PrivateKey = x25519.X25519PrivateKey | x448.X448PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = x25519.X25519PublicKey | x448.X448PublicKey | ec.EllipticCurvePublicKey


def _extract(alg: hashes.HashAlgorithm, salt: bytes, ikm: bytes) -> bytes:
    return HKDF.extract(alg, salt, ikm)


def _expand(alg: hashes.HashAlgorithm, prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(alg, length, info).derive(prk)


class Hpke:
    """HPKE base mode for one (KEM, KDF, AEAD) triple."""

    __slots__ = (
        "_aead",
        "_hash",
        "_kem",
        "_kem_hash",
        "_kem_suite_id",
        "_native",
        "_nh",
        "_nk",
        "_nn",
        "_pq",
        "_suite_id",
        "aead_id",
        "kdf_id",
        "kem_id",
    )

    def __init__(
        self,
        kem_id: KemId,
        kdf_id: KdfId,
        aead_id: AeadId,
        derivation: Derivation = Derivation.HPKE_PQ,
    ) -> None:
        """``derivation``: the ``DeriveKeyPair`` of a post-quantum KEM (``pqkem.py``)."""
        self.kem_id = kem_id
        self.kdf_id = kdf_id
        self.aead_id = aead_id
        self._pq = PqKem(kem_id, derivation) if is_pq_kem(kem_id) else None
        # A post-quantum KEM has no DHKEM parameters; X25519's stand in, never used for it.
        self._kem = _KEMS[KemId.DHKEM_X25519_HKDF_SHA256 if self._pq else kem_id]
        self._kem_hash = _HASHES[self._kem.kdf]()
        self._hash = _HASHES[kdf_id]()
        self._nh = self._hash.digest_size
        self._nk, self._nn = _AEAD_SIZES[aead_id]
        self._aead = aead_id
        self._kem_suite_id = b"KEM" + kem_id.to_bytes(2, "big")
        self._suite_id = (
            b"HPKE"
            + kem_id.to_bytes(2, "big")
            + kdf_id.to_bytes(2, "big")
            + aead_id.to_bytes(2, "big")
        )
        native_kem = self._pq.native if self._pq is not None else _NATIVE_KEM.get(kem_id)
        self._native = (
            native_hpke.Suite(native_kem, _NATIVE_KDF[kdf_id], _NATIVE_AEAD[aead_id])
            if native_kem is not None
            else None
        )

    # --- Key handling (RFC 9180 §7.1.1) -----------------------------------------------------

    @property
    def n_sk(self) -> int:
        """``Nsk``: the bytes ``GenerateKeyPair`` draws for ``DeriveKeyPair``."""
        return self._pq.params.n_sk if self._pq is not None else self._kem.n_sk

    @property
    def enc_size(self) -> int:
        return self._pq.params.n_enc if self._pq is not None else self._kem.n_enc

    def load_private(self, sk: bytes) -> PrivateKey:
        try:
            curve = self._kem.curve
            if curve is not None:
                # Some encoders drop leading zero octets of the scalar; accept those too.
                if not 0 < len(sk) <= self._kem.n_sk:
                    raise ValueError("bad scalar size")
                return ec.derive_private_key(int.from_bytes(sk, "big"), curve)
            if self.kem_id == KemId.DHKEM_X25519_HKDF_SHA256:
                return x25519.X25519PrivateKey.from_private_bytes(sk)
            return x448.X448PrivateKey.from_private_bytes(sk)
        except ValueError:
            raise CryptoError("invalid HPKE private key") from None

    def check_public(self, pk: bytes) -> None:
        """CryptoError unless ``pk`` decodes as a public key of this KEM (cheaper than
        :meth:`validate_public`, which also rejects degenerate X25519/X448 points)."""
        if self._pq is not None:
            pqkem.load_public(self.kem_id, bytes(pk))
        else:
            self.load_public(pk)

    def load_public(self, pk: bytes) -> PublicKey:
        if self._pq is not None:
            raise InternalError("a post-quantum KEM key is not a DHKEM key")
        try:
            return _load_public(self.kem_id, bytes(pk))
        except ValueError:
            raise CryptoError("invalid HPKE public key") from None

    def validate_public(self, pk: bytes) -> None:
        """Raise :class:`CryptoError` unless ``pk`` is a usable KEM public key: it must decode
        and, for X25519/X448, not be a small-order point (which yields no shared secret)."""
        if self._pq is not None:
            self._pq.validate_public(pk)
            return
        key = self.load_public(pk)
        if self._kem.curve is None:
            self._dh(self._probe_key(), key)

    def _probe_key(self) -> PrivateKey:
        # A fixed private key used only to detect degenerate public keys; never to encrypt.
        if self.kem_id == KemId.DHKEM_X25519_HKDF_SHA256:
            return x25519.X25519PrivateKey.from_private_bytes(b"\x01" * 32)
        return x448.X448PrivateKey.from_private_bytes(b"\x01" * 56)

    def serialize_public(self, pk: PublicKey) -> bytes:
        if isinstance(pk, ec.EllipticCurvePublicKey):
            return pk.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return pk.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def serialize_private(self, sk: PrivateKey) -> bytes:
        if isinstance(sk, ec.EllipticCurvePrivateKey):
            return sk.private_numbers().private_value.to_bytes(self._kem.n_sk, "big")
        return sk.private_bytes_raw()

    def public_key_of(self, sk: bytes) -> bytes:
        if self._pq is not None:
            return self._pq.public_key_of(sk)
        return self.serialize_public(self.load_private(sk).public_key())

    def generate_key_pair(self, *, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """``GenerateKeyPair()`` (RFC 9180 §4): ``DeriveKeyPair(ikm)`` over ``Nsk`` bytes drawn
        from ``rng`` (``os.urandom`` by default); returns serialized (sk, pk)."""
        return self.derive_key_pair(draw(rng, self.n_sk))

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """``DeriveKeyPair(ikm)`` of RFC 9180 §7.1.3 (``pqkem.py`` for the post-quantum
        KEMs); returns serialized (sk, pk)."""
        if self._pq is not None:
            return self._pq.derive_key_pair(ikm)
        dkp_prk = self._kem_labeled_extract(b"", b"dkp_prk", ikm)
        kem = self._kem
        if kem.curve is None:
            sk = self._kem_labeled_expand(dkp_prk, b"sk", b"", kem.n_sk)
            return sk, self.public_key_of(sk)
        for counter in range(256):
            candidate = bytearray(
                self._kem_labeled_expand(dkp_prk, b"candidate", bytes([counter]), kem.n_sk)
            )
            candidate[0] &= kem.bitmask
            value = int.from_bytes(candidate, "big")
            if 0 < value < kem.order:
                sk = bytes(candidate)
                return sk, self.public_key_of(sk)
        raise CryptoError("DeriveKeyPairError")  # pragma: no cover - probability ~2^-256

    # --- Labeled KDF (RFC 9180 §4) -----------------------------------------------------------

    def _kem_labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return _extract(self._kem_hash, salt, _HPKE_V1 + self._kem_suite_id + label + ikm)

    def _kem_labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled = length.to_bytes(2, "big") + _HPKE_V1 + self._kem_suite_id + label + info
        return _expand(self._kem_hash, prk, labeled, length)

    def _labeled_extract(self, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return _extract(self._hash, salt, _HPKE_V1 + self._suite_id + label + ikm)

    def _labeled_expand(self, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
        labeled = length.to_bytes(2, "big") + _HPKE_V1 + self._suite_id + label + info
        return _expand(self._hash, prk, labeled, length)

    # --- DHKEM (RFC 9180 §4.1) ---------------------------------------------------------------

    def _dh(self, sk: PrivateKey, pk: PublicKey) -> bytes:
        try:
            if isinstance(sk, ec.EllipticCurvePrivateKey) and isinstance(
                pk, ec.EllipticCurvePublicKey
            ):
                return sk.exchange(ec.ECDH(), pk)
            if isinstance(sk, x25519.X25519PrivateKey) and isinstance(pk, x25519.X25519PublicKey):
                return sk.exchange(pk)
            if isinstance(sk, x448.X448PrivateKey) and isinstance(pk, x448.X448PublicKey):
                return sk.exchange(pk)
            raise InternalError("mismatched HPKE key types")
        except ValueError:
            # An all-zero shared secret (small-order point) is rejected (RFC 9180 §7.1.4).
            raise CryptoError("invalid DH shared secret") from None

    def _extract_and_expand(self, dh: bytes, kem_context: bytes) -> bytes:
        eae_prk = self._kem_labeled_extract(b"", b"eae_prk", dh)
        return self._kem_labeled_expand(eae_prk, b"shared_secret", kem_context, self._kem.n_secret)

    def _encap(self, pk_r: bytes, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """``Encap(pkR)`` (RFC 9180 §4.1) with the ephemeral pair from ``GenerateKeyPair``."""
        if self._pq is not None:
            return self._pq.encap(pk_r, rng)
        sk_e_bytes, enc = self.generate_key_pair(rng=rng)
        dh = self._dh(self.load_private(sk_e_bytes), self.load_public(pk_r))
        return self._extract_and_expand(dh, enc + pk_r), enc

    def _decap(self, enc: bytes, sk_r: bytes) -> bytes:
        if self._pq is not None:
            return self._pq.decap(enc, sk_r)
        sk = self.load_private(sk_r)
        dh = self._dh(sk, self.load_public(enc))
        return self._extract_and_expand(dh, enc + self.serialize_public(sk.public_key()))

    # --- Key schedule and context (RFC 9180 §5.1) -------------------------------------------

    def _key_schedule(self, shared_secret: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
        psk_id_hash = self._labeled_extract(b"", b"psk_id_hash", b"")
        info_hash = self._labeled_extract(b"", b"info_hash", info)
        context = b"\x00" + psk_id_hash + info_hash  # mode_base = 0x00
        secret = self._labeled_extract(shared_secret, b"secret", b"")
        key = self._labeled_expand(secret, b"key", context, self._nk)
        base_nonce = self._labeled_expand(secret, b"base_nonce", context, self._nn)
        exporter_secret = self._labeled_expand(secret, b"exp", context, self._nh)
        return key, base_nonce, exporter_secret

    def _aead_cipher(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        if self._aead == AeadId.CHACHA20_POLY1305:
            return ChaCha20Poly1305(key)
        return AESGCM(key)

    # --- Single-shot APIs (RFC 9180 §6.1) ----------------------------------------------------

    def seal(
        self, pk_r: bytes, info: bytes, aad: bytes, pt: bytes, *, rng: Rng | None = None
    ) -> tuple[bytes, bytes]:
        """``SealBase(pkR, info, aad, pt)`` → (enc, ct) (RFC 9180 §6.1).

        Without ``rng`` the native implementation is used where it covers the suite. With
        ``rng`` the ephemeral key is ``DeriveKeyPair(rng(Nsk))`` and the composed path runs, so
        the output is deterministic given the ``rng`` stream.
        """
        if rng is None and self._native is not None and not aad:
            key = (
                pqkem.load_public(self.kem_id, bytes(pk_r))
                if self._pq is not None
                else self.load_public(pk_r)
            )
            try:
                out = self._native.encrypt(pt, key, info)  # type: ignore[arg-type]
            except ValueError:  # e.g. a small-order X25519 point: no shared secret
                raise CryptoError("HPKE encryption failed: invalid recipient key") from None
            n = self.enc_size
            return out[:n], out[n:]
        return self.seal_composed(pk_r, info, aad, pt, rng=rng)

    def seal_composed(
        self, pk_r: bytes, info: bytes, aad: bytes, pt: bytes, *, rng: Rng | None = None
    ) -> tuple[bytes, bytes]:
        """``SealBase`` composed from primitives (used for X448, with an ``rng``, and to
        cross-check the native path)."""
        shared_secret, enc = self._encap(pk_r, rng)
        key, nonce, _ = self._key_schedule(shared_secret, info)
        return enc, self._aead_cipher(key).encrypt(nonce, pt, aad)

    def open(self, sk_r: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
        """``OpenBase(enc, skR, info, aad, ct)``; any failure is a ``CryptoError``."""
        if self._native is not None and not aad:
            if len(enc) != self.enc_size:
                raise CryptoError("HPKE decryption failed")
            key = self._pq.private_key(sk_r) if self._pq is not None else self.load_private(sk_r)
            try:
                return self._native.decrypt(enc + ct, key, info)  # type: ignore[arg-type]
            except (InvalidTag, ValueError):
                raise CryptoError("HPKE decryption failed") from None
        return self.open_composed(sk_r, enc, info, aad, ct)

    def open_composed(self, sk_r: bytes, enc: bytes, info: bytes, aad: bytes, ct: bytes) -> bytes:
        if len(enc) != self.enc_size:
            raise CryptoError("HPKE decryption failed")
        shared_secret = self._decap(enc, sk_r)
        key, nonce, _ = self._key_schedule(shared_secret, info)
        try:
            return self._aead_cipher(key).decrypt(nonce, ct, aad)
        except InvalidTag:
            raise CryptoError("HPKE decryption failed") from None

    def send_export(
        self,
        pk_r: bytes,
        info: bytes,
        exporter_context: bytes,
        length: int,
        *,
        rng: Rng | None = None,
    ) -> tuple[bytes, bytes]:
        """``SetupBaseS`` then ``Export`` (RFC 9180 §5.1, §5.3) → (enc, exported secret); with
        ``rng`` the ephemeral key is ``DeriveKeyPair(rng(Nsk))``."""
        shared_secret, enc = self._encap(pk_r, rng)
        _, _, exporter_secret = self._key_schedule(shared_secret, info)
        return enc, self._labeled_expand(exporter_secret, b"sec", exporter_context, length)

    def receive_export(
        self, sk_r: bytes, enc: bytes, info: bytes, exporter_context: bytes, length: int
    ) -> bytes:
        """``SetupBaseR`` then ``Export`` (RFC 9180 §5.3)."""
        if len(enc) != self.enc_size:
            raise CryptoError("invalid HPKE encapsulation")
        shared_secret = self._decap(enc, sk_r)
        _, _, exporter_secret = self._key_schedule(shared_secret, info)
        return self._labeled_expand(exporter_secret, b"sec", exporter_context, length)


@lru_cache(maxsize=8192)
def _load_public(kem_id: KemId, pk: bytes) -> PublicKey:
    """A KEM public key object. Cached: a committer encrypts to the same members' keys commit
    after commit, and the objects are immutable (a failed load raises and is not cached)."""
    if kem_id == KemId.DHKEM_X25519_HKDF_SHA256:
        return x25519.X25519PublicKey.from_public_bytes(pk)
    if kem_id == KemId.DHKEM_X448_HKDF_SHA512:
        return x448.X448PublicKey.from_public_bytes(pk)
    curve = _KEMS[kem_id].curve
    if curve is None:  # pragma: no cover - every KEM without a curve is handled above
        raise InternalError(f"KEM {kem_id:#06x} has no curve")
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, pk)
