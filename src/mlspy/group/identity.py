"""A member's signing identity: credential, signature key pair and advertised capabilities."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlspy.crypto import CipherSuite, MessageSigner, suite
from mlspy.messages import Capabilities, Credential, CredentialType, Extension, ProtocolVersion
from mlspy.provider import DEFAULT_PROVIDER, Provider

# Proposal and extension types mlspy implements beyond the RFC defaults (§7.2: defaults are
# never listed); last_resort is a KeyPackage extension we understand, and 0xFF00 mlspy's
# membership policy (a GroupContext extension every member must support, group/policy.py).
SUPPORTED_EXTENSIONS: tuple[int, ...] = (0x000A, 0xFF00)


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
    """The credential and signature key pair a client signs with in one cipher suite.

    The private key is either held here (``signature_private_key``) or kept by an external
    ``signer`` (:class:`~mlspy.provider.Signer`: any object with ``sign()`` and
    ``public_key``, e.g. an HSM or a remote signing service), in which case
    ``signature_private_key`` is empty; build such an identity with :meth:`external`. Every
    signature the group makes goes through :attr:`signing_key`."""

    cipher_suite: int
    credential: Credential
    signature_private_key: bytes
    signature_key: bytes
    capabilities: Capabilities = field(default_factory=default_capabilities)
    leaf_extensions: tuple[Extension, ...] = ()
    signer: MessageSigner | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(
        cls,
        identity: bytes,
        cipher_suite: int = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
        *,
        capabilities: Capabilities | None = None,
        provider: Provider | None = None,
    ) -> SigningIdentity:
        """A basic-credential identity with a fresh signature key pair, drawn from
        ``provider`` (the system's by default; deterministic with a seeded one)."""
        cs = suite(cipher_suite)
        priv, pub = cs.signature_key_pair(rng=(provider or DEFAULT_PROVIDER).rng)
        return cls(
            cipher_suite,
            Credential.basic(identity),
            priv,
            pub,
            capabilities or default_capabilities(),
        )

    @classmethod
    def external(
        cls,
        cipher_suite: int,
        credential: Credential,
        signer: MessageSigner,
        *,
        capabilities: Capabilities | None = None,
        leaf_extensions: tuple[Extension, ...] = (),
    ) -> SigningIdentity:
        """An identity whose private key stays with ``signer`` (never in this object): the
        signature key is ``signer.public_key``. A group state holding it is stored without a
        private key; pass the signer again when loading it (``Group.from_bytes(signer=)``)."""
        suite(cipher_suite)  # unknown suites raise UnsupportedCipherSuiteError
        return cls(
            cipher_suite,
            credential,
            b"",
            bytes(signer.public_key),
            capabilities or default_capabilities(),
            leaf_extensions,
            signer,
        )

    @property
    def signing_key(self) -> bytes | MessageSigner:
        """What signs for this identity: the external signer if there is one, else the raw
        private key (both are accepted by ``CipherSuiteProvider.sign_with_label``)."""
        return self.signer if self.signer is not None else self.signature_private_key

    def __repr__(self) -> str:  # never print the private key
        return f"SigningIdentity(suite={self.cipher_suite}, credential={self.credential!r})"
