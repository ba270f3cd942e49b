"""Time the primitives and message protection mlspy builds on, per cipher suite.

Usage: .venv/bin/python benchmarks/bench_primitives.py [--suite N ...] [--iterations N]
Prints a table of mean microseconds per operation (one thread, this machine).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from mlspy.crypto import CipherSuite, suite
from mlspy.crypto.signature import set_verification_cache
from mlspy.messages import ContentType, FramedContent, GroupContext, Sender, WireFormat
from mlspy.protection import (
    authenticate,
    open_private_message,
    protect_private_message,
)
from mlspy.schedule.secret_tree import SecretTree


def _time(fn: Callable[[], object], iterations: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations * 1e6


def bench_suite(cs_id: int, iterations: int) -> dict[str, float]:
    cs = suite(cs_id)
    hpke_sk, hpke_pk = cs.hpke_key_pair()
    sig_sk, sig_pk = cs.signature_key_pair()
    secret = b"\x01" * cs.nh
    kem_output, ct = cs.encrypt_with_label(hpke_pk, "UpdatePathNode", b"ctx", secret)
    signature = cs.sign_with_label(sig_sk, "LeafNodeTBS", b"x" * 200)
    ctx = GroupContext(1, cs_id, b"g" * 16, 7, b"t" * cs.nh, b"c" * cs.nh, ())
    fc = FramedContent(
        b"g" * 16, 7, Sender.member(1), b"", ContentType.application, application_data=b"m" * 100
    )
    ac = authenticate(cs, sig_sk, WireFormat.mls_private_message, fc, ctx)
    sender_tree = SecretTree(cs, secret, 2, max_forward=10**9)
    msg = protect_private_message(cs, ac, SecretTree(cs, secret, 2), secret)
    return {
        "ExpandWithLabel": _time(lambda: cs.expand_with_label(secret, "key", b"", 16), iterations),
        "DeriveKeyPair": _time(lambda: cs.derive_key_pair(secret), iterations),
        "EncryptWithLabel": _time(
            lambda: cs.encrypt_with_label(hpke_pk, "UpdatePathNode", b"ctx", secret), iterations
        ),
        "DecryptWithLabel": _time(
            lambda: cs.decrypt_with_label(hpke_sk, "UpdatePathNode", b"ctx", kem_output, ct),
            iterations,
        ),
        "SignWithLabel": _time(
            lambda: cs.sign_with_label(sig_sk, "LeafNodeTBS", b"x" * 200), iterations
        ),
        "VerifyWithLabel": _time(
            lambda: cs.verify_with_label(sig_pk, "LeafNodeTBS", b"x" * 200, signature), iterations
        ),
        "app encrypt (sign+protect)": _time(
            lambda: protect_private_message(
                cs,
                authenticate(cs, sig_sk, WireFormat.mls_private_message, fc, ctx),
                sender_tree,
                secret,
            ),
            iterations,
        ),
        "app decrypt (open, no verify)": _time(
            lambda: open_private_message(cs, msg, SecretTree(cs, secret, 2), secret), iterations
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", type=int, action="append", help="cipher suite (repeatable)")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    set_verification_cache(0)  # time real verifications
    suites = args.suite or [int(c) for c in CipherSuite]
    rows = {cs: bench_suite(cs, args.iterations) for cs in suites}
    ops = list(next(iter(rows.values())))
    print(f"{'operation (µs)':32}" + "".join(f"{'suite ' + str(cs):>10}" for cs in suites))
    for op in ops:
        print(f"{op:32}" + "".join(f"{rows[cs][op]:10.1f}" for cs in suites))


if __name__ == "__main__":
    main()
