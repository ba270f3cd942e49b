"""The generic extension container (RFC 9420 §13) and extension-list helpers.

Extension types are plain ``int``: unknown and GREASE types must be carried (and re-encoded
byte for byte) and ignored by whoever interprets them. Typed payloads live in
:mod:`mlspy.messages.extensions`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mlspy.codec import Reader, Struct, Writer, write_struct


@dataclass(frozen=True, slots=True)
class Extension(Struct):
    """RFC 9420 §7.2 (defined with LeafNode, used everywhere extensions appear)::

    // See the "MLS Extension Types" IANA registry for values
    uint16 ExtensionType;

    struct {
        ExtensionType extension_type;
        opaque extension_data<V>;
    } Extension;
    """

    extension_type: int
    extension_data: bytes

    def encode_to(self, w: Writer) -> None:
        w.uint16(self.extension_type)
        w.opaque(self.extension_data)

    @classmethod
    def decode_from(cls, r: Reader) -> Extension:
        return cls(r.uint16(), r.opaque())


def read_extensions(r: Reader) -> tuple[Extension, ...]:
    """``Extension extensions<V>``."""
    return tuple(r.vector(Extension.decode_from))


def write_extensions(w: Writer, extensions: tuple[Extension, ...]) -> None:
    """``Extension extensions<V>``."""
    w.vector(extensions, write_struct)


def find_extension(extensions: Iterable[Extension], extension_type: int) -> Extension | None:
    """The first extension of ``extension_type``, or ``None``.

    Duplicate types are a validation failure (§7.2, §12.1.7, §12.4.3) checked elsewhere.
    """
    for ext in extensions:
        if ext.extension_type == extension_type:
            return ext
    return None
