"""MLS cipher suites and the labelled cryptographic operations of RFC 9420 §5.

``CipherSuite`` is the IANA registry (§17.1); :func:`suite` returns the cached
:class:`CipherSuiteProvider` implementing it. All secrets and keys are ``bytes``, except that a
signing key may also be a :class:`~mlspy.crypto.signature.MessageSigner` holding its private
key elsewhere (an HSM, a remote signer).

Operations that draw randomness (key generation, ``EncryptWithLabel``) take an optional
keyword ``rng`` (:mod:`mlspy.crypto.rng`); without it they use ``os.urandom`` and the native
HPKE, with it their output is deterministic given the ``rng`` stream.

    struct {
        opaque label<V>;
        opaque context<V>;
    } EncryptContext;                       (§5.1.3; KDFLabel, SignContent alike)
"""

from __future__ import annotations

import hmac as _stdlib_hmac
from enum import IntEnum
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from mlspy.crypto.hpke import AeadId, Hpke, KdfId, KemId
from mlspy.crypto.pq_suites import PQ_SUITES
from mlspy.crypto.pqkem import Derivation
from mlspy.crypto.rng import Rng
from mlspy.crypto.signature import MessageSigner, SignatureScheme, Signer
from mlspy.errors import CryptoError, UnsupportedCipherSuiteError

MLS_LABEL_PREFIX = b"MLS 1.0 "


class CipherSuite(IntEnum):
    """The MLS cipher suites registry (RFC 9420 §17.1)."""

    MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 = 0x0001
    MLS_128_DHKEMP256_AES128GCM_SHA256_P256 = 0x0002
    MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519 = 0x0003
    MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448 = 0x0004
    MLS_256_DHKEMP521_AES256GCM_SHA512_P521 = 0x0005
    MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448 = 0x0006
    MLS_256_DHKEMP384_AES256GCM_SHA384_P384 = 0x0007
    # Post-quantum, experimental (``pq_suites.py``): the suites of ts-mls 1.6 under its code
    # points (private choices, not IANA's) ...
    MLS_256_MLKEM768_AES256GCM_SHA384_Ed25519 = 79
    MLS_256_MLKEM768_CHACHA20POLY1305_SHA384_Ed25519 = 80
    MLS_256_MLKEM1024_AES256GCM_SHA512_Ed25519 = 81
    MLS_256_MLKEM1024_CHACHA20POLY1305_SHA512_Ed25519 = 82
    MLS_256_XWING_AES256GCM_SHA512_Ed25519 = 83
    MLS_256_XWING_CHACHA20POLY1305_SHA512_Ed25519 = 84
    MLS_256_MLKEM1024_AES256GCM_SHA512_MLDSA87 = 85
    MLS_256_MLKEM1024_CHACHA20POLY1305_SHA512_MLDSA87 = 86
    MLS_256_XWING_AES256GCM_SHA512_MLDSA87 = 87
    MLS_256_XWING_CHACHA20POLY1305_SHA512_MLDSA87 = 88
    # ... and those of draft-ietf-mls-pq-ciphersuites-06 that ``cryptography`` can build, at
    # 0xF000 + n for the draft's TBDn (private use, RFC 9420 §17.1) until IANA assigns them.
    MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 = 0xF001
    MLS_128_MLKEM768X25519_AES256GCM_SHA384_Ed25519 = 0xF002
    MLS_128_MLKEM768_AES256GCM_SHA384_Ed25519 = 0xF006
    MLS_128_MLKEM768_AES256GCM_SHA384_P256 = 0xF007
    MLS_192_MLKEM1024_AES256GCM_SHA384_P384 = 0xF008
    MLS_128_MLKEM768X25519_CHACHA20POLY1305_SHA384_MLDSA44 = 0xF009
    MLS_192_MLKEM768_AES256GCM_SHA384_MLDSA65 = 0xF00A
    MLS_256_MLKEM1024_AES256GCM_SHA384_MLDSA87 = 0xF00B


