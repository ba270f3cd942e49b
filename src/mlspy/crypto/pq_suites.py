"""The post-quantum MLS cipher suites (experimental): what each is made of.

Two families, neither registered with IANA yet (README, "Post-quantum suites"):

* **ts-mls 1.6's suites 79-88**, under ts-mls's own code points, so mlspy and ts-mls members
  share groups. Every one uses HKDF-SHA512 as its KDF (so its secrets are 64 bytes) while the
  hash of its name serves the transcript, the tree hash, references and HMAC — as ts-mls
  computes them — and derives node keys as ``@hpke/ml-kem`` and ``@hpke/hybridkem-x-wing``
  do (``pqkem.Derivation.TS_MLS``). ts-mls's 77 and 78 (ML-KEM-512) are absent:
  ``cryptography`` has no ML-KEM-512.
* **draft-ietf-mls-pq-ciphersuites-06**, at ``0xF000 + n`` for the draft's ``TBDn``
  (private-use values, RFC 9420 §17.1; the numbering the OpenMLS draft implementation uses):
  its KEMs derive keys as ``draft-ietf-hpke-pq`` says (``Derivation.HPKE_PQ``), the KDF's hash
  is the suite's hash. TBD3-TBD5 (ML-KEM-768+P-256, ML-KEM-1024+P-384) are absent:
  ``cryptography`` has no ML-KEM-768+P-256 KEM, and the P-384 hybrid's key derivation could
  not be checked against vectors.

Each entry: (KEM, KDF, AEAD, signature scheme, hash, key derivation), the ids of RFC 9180's
registries, draft-ietf-hpke-pq's KEM ids and TLS SignatureScheme values.
"""

from __future__ import annotations

from mlspy.crypto.hpke import AeadId, KdfId, KemId
from mlspy.crypto.pqkem import Derivation
from mlspy.crypto.signature import SignatureScheme

Spec = tuple[KemId, KdfId, AeadId, SignatureScheme, KdfId, Derivation]

_TS = Derivation.TS_MLS
_PQ = Derivation.HPKE_PQ
_ED = SignatureScheme.ed25519
_SHA256, _SHA384, _SHA512 = KdfId.HKDF_SHA256, KdfId.HKDF_SHA384, KdfId.HKDF_SHA512
_AES128, _AES256, _CHACHA = AeadId.AES_128_GCM, AeadId.AES_256_GCM, AeadId.CHACHA20_POLY1305
_M768, _M1024, _XW = KemId.ML_KEM_768, KemId.ML_KEM_1024, KemId.X_WING
_MLDSA87 = SignatureScheme.mldsa87

PQ_SUITES: dict[int, Spec] = {
    # ts-mls 1.6 (KDF HKDF-SHA512 throughout; the hash is the name's)
    79: (_M768, _SHA512, _AES256, _ED, _SHA384, _TS),
    80: (_M768, _SHA512, _CHACHA, _ED, _SHA384, _TS),
    81: (_M1024, _SHA512, _AES256, _ED, _SHA512, _TS),
    82: (_M1024, _SHA512, _CHACHA, _ED, _SHA512, _TS),
    83: (_XW, _SHA512, _AES256, _ED, _SHA512, _TS),
    84: (_XW, _SHA512, _CHACHA, _ED, _SHA512, _TS),
    85: (_M1024, _SHA512, _AES256, _MLDSA87, _SHA512, _TS),
    86: (_M1024, _SHA512, _CHACHA, _MLDSA87, _SHA512, _TS),
    87: (_XW, _SHA512, _AES256, _MLDSA87, _SHA512, _TS),
    88: (_XW, _SHA512, _CHACHA, _MLDSA87, _SHA512, _TS),
    # draft-ietf-mls-pq-ciphersuites-06, TBDn at 0xF000 + n
    0xF001: (_XW, _SHA256, _AES128, _ED, _SHA256, _PQ),
    0xF002: (_XW, _SHA384, _AES256, _ED, _SHA384, _PQ),
    0xF006: (_M768, _SHA384, _AES256, _ED, _SHA384, _PQ),
    0xF007: (_M768, _SHA384, _AES256, SignatureScheme.ecdsa_secp256r1_sha256, _SHA384, _PQ),
    0xF008: (_M1024, _SHA384, _AES256, SignatureScheme.ecdsa_secp384r1_sha384, _SHA384, _PQ),
    0xF009: (_XW, _SHA384, _CHACHA, SignatureScheme.mldsa44, _SHA384, _PQ),
    0xF00A: (_M768, _SHA384, _AES256, SignatureScheme.mldsa65, _SHA384, _PQ),
    0xF00B: (_M1024, _SHA384, _AES256, _MLDSA87, _SHA384, _PQ),
}

# The ts-mls family, for the interop tests and the README.
TS_MLS_SUITES = tuple(n for n, spec in PQ_SUITES.items() if spec[5] is _TS)
DRAFT_SUITES = tuple(n for n, spec in PQ_SUITES.items() if spec[5] is _PQ)
