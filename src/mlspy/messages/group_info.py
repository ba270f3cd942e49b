"""Group information for joiners (RFC 9420 §12.4.3)."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer
from mlspy.messages.extension import Extension, read_extensions, write_extensions
from mlspy.messages.group_context import GroupContext


@dataclass(frozen=True, slots=True)
class GroupInfo(Struct):
    """RFC 9420 §12.4.3::

    struct {
        GroupContext group_context;
        Extension extensions<V>;
        MAC confirmation_tag;
        uint32 signer;
        /* SignWithLabel(., "GroupInfoTBS", GroupInfoTBS) */
        opaque signature<V>;
    } GroupInfo;
    """

    group_context: GroupContext
    extensions: tuple[Extension, ...]
    confirmation_tag: bytes
    signer: int
    signature: bytes

    def _encode_content(self, w: Writer) -> None:
        self.group_context.encode_to(w)
        write_extensions(w, self.extensions)
        w.opaque(self.confirmation_tag)
        w.uint32(self.signer)

    def encode_to(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode_from(cls, r: Reader) -> GroupInfo:
        return cls(
            GroupContext.decode_from(r),
            read_extensions(r),
            r.opaque(),
            r.uint32(),
            r.opaque(),
        )

    def tbs(self) -> bytes:
        """The encoded GroupInfoTBS, signed with label "GroupInfoTBS" (§12.4.3)::

        struct {
            GroupContext group_context;
            Extension extensions<V>;
            MAC confirmation_tag;
            uint32 signer;
        } GroupInfoTBS;
        """
        w = Writer()
        self._encode_content(w)
        return w.getvalue()