_SUITES: dict[CipherSuite, tuple[KemId, KdfId, AeadId, SignatureScheme]] = {
    CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519: (
        KemId.DHKEM_X25519_HKDF_SHA256,
        KdfId.HKDF_SHA256,
        AeadId.AES_128_GCM,
        SignatureScheme.ed25519,
    ),
    CipherSuite.MLS_128_DHKEMP256_AES128GCM_SHA256_P256: (
        KemId.DHKEM_P256_HKDF_SHA256,
        KdfId.HKDF_SHA256,
        AeadId.AES_128_GCM,
        SignatureScheme.ecdsa_secp256r1_sha256,
    ),
    CipherSuite.MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519: (
        KemId.DHKEM_X25519_HKDF_SHA256,
        KdfId.HKDF_SHA256,
        AeadId.CHACHA20_POLY1305,
        SignatureScheme.ed25519,
    ),
    CipherSuite.MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448: (
        KemId.DHKEM_X448_HKDF_SHA512,
        KdfId.HKDF_SHA512,
        AeadId.AES_256_GCM,
        SignatureScheme.ed448,
    ),
    CipherSuite.MLS_256_DHKEMP521_AES256GCM_SHA512_P521: (
        KemId.DHKEM_P521_HKDF_SHA512,
        KdfId.HKDF_SHA512,
        AeadId.AES_256_GCM,
        SignatureScheme.ecdsa_secp521r1_sha512,
    ),
    CipherSuite.MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448: (
        KemId.DHKEM_X448_HKDF_SHA512,
        KdfId.HKDF_SHA512,
        AeadId.CHACHA20_POLY1305,
        SignatureScheme.ed448,
    ),
    CipherSuite.MLS_256_DHKEMP384_AES256GCM_SHA384_P384: (
        KemId.DHKEM_P384_HKDF_SHA384,
        KdfId.HKDF_SHA384,
        AeadId.AES_256_GCM,
        SignatureScheme.ecdsa_secp384r1_sha384,
    ),
}

_HASH: dict[KdfId, type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]] = {
    KdfId.HKDF_SHA256: hashes.SHA256,
    KdfId.HKDF_SHA384: hashes.SHA384,
    KdfId.HKDF_SHA512: hashes.SHA512,
}


def _vec(data: bytes) -> bytes:
    """``opaque<V>`` encoding; inlined here because crypto sits below the codec users."""
    n = len(data)
    if n < 0x40:
        return bytes([n]) + data
    if n < 0x4000:
        return (0x4000 | n).to_bytes(2, "big") + data
    return (0x80000000 | n).to_bytes(4, "big") + data


def _label(label: str | bytes) -> bytes:
    return label.encode("ascii") if isinstance(label, str) else label


