"""Credentials and the Authentication Service hook (RFC 9420 §5.3, §5.3.1).

A :class:`CredentialValidator` is what a member asks "does this credential really belong to
this signature key?" — whenever it joins (every leaf of the tree) or sees a new or changed
leaf (Add, Update, the committer's path leaf). mlspy ships two: :class:`X509Validator`, which
checks an X.509 chain against trust anchors with ``cryptography.x509.verification`` (expiry,
key usage, and that the leaf certificate's key is the MLS signature key), and the Delivery
Service client's ``ASCredentialValidator``, which asks the Authentication Service.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import verification

from mlspy.errors import ValidationError
from mlspy.messages import Credential, CredentialType


class CredentialError(ValidationError):
    """A credential is not acceptable for its signature key (§5.3.1)."""

    section = "5.3.1"


class CredentialValidator(Protocol):
    def validate(self, credential: Credential, signature_key: bytes) -> None:
        """Raise :class:`CredentialError` unless ``credential`` may use ``signature_key``."""
        ...


def same_member(validator: CredentialValidator | None, old: Credential, new: Credential) -> bool:
    """Whether ``new`` presents identifiers acceptable for the participant ``old`` named
    (§12.1.2, §12.4.3.2: "acceptable to the application"): equal credentials always; others
    when the application's validator has a ``same_member(old, new)`` method saying so (e.g.
    two devices of one user, ``mlspy.users``)."""
    if old == new:
        return True
    check = getattr(validator, "same_member", None)
    return check is not None and bool(check(old, new))


# The catalogue rule (docs/validation.md) of X.509 credential validation.
X509_RULE = "LN-32"


def validate_credential(
    validator: CredentialValidator, credential: Credential, signature_key: bytes, *, rule: str
) -> None:
    """Ask the Authentication Service about a credential (§5.3.1). A refusal reports the
    catalogue ``rule`` of the check that asked (an Add, an Update, a committer's leaf, a tree
    being joined...): the validator knows what is wrong with the credential, not where the
    group met it."""
    try:
        validator.validate(credential, signature_key)
    except CredentialError as exc:
        exc.rule = rule
        raise


def _raw_public_key(cert: x509.Certificate) -> bytes:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    raise CredentialError("the certificate's key type cannot sign MLS messages", rule=X509_RULE)


# A certificate for one device of a user carries a URI SAN "mlspy-device:<user>/<device>"
# (mlspy.users): its identity is then "<user>/<device>".
DEVICE_URI_SCHEME = "mlspy-device:"


def x509_identity(cert: x509.Certificate) -> bytes:
    """The identity a certificate presents: a device URI SAN (``DEVICE_URI_SCHEME``), else
    its first SAN (email, URI, DNS), else its CN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(DEVICE_URI_SCHEME):
                return uri[len(DEVICE_URI_SCHEME) :].encode()
        for kind in (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName):
            values = san.get_values_for_type(kind)
            if values:
                return str(values[0]).encode()
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not cns:
        raise CredentialError("the certificate names no identity (no SAN, no CN)", rule=X509_RULE)
    value = cns[0].value
    return value.encode() if isinstance(value, str) else bytes(value)


class X509Validator:
    """Validates X.509 credentials against trust anchors; Basic credentials are refused unless
    ``allow_basic`` (then they are accepted as they are)."""

    def __init__(
        self,
        trust_anchors: Sequence[x509.Certificate],
        *,
        allow_basic: bool = False,
        clock: datetime.datetime | None = None,
    ) -> None:
        self._store = verification.Store(list(trust_anchors))
        self._allow_basic = allow_basic
        self._clock = clock

    def identity(self, credential: Credential, signature_key: bytes) -> bytes:
        """Validate and return the identity the credential presents."""
        if credential.credential_type == CredentialType.basic:
            if not self._allow_basic or credential.identity is None:
                raise CredentialError("basic credentials are not accepted", rule=X509_RULE)
            return credential.identity
        if credential.credential_type != CredentialType.x509 or not credential.certificates:
            raise CredentialError("unsupported credential type", rule=X509_RULE)
        try:
            chain = [x509.load_der_x509_certificate(c.cert_data) for c in credential.certificates]
        except ValueError:
            raise CredentialError("a certificate of the chain is not DER", rule=X509_RULE) from None
        leaf, intermediates = chain[0], chain[1:]
        builder = verification.PolicyBuilder().store(self._store)
        if self._clock is not None:
            builder = builder.time(self._clock)
        try:
            builder.build_client_verifier().verify(leaf, intermediates)
        except verification.VerificationError as exc:
            raise CredentialError(f"certificate chain rejected: {exc}", rule=X509_RULE) from None
        try:
            usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
            if not usage.digital_signature:
                raise CredentialError(
                    "the leaf certificate may not sign (key usage)", rule=X509_RULE
                )
        except x509.ExtensionNotFound:
            pass
        if _raw_public_key(leaf) != signature_key:
            raise CredentialError(
                "the leaf certificate's key is not the MLS signature key", rule=X509_RULE
            )
        return x509_identity(leaf)

    def validate(self, credential: Credential, signature_key: bytes) -> None:
        self.identity(credential, signature_key)
