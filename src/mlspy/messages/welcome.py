"""Welcome messages and the group secrets they carry (RFC 9420 §12.4.3.1)."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer, write_struct
from mlspy.messages.psk import PreSharedKeyID
from mlspy.messages.update_path import HPKECiphertext


@dataclass(frozen=True, slots=True)
class PathSecret(Struct):
    """RFC 9420 §12.4.3.1::

    struct {
      opaque path_secret<V>;
    } PathSecret;
    """

    path_secret: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.path_secret)

    @classmethod
    def decode_from(cls, r: Reader) -> PathSecret:
        return cls(r.opaque())


@dataclass(frozen=True, slots=True)
class GroupSecrets(Struct):
    """RFC 9420 §12.4.3.1::

    struct {
      opaque joiner_secret<V>;
      optional<PathSecret> path_secret;
      PreSharedKeyID psks<V>;
    } GroupSecrets;
    """

    joiner_secret: bytes
    path_secret: PathSecret | None
    psks: tuple[PreSharedKeyID, ...]

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.joiner_secret)
        w.optional(self.path_secret, write_struct)
        w.vector(self.psks, write_struct)

    @classmethod
    def decode_from(cls, r: Reader) -> GroupSecrets:
        return cls(
            r.opaque(),
            r.optional(PathSecret.decode_from),
            tuple(r.vector(PreSharedKeyID.decode_from)),
        )


@dataclass(frozen=True, slots=True)
class EncryptedGroupSecrets(Struct):
    """RFC 9420 §12.4.3.1::

        struct {
          KeyPackageRef new_member;
          HPKECiphertext encrypted_group_secrets;
        } EncryptedGroupSecrets;

    ``new_member`` is a ``KeyPackageRef`` (``opaque HashReference<V>``, §5.2).
    """

    new_member: bytes
    encrypted_group_secrets: HPKECiphertext

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.new_member)
        self.encrypted_group_secrets.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> EncryptedGroupSecrets:
        return cls(r.opaque(), HPKECiphertext.decode_from(r))


@dataclass(frozen=True, slots=True)
class Welcome(Struct):
    """RFC 9420 §12.4.3.1::

    struct {
      CipherSuite cipher_suite;
      EncryptedGroupSecrets secrets<V>;
      opaque encrypted_group_info<V>;
    } Welcome;
    """

    cipher_suite: int
    secrets: tuple[EncryptedGroupSecrets, ...]
    encrypted_group_info: bytes

    def encode_to(self, w: Writer) -> None:
        w.uint16(self.cipher_suite)
        w.vector(self.secrets, write_struct)
        w.opaque(self.encrypted_group_info)

    @classmethod
    def decode_from(cls, r: Reader) -> Welcome:
        return cls(r.uint16(), tuple(r.vector(EncryptedGroupSecrets.decode_from)), r.opaque())