class CipherSuiteProvider:
    """The primitives of one MLS cipher suite and the labelled operations of §5."""

    __slots__ = (
        "_aead_cls",
        "_hash",
        "_hash_cls",
        "_kdf_hash",
        "hpke",
        "id",
        "kdf_extract_size",
        "nh",
        "nk",
        "nn",
        "signer",
    )

    def __init__(self, cipher_suite: CipherSuite) -> None:
        pq = PQ_SUITES.get(cipher_suite)
        if pq is not None:
            kem, kdf, aead, scheme, hash_of, derivation = pq
        else:
            kem, kdf, aead, scheme = _SUITES[cipher_suite]
            hash_of, derivation = kdf, Derivation.HPKE_PQ
        self.id = cipher_suite
        # The suite's hash (transcripts, tree hashes, references, HMAC) and its KDF's are
        # one in the RFC's suites; ts-mls's post-quantum ones pair HKDF-SHA512 with a
        # shorter hash (``pq_suites.py``).
        self._hash_cls = _HASH[hash_of]
        self._hash = self._hash_cls()
        self._kdf_hash = _HASH[kdf]()
        self.nh = self._kdf_hash.digest_size  # KDF.Nh: the size of every derived secret
        self.kdf_extract_size = self.nh
        self.nk = 16 if aead == AeadId.AES_128_GCM else 32
        self.nn = 12
        self._aead_cls: type[AESGCM] | type[ChaCha20Poly1305] = (
            ChaCha20Poly1305 if aead == AeadId.CHACHA20_POLY1305 else AESGCM
        )
        self.hpke = Hpke(kem, kdf, aead, derivation)
        self.signer = Signer(scheme)

    def __repr__(self) -> str:
        return f"CipherSuiteProvider({self.id.name})"

    # --- Hash, MAC, KDF ----------------------------------------------------------------------

    def hash(self, data: bytes) -> bytes:
        h = hashes.Hash(self._hash)
        h.update(data)
        return h.finalize()

    def mac(self, key: bytes, data: bytes) -> bytes:
        """``MAC(key, data)``: HMAC with the suite's hash (§5.1)."""
        h = crypto_hmac.HMAC(key, self._hash)
        h.update(data)
        return h.finalize()

    def verify_mac(self, key: bytes, data: bytes, tag: bytes) -> bool:
        """Constant-time MAC check."""
        return _stdlib_hmac.compare_digest(self.mac(key, data), tag)

    def extract(self, salt: bytes, ikm: bytes) -> bytes:
        """``KDF.Extract(salt, ikm)``."""
        return HKDF.extract(self._kdf_hash, salt, ikm)

    def expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        """``KDF.Expand(prk, info, length)``."""
        try:
            return HKDFExpand(self._kdf_hash, length, info).derive(prk)
        except ValueError:
            raise CryptoError("KDF.Expand output too long") from None

    def expand_with_label(
        self, secret: bytes, label: str | bytes, context: bytes, length: int
    ) -> bytes:
        """``ExpandWithLabel(Secret, Label, Context, Length)`` (§5.2)::

        struct {
            uint16 length;
            opaque label<V>;
            opaque context<V>;
        } KDFLabel;
        """
        info = length.to_bytes(2, "big") + _vec(MLS_LABEL_PREFIX + _label(label)) + _vec(context)
        return self.expand(secret, info, length)

    def derive_secret(self, secret: bytes, label: str | bytes) -> bytes:
        """``DeriveSecret(Secret, Label) = ExpandWithLabel(Secret, Label, "", KDF.Nh)``."""
        return self.expand_with_label(secret, label, b"", self.nh)

    def derive_tree_secret(
        self, secret: bytes, label: str | bytes, generation: int, length: int
    ) -> bytes:
        """``DeriveTreeSecret`` (§9): ``ExpandWithLabel(Secret, Label, Generation, Length)``."""
        return self.expand_with_label(secret, label, generation.to_bytes(4, "big"), length)

    # --- Hash-based identifiers (§5.2) -------------------------------------------------------

    def ref_hash(self, label: str | bytes, value: bytes) -> bytes:
        """``RefHash(label, value) = Hash(RefHashInput)``::

        struct {
            opaque label<V>;
            opaque value<V>;
        } RefHashInput;
        """
        return self.hash(_vec(_label(label)) + _vec(value))

    def make_key_package_ref(self, key_package: bytes) -> bytes:
        """``MakeKeyPackageRef(value) = RefHash("MLS 1.0 KeyPackage Reference", value)``."""
        return self.ref_hash(b"MLS 1.0 KeyPackage Reference", key_package)

    def make_proposal_ref(self, authenticated_content: bytes) -> bytes:
        """``MakeProposalRef(value) = RefHash("MLS 1.0 Proposal Reference", value)``."""
        return self.ref_hash(b"MLS 1.0 Proposal Reference", authenticated_content)

    # --- AEAD ------------------------------------------------------------------------------

    def aead_seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._aead_cls(key).encrypt(nonce, plaintext, aad)

    def aead_open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        try:
            return self._aead_cls(key).decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError):
            raise CryptoError("AEAD decryption failed") from None

    # --- Signatures (§5.1.2) ---------------------------------------------------------------

    def signature_key_pair(self, *, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """A fresh (private, public) signature key pair; deterministic given ``rng`` (see
        :meth:`~mlspy.crypto.signature.Signer.generate_key_pair`)."""
        return self.signer.generate_key_pair(rng=rng)

    def signature_public_key(self, private_key: bytes) -> bytes:
        return self.signer.public_key_of(private_key)

    def sign_with_label(
        self, private_key: bytes | MessageSigner, label: str | bytes, content: bytes
    ) -> bytes:
        """``SignWithLabel(SignatureKey, Label, Content)`` (§5.1.2)::

        struct {
            opaque label<V>;
            opaque content<V>;
        } SignContent;

        ``private_key`` is the raw private key, or a :class:`MessageSigner` that is handed the
        encoded SignContent and signs it with a key it holds.
        """
        sign_content = _vec(MLS_LABEL_PREFIX + _label(label)) + _vec(content)
        if isinstance(private_key, bytes | bytearray | memoryview):
            return self.signer.sign(bytes(private_key), sign_content)
        return private_key.sign(sign_content)

    def verify_with_label(
        self, public_key: bytes, label: str | bytes, content: bytes, signature: bytes
    ) -> bool:
        """``VerifyWithLabel(VerificationKey, Label, Content, SignatureValue)``."""
        sign_content = _vec(MLS_LABEL_PREFIX + _label(label)) + _vec(content)
        return self.signer.verify(public_key, sign_content, signature)

    # --- Public-key encryption (§5.1.3) ----------------------------------------------------

    def hpke_key_pair(self, *, rng: Rng | None = None) -> tuple[bytes, bytes]:
        """A fresh HPKE (private, public) key pair: ``DeriveKeyPair(ikm)`` over ``Nsk`` bytes
        from ``rng`` (``os.urandom`` by default) (RFC 9180 §7.1.3)."""
        return self.hpke.generate_key_pair(rng=rng)

    def derive_key_pair(self, secret: bytes) -> tuple[bytes, bytes]:
        """``KEM.DeriveKeyPair(secret)`` → (private, public)."""
        return self.hpke.derive_key_pair(secret)

    def hpke_public_key(self, private_key: bytes) -> bytes:
        return self.hpke.public_key_of(private_key)

    def encrypt_with_label(
        self,
        public_key: bytes,
        label: str | bytes,
        context: bytes,
        plaintext: bytes,
        *,
        rng: Rng | None = None,
    ) -> tuple[bytes, bytes]:
        """``EncryptWithLabel(PublicKey, Label, Context, Plaintext)`` → (kem_output, ciphertext).

        ``SealBase(PublicKey, EncryptContext, "", Plaintext)`` with EncryptContext as above.
        With ``rng`` the HPKE ephemeral key is ``DeriveKeyPair(rng(Nsk))`` and the output is
        deterministic (RFC 9180 §6.1, §7.1.3); without it the native HPKE is used.
        """
        info = _vec(MLS_LABEL_PREFIX + _label(label)) + _vec(context)
        return self.hpke.seal(public_key, info, b"", plaintext, rng=rng)

    def decrypt_with_label(
        self,
        private_key: bytes,
        label: str | bytes,
        context: bytes,
        kem_output: bytes,
        ciphertext: bytes,
    ) -> bytes:
        """``DecryptWithLabel(PrivateKey, Label, Context, KEMOutput, Ciphertext)``."""
        info = _vec(MLS_LABEL_PREFIX + _label(label)) + _vec(context)
        return self.hpke.open(private_key, kem_output, info, b"", ciphertext)


def parse_suite(text: str) -> int:
    """A cipher suite written by number (decimal or ``0x`` hex) or by name (any case), as
    the CLI and the configuration take it; ValueError naming ``mlspy suites`` otherwise."""
    text = text.strip()
    by_name = {cs.name.upper(): int(cs) for cs in CipherSuite}
    try:
        value = int(text, 0) if text[:1].isdigit() else by_name[text.upper()]
        return int(CipherSuite(value))
    except (KeyError, ValueError):
        raise ValueError(
            f"unknown cipher suite {text!r} (`mlspy suites` lists the supported ones)"
        ) from None


@cache
def _provider(cipher_suite: CipherSuite) -> CipherSuiteProvider:
    return CipherSuiteProvider(cipher_suite)


def suite(cipher_suite: int) -> CipherSuiteProvider:
    """The provider for a cipher suite value; unknown values raise
    :class:`~mlspy.errors.UnsupportedCipherSuiteError`."""
    try:
        cs = CipherSuite(cipher_suite)
    except ValueError:
        raise UnsupportedCipherSuiteError(
            f"unsupported cipher suite 0x{cipher_suite:04x}"
        ) from None
    return _provider(cs)
