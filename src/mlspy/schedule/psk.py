"""The PSK secret (RFC 9420 §8.4)::

    struct {
        PreSharedKeyID id;
        uint16 index;
        uint16 count;
    } PSKLabel;

    psk_extracted_[i] = KDF.Extract(0, psk_[i])
    psk_input_[i] = ExpandWithLabel(psk_extracted_[i], "derived psk", PSKLabel, KDF.Nh)
    psk_secret_[0] = 0
    psk_secret_[i] = KDF.Extract(psk_input_[i-1], psk_secret_[i-1])

PSK identities enter as their encoded ``PreSharedKeyID`` bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlspy.crypto import CipherSuiteProvider


def compute_psk_secret(cs: CipherSuiteProvider, psks: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``psk_secret`` from ``(encoded PreSharedKeyID, psk)`` pairs in proposal order.

    With no PSKs the result is the all-zero vector of length ``KDF.Nh``.
    """
    zero = bytes(cs.nh)
    secret = zero
    count = len(psks)
    for index, (psk_id, psk) in enumerate(psks):
        extracted = cs.extract(zero, psk)
        label = psk_id + index.to_bytes(2, "big") + count.to_bytes(2, "big")
        psk_input = cs.expand_with_label(extracted, "derived psk", label, cs.nh)
        secret = cs.extract(psk_input, secret)
    return secret
