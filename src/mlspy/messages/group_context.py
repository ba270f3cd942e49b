"""The group context (RFC 9420 §8.1)."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer
from mlspy.messages.extension import Extension, read_extensions, write_extensions


@dataclass(frozen=True, slots=True)
class GroupContext(Struct):
    """RFC 9420 §8.1::

        struct {
            ProtocolVersion version = mls10;
            CipherSuite cipher_suite;
            opaque group_id<V>;
            uint64 epoch;
            opaque tree_hash<V>;
            opaque confirmed_transcript_hash<V>;
            Extension extensions<V>;
        } GroupContext;

    ``version`` and ``cipher_suite`` are plain ints; checking them is the caller's job.
    """

    version: int
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: tuple[Extension, ...]

    def encode_to(self, w: Writer) -> None:
        w.uint16(self.version)
        w.uint16(self.cipher_suite)
        w.opaque(self.group_id)
        w.uint64(self.epoch)
        w.opaque(self.tree_hash)
        w.opaque(self.confirmed_transcript_hash)
        write_extensions(w, self.extensions)

    @classmethod
    def decode_from(cls, r: Reader) -> GroupContext:
        return cls(
            r.uint16(),
            r.uint16(),
            r.opaque(),
            r.uint64(),
            r.opaque(),
            r.opaque(),
            read_extensions(r),
        )
