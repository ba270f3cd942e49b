"""Signature schemes of the MLS cipher suites (RFC 9420 §5.1, §17.1).

Key formats follow the MLS test vectors: EdDSA keys are their native byte strings; ECDSA
public keys are uncompressed SEC1 points and private keys big-endian scalars
(Field-Element-to-Octet-String). ECDSA signatures are DER-encoded on the wire, as RFC 9420
§5.1.2 requires ("encoded ... as defined in [RFC 8446] §4.2.3", i.e. DER ECDSA-Sig-Value).

Two things here are named for signing. :class:`Signer` is one *scheme* (it signs with a private
key passed as bytes). :class:`MessageSigner` is the protocol of one *key*: an object that signs
with a key it holds, possibly outside Python memory (an HSM, a remote signer);
``CipherSuiteProvider.sign_with_label`` accepts either raw key bytes or such an object, and
:mod:`mlspy.provider` re-exports the protocol as ``Signer``.

Determinism: Ed25519 and Ed448 signatures are deterministic (RFC 8032 §5.1.6, §5.2.6), so a
protocol run with injected randomness is byte-for-byte reproducible in the Ed25519/Ed448
suites. ``cryptography`` randomizes ECDSA nonces, so the P-256/P-384/P-521 suites reproduce
everything except the signature bytes (which still verify).

ML-DSA (FIPS 204; the post-quantum suites, ``suite.py``) is the pure variant with an empty
context string, as ``draft-ietf-tls-mldsa`` uses it and ts-mls signs: a private key is the
32-byte seed ξ, a public key and a signature their raw FIPS 204 encodings (1312/2420 bytes for
ML-DSA-44, 1952/3309 for -65, 2592/4627 for -87). ``cryptography`` signs hedged (randomized),
so ML-DSA signatures differ from run to run, as ECDSA's do; keys are deterministic given an
``rng``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from enum import IntEnum
from functools import lru_cache
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlspy.crypto.hpke import P256_ORDER, P384_ORDER, P521_ORDER
from mlspy.crypto.rng import Rng, draw
from mlspy.errors import CryptoError


class SignatureScheme(IntEnum):
    """TLS SignatureScheme values used by the MLS cipher suites."""

    ecdsa_secp256r1_sha256 = 0x0403
    ecdsa_secp384r1_sha384 = 0x0503
    ecdsa_secp521r1_sha512 = 0x0603
    ed25519 = 0x0807
    ed448 = 0x0808
    # draft-ietf-tls-mldsa
    mldsa44 = 0x0904
    mldsa65 = 0x0905
    mldsa87 = 0x0906


_EC: dict[SignatureScheme, tuple[ec.EllipticCurve, hashes.HashAlgorithm, int]] = {
    SignatureScheme.ecdsa_secp256r1_sha256: (ec.SECP256R1(), hashes.SHA256(), 32),
    SignatureScheme.ecdsa_secp384r1_sha384: (ec.SECP384R1(), hashes.SHA384(), 48),
    SignatureScheme.ecdsa_secp521r1_sha512: (ec.SECP521R1(), hashes.SHA512(), 66),
}

# Group order of each ECDSA curve, for deriving a scalar from random bytes.
_ORDERS: dict[SignatureScheme, int] = {
    SignatureScheme.ecdsa_secp256r1_sha256: P256_ORDER,
    SignatureScheme.ecdsa_secp384r1_sha384: P384_ORDER,
    SignatureScheme.ecdsa_secp521r1_sha512: P521_ORDER,
}

# Private key sizes of EdDSA (RFC 8032 §5.1.5, §5.2.5) and ML-DSA (the seed ξ, FIPS 204 §5.1).
_SEED_SIZE = {
    SignatureScheme.ed25519: 32,
    SignatureScheme.ed448: 57,
    SignatureScheme.mldsa44: 32,
    SignatureScheme.mldsa65: 32,
    SignatureScheme.mldsa87: 32,
}

_MLDSA: dict[
    SignatureScheme,
    tuple[
        type[mldsa.MLDSA44PrivateKey]
        | type[mldsa.MLDSA65PrivateKey]
        | type[mldsa.MLDSA87PrivateKey],
        type[mldsa.MLDSA44PublicKey] | type[mldsa.MLDSA65PublicKey] | type[mldsa.MLDSA87PublicKey],
    ],
] = {
    SignatureScheme.mldsa44: (mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey),
    SignatureScheme.mldsa65: (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey),
    SignatureScheme.mldsa87: (mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey),
}

SigningKey = (
    ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | ec.EllipticCurvePrivateKey
    | mldsa.MLDSA44PrivateKey
    | mldsa.MLDSA65PrivateKey
    | mldsa.MLDSA87PrivateKey
)
VerifyingKey = (
    ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | ec.EllipticCurvePublicKey
    | mldsa.MLDSA44PublicKey
    | mldsa.MLDSA65PublicKey
    | mldsa.MLDSA87PublicKey
)


@runtime_checkable
class MessageSigner(Protocol):
    """A signature key that signs for itself (RFC 9420 §5.1.2).

    ``sign(message)`` signs ``message`` — the complete encoded ``SignContent`` (label and
    content already wrapped by ``SignWithLabel``) — with the cipher suite's signature algorithm
    and returns the signature as it goes on the wire (raw for EdDSA, DER for ECDSA).
    ``public_key`` is the matching serialized public key (a leaf's ``signature_key``).
    Implementations may keep the private key anywhere: in an HSM, a remote signer, a closure.
    """

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class Signer:
    """Sign and verify with one scheme; keys cross the boundary as bytes."""

    __slots__ = ("_ec", "_ecdsa", "scheme")

    def __init__(self, scheme: SignatureScheme) -> None:
        self.scheme = scheme
        self._ec = _EC.get(scheme)
        # The ECDSA hash is fixed by the suite (§5.1.2); EdDSA has none.
        self._ecdsa = ec.ECDSA(self._ec[1]) if self._ec is not None else ec.ECDSA(hashes.SHA256())

    def load_private(self, sk: bytes) -> SigningKey:
        # Loading a signing key derives its public key (tens of µs); a client signs with the
        # same long-term key again and again, so loaded keys are kept (bounded).
        key = _SIGNING_KEYS.get((self.scheme, sk))
        if key is None:
            key = self._load_private(sk)
            if len(_SIGNING_KEYS) >= _SIGNING_KEYS_MAX:
                _SIGNING_KEYS.pop(next(iter(_SIGNING_KEYS)))
            _SIGNING_KEYS[(self.scheme, sk)] = key
        return key

    def _load_private(self, sk: bytes) -> SigningKey:
        try:
            if self._ec is not None:
                curve, _, size = self._ec
                # Some encoders drop leading zero octets of the scalar; accept those too.
                if not 0 < len(sk) <= size:
                    raise ValueError("bad scalar size")
                return ec.derive_private_key(int.from_bytes(sk, "big"), curve)
            pq = _MLDSA.get(self.scheme)
            if pq is not None:
                return pq[0].from_seed_bytes(sk)
            if self.scheme == SignatureScheme.ed25519:
                return ed25519.Ed25519PrivateKey.from_private_bytes(sk)
            return ed448.Ed448PrivateKey.from_private_bytes(sk)
        except ValueError:
            raise CryptoError("invalid signature private key") from None

    def load_public(self, pk: bytes) -> VerifyingKey:
        # Public keys are verified again and again (every leaf, every message): cache them.
        return _load_public(self.scheme, pk)

    def serialize_private(self, sk: SigningKey) -> bytes:
        if isinstance(sk, ec.EllipticCurvePrivateKey):
            size = (sk.curve.key_size + 7) // 8
            return sk.private_numbers().private_value.to_bytes(size, "big")
        return sk.private_bytes_raw()

    def public_key_of(self, sk: bytes) -> bytes:
        return _serialize_public(self.load_private(sk).public_key())

    def generate_key_pair(self, *, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """A fresh (private, public) signature key pair, serialized.

        With ``rng`` the key is a deterministic function of the bytes drawn: EdDSA keys are the
        raw seed (RFC 8032 §5.1.5, §5.2.5); an ECDSA scalar is ``c mod (n - 1) + 1`` for ``c``
        drawn with 64 extra bits (FIPS 186-5 §A.2.1), so it is never 0 and negligibly biased.
        """
        if rng is not None:
            if self._ec is not None:
                size = self._ec[2]
                c = int.from_bytes(draw(rng, size + 8), "big")
                sk = (c % (_ORDERS[self.scheme] - 1) + 1).to_bytes(size, "big")
            else:
                sk = draw(rng, _SEED_SIZE[self.scheme])
            return sk, _serialize_public(self._load_private(sk).public_key())
        key: SigningKey
        pq = _MLDSA.get(self.scheme)
        if pq is not None:
            key = pq[0].generate()
        elif self._ec is not None:
            key = ec.generate_private_key(self._ec[0])
        elif self.scheme == SignatureScheme.ed25519:
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            key = ed448.Ed448PrivateKey.generate()
        return self.serialize_private(key), _serialize_public(key.public_key())

    def sign(self, sk: bytes, message: bytes) -> bytes:
        key = self.load_private(sk)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(message, self._ecdsa)
        return key.sign(message)

    def verify(self, pk: bytes, message: bytes, signature: bytes) -> bool:
        cache_key = None
        if _VERIFIED.capacity:
            cache_key = (self.scheme, pk, hashlib.sha256(message).digest(), signature)
            if cache_key in _VERIFIED.entries:
                return True
        try:
            key = self.load_public(pk)
        except CryptoError:
            return False
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, self._ecdsa)
            else:
                key.verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        if cache_key is not None:
            _VERIFIED.add(cache_key)
        return True


_SIGNING_KEYS: dict[tuple[SignatureScheme, bytes], SigningKey] = {}
_SIGNING_KEYS_MAX = 256


class _VerifiedCache:
    """Remembers signatures that verified, keyed by (scheme, key, SHA-256 of message,
    signature). Verification is deterministic, so a hit is as good as verifying again; this
    matters when one process verifies the same leaves many times (a server following many
    groups, many members joining one tree in one process). Only successes are cached."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[tuple[SignatureScheme, bytes, bytes, bytes], None] = OrderedDict()

    def add(self, key: tuple[SignatureScheme, bytes, bytes, bytes]) -> None:
        self.entries[key] = None
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)


_VERIFIED = _VerifiedCache(1 << 16)


def set_verification_cache(capacity: int) -> int:
    """Size the cache of verified signatures; 0 disables it (e.g. for benchmarks). Returns the
    previous capacity."""
    previous = _VERIFIED.capacity
    _VERIFIED.capacity = capacity
    _VERIFIED.entries.clear()
    return previous


def _serialize_public(pk: VerifyingKey) -> bytes:
    if isinstance(pk, ec.EllipticCurvePublicKey):
        return pk.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return pk.public_bytes(Encoding.Raw, PublicFormat.Raw)


@lru_cache(maxsize=8192)
def _load_public(scheme: SignatureScheme, pk: bytes) -> VerifyingKey:
    try:
        curve = _EC.get(scheme)
        if curve is not None:
            return ec.EllipticCurvePublicKey.from_encoded_point(curve[0], pk)
        pq = _MLDSA.get(scheme)
        if pq is not None:
            return pq[1].from_public_bytes(pk)
        if scheme == SignatureScheme.ed25519:
            return ed25519.Ed25519PublicKey.from_public_bytes(pk)
        return ed448.Ed448PublicKey.from_public_bytes(pk)
    except ValueError:
        raise CryptoError("invalid signature public key") from None
