"""Credentials (RFC 9420 §5.3).

A credential type other than ``basic`` or ``x509`` (including GREASE and private-use values)
decodes as a *custom* credential whose body is ``opaque data<V>``: the convention mls-rs uses
for application-defined credentials, so such credentials round-trip byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer, write_struct
from mlspy.errors import UsageError
from mlspy.messages.enums import CREDENTIAL_TYPE_BY_VALUE, CredentialType


@dataclass(frozen=True, slots=True)
class Certificate(Struct):
    """RFC 9420 §5.3::

    struct {
        opaque cert_data<V>;
    } Certificate;
    """

    cert_data: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.cert_data)

    @classmethod
    def decode_from(cls, r: Reader) -> Certificate:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class Credential(Struct):
    """RFC 9420 §5.3::

        // See the "MLS Credential Types" IANA registry for values
        uint16 CredentialType;

        struct {
            CredentialType credential_type;
            select (Credential.credential_type) {
                case basic:
                    opaque identity<V>;

                case x509:
                    Certificate certificates<V>;
            };
        } Credential;

    Exactly one of ``identity`` (basic), ``certificates`` (x509) or ``data`` (any other type,
    encoded as ``opaque data<V>`` after the type, as mls-rs does) is set. Build one with
    :meth:`basic`, :meth:`x509` or :meth:`custom`.
    """

    credential_type: int
    identity: bytes | None = None
    certificates: tuple[Certificate, ...] | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        ct = self.credential_type
        if ct == CredentialType.basic:
            ok = self.identity is not None and self.certificates is None and self.data is None
        elif ct == CredentialType.x509:
            ok = self.certificates is not None and self.identity is None and self.data is None
        else:
            ok = self.data is not None and self.identity is None and self.certificates is None
        if not ok:
            raise UsageError(f"Credential fields do not match credential_type {ct}")

    @classmethod
    def basic(cls, identity: bytes) -> Credential:
        return cls(CredentialType.basic, identity=identity)

    @classmethod
    def x509(cls, certificates: tuple[Certificate, ...]) -> Credential:
        return cls(CredentialType.x509, certificates=certificates)

    @classmethod
    def custom(cls, credential_type: int, data: bytes) -> Credential:
        if credential_type in CREDENTIAL_TYPE_BY_VALUE:
            raise UsageError(f"credential type {credential_type} is not a custom type")
        return cls(credential_type, data=data)

    def encode_to(self, w: Writer) -> None:
        w.uint16(self.credential_type)
        if self.identity is not None:
            w.opaque(self.identity)
        elif self.certificates is not None:
            w.vector(self.certificates, write_struct)
        elif self.data is not None:
            w.opaque(self.data)

    @classmethod
    def decode_from(cls, r: Reader) -> Credential:
        ct = r.uint16()
        if ct == 1:
            return cls(CredentialType.basic, r.opaque(), None, None)
        if ct == 2:
            return cls(CredentialType.x509, None, tuple(r.vector(Certificate.decode_from)), None)
        return cls(ct, None, None, r.opaque())
