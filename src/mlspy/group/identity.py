"""A member's signing identity: credential, signature key pair and advertised capabilities."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlspy.crypto import CipherSuite, suite
from mlspy.messages import Capabilities, Credential, CredentialType, Extension, ProtocolVersion

# Proposal and extension types mlspy implements beyond the RFC defaults (§7.2: defaults are
# never listed); last_resort is a KeyPackage extension we understand.
SUPPORTED_EXTENSIONS: tuple[int, ...] = (0x000A,)


def default_capabilities(
    cipher_suites: tuple[int, ...] | None = None,
    credentials: tuple[int, ...] = (CredentialType.basic, CredentialType.x509),
    extensions: tuple[int, ...] = SUPPORTED_EXTENSIONS,
    proposals: tuple[int, ...] = (),
) -> Capabilities:
    """Everything mlspy supports: mls10, all seven suites, basic and X.509 credentials."""
    return Capabilities(
        (ProtocolVersion.mls10,),
        cipher_suites or tuple(int(c) for c in CipherSuite),
        extensions,
        proposals,
        credentials,
    )


@dataclass(frozen=True)
class SigningIdentity:
    """The credential and signature key pair a client signs with in one cipher suite."""

    cipher_suite: int
    credential: Credential
    signature_private_key: bytes
    signature_key: bytes
    capabilities: Capabilities = field(default_factory=default_capabilities)
    leaf_extensions: tuple[Extension, ...] = ()

    @classmethod
    def generate(
        cls,
        identity: bytes,
        cipher_suite: int = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
        *,
        capabilities: Capabilities | None = None,
    ) -> SigningIdentity:
        """A basic-credential identity with a fresh signature key pair."""
        cs = suite(cipher_suite)
        priv, pub = cs.signature_key_pair()
        return cls(
            cipher_suite,
            Credential.basic(identity),
            priv,
            pub,
            capabilities or default_capabilities(),
        )

    def __repr__(self) -> str:  # never print the private key
        return f"SigningIdentity(suite={self.cipher_suite}, credential={self.credential!r})"
