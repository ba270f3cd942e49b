"""The cryptographic floor: what the public-key operations of an MLS operation cost on this
machine with ``cryptography`` (suite 0x0001), measured once per run."""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.bench.timing import Timer
from mlspy.crypto import suite


@dataclass(frozen=True)
class CryptoCosts:
    sign: float
    verify: float
    seal: float
    open: float
    derive: float

    def cost(
        self, *, sign: int = 0, verify: int = 0, seal: int = 0, open: int = 0, derive: int = 0
    ) -> float:
        return (
            sign * self.sign
            + verify * self.verify
            + seal * self.seal
            + open * self.open
            + derive * self.derive
        )


def measure_costs(cipher_suite: int = 1, repeat: int = 200) -> CryptoCosts:
    cs = suite(cipher_suite)
    timer = Timer(repeat)
    sk, pk = cs.signature_key_pair()
    sig = cs.sign_with_label(sk, "x", b"m" * 200)
    hsk, hpk = cs.hpke_key_pair()
    kem_output, ct = cs.encrypt_with_label(hpk, "x", b"", b"s" * 32)
    return CryptoCosts(
        sign=timer.measure(lambda: cs.sign_with_label(sk, "x", b"m" * 200)),
        verify=timer.measure(lambda: cs.verify_with_label(pk, "x", b"m" * 200, sig)),
        seal=timer.measure(lambda: cs.encrypt_with_label(hpk, "x", b"", b"s" * 32)),
        open=timer.measure(lambda: cs.decrypt_with_label(hsk, "x", b"", kem_output, ct)),
        derive=timer.measure(lambda: cs.derive_key_pair(b"\x01" * cs.nh)),
    )
