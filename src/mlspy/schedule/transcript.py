"""Transcript hashes and the confirmation tag (RFC 9420 §8.2, §8.1)::

    confirmed_transcript_hash_[n] =
        Hash(interim_transcript_hash_[n-1] || ConfirmedTranscriptHashInput_[n]);
    interim_transcript_hash_[n] =
        Hash(confirmed_transcript_hash_[n] || InterimTranscriptHashInput_[n]);
    confirmation_tag = MAC(confirmation_key, GroupContext.confirmed_transcript_hash)

The hash inputs enter as their encoded bytes (see ``mlspy.messages.framing``).
"""

from __future__ import annotations

from mlspy.codec import encode_opaque
from mlspy.crypto import CipherSuiteProvider


def confirmed_transcript_hash(
    cs: CipherSuiteProvider, interim_before: bytes, confirmed_input: bytes
) -> bytes:
    return cs.hash(interim_before + confirmed_input)


def interim_transcript_hash(
    cs: CipherSuiteProvider, confirmed: bytes, confirmation_tag: bytes
) -> bytes:
    """``InterimTranscriptHashInput`` is ``struct { MAC confirmation_tag; }`` (opaque<V>)."""
    return cs.hash(confirmed + encode_opaque(confirmation_tag))


def confirmation_tag(cs: CipherSuiteProvider, confirmation_key: bytes, confirmed: bytes) -> bytes:
    return cs.mac(confirmation_key, confirmed)


def verify_confirmation_tag(
    cs: CipherSuiteProvider, confirmation_key: bytes, confirmed: bytes, tag: bytes
) -> bool:
    """Constant-time comparison of a received confirmation tag."""
    return cs.verify_mac(confirmation_key, confirmed, tag)
