"""X.509 test certificates: a CA and leaf certificates for MLS signature keys."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlspy.group import SigningIdentity, default_capabilities
from mlspy.messages import Certificate, Credential

NOW = datetime.datetime.now(datetime.UTC)


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlspy test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    email: str,
    public_key: ed25519.Ed25519PublicKey,
    *,
    days: int = 10,
    signing: bool = True,
    device: str | None = None,
) -> x509.Certificate:
    names: list[x509.GeneralName] = [x509.RFC822Name(email)]
    if device is not None:  # one device of the user (mlspy.users)
        names.append(x509.UniformResourceIdentifier(f"mlspy-device:{email}/{device}"))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=2))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.KeyUsage(signing, False, not signing, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def x509_identity(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, email: str, **kw: object
) -> SigningIdentity:
    base = SigningIdentity.generate(b"unused")
    pub = ed25519.Ed25519PublicKey.from_public_bytes(base.signature_key)
    cert = make_leaf(ca_key, ca, email, pub, **kw)  # type: ignore[arg-type]
    der = cert.public_bytes(serialization.Encoding.DER)
    return SigningIdentity(
        1,
        Credential.x509((Certificate(der),)),
        base.signature_private_key,
        base.signature_key,
        default_capabilities(),
    )


def self_signed_server(tmp: Path) -> tuple[Path, Path]:
    """A self-signed TLS certificate for 127.0.0.1 and its key, as PEM files in ``tmp``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
