"""Cryptographic primitives of the MLS cipher suites (RFC 9420 §5) and HPKE (RFC 9180)."""

from mlspy.crypto.hpke import AeadId, Hpke, KdfId, KemId
from mlspy.crypto.rng import Rng
from mlspy.crypto.signature import MessageSigner, SignatureScheme, Signer
from mlspy.crypto.suite import (
    MLS_LABEL_PREFIX,
    CipherSuite,
    CipherSuiteProvider,
    suite,
)

__all__ = [
    "MLS_LABEL_PREFIX",
    "AeadId",
    "CipherSuite",
    "CipherSuiteProvider",
    "Hpke",
    "KdfId",
    "KemId",
    "MessageSigner",
    "Rng",
    "SignatureScheme",
    "Signer",
    "suite",
]
