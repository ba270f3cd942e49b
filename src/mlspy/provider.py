"""Providers: where randomness, the clock and signing come from.

The protocol core is deterministic given its inputs (DESIGN.md, layer 2). What it would
otherwise take from the environment is injected:

* a :class:`Provider` supplies randomness (:meth:`Provider.random`) and the time
  (:meth:`Provider.now`). :data:`DEFAULT_PROVIDER` uses the operating system's CSPRNG
  (``os.urandom``) and the system clock. :class:`SeededProvider` is deterministic — **for
  tests and reproducible runs only**, never for real groups;
* a :class:`Signer` signs with a signature key that may live outside Python memory (an HSM, a
  remote signing service). :class:`KeySigner` is the default one, holding a raw private key.

``provider.random`` has the shape of the crypto layer's ``rng`` parameter
(``Callable[[int], bytes]``): ``cs.hpke_key_pair(rng=provider.random)``,
``cs.encrypt_with_label(..., rng=provider.random)``.

Determinism. With a :class:`SeededProvider`, every value the core derives from randomness —
HPKE and signature key pairs, path secrets, HPKE encapsulations (RFC 9180 §7.1.3
``DeriveKeyPair`` over the drawn bytes), reuse guards — is a function of the seed. Signatures
are byte-identical too in the Ed25519/Ed448 suites (EdDSA is deterministic, RFC 8032);
``cryptography`` randomizes ECDSA, so in the P-256/P-384/P-521 suites signature bytes differ
from run to run (and so does whatever hashes over them) while still verifying.

This module is a lower layer: it imports only the crypto layer, the errors, the standard
library and ``cryptography``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time

from mlspy.crypto import Rng, suite
from mlspy.crypto.signature import MessageSigner as Signer
from mlspy.errors import UsageError

__all__ = [
    "DEFAULT_PROVIDER",
    "SEEDED_EPOCH",
    "KeySigner",
    "Provider",
    "SeededProvider",
    "Signer",
]


class KeySigner:
    """The default :class:`Signer`: a raw private signature key held in memory.

    ``sign(message)`` signs the encoded SignContent (RFC 9420 §5.1.2) with the suite's
    signature scheme. The key never appears in ``repr``.
    """

    __slots__ = ("_private_key", "cipher_suite", "public_key")

    def __init__(self, cipher_suite: int, private_key: bytes) -> None:
        cs = suite(cipher_suite)  # unknown suites raise UnsupportedCipherSuiteError
        self.cipher_suite: int = cs.id
        self._private_key = bytes(private_key)
        # Derives the public key and checks the private key (CryptoError if invalid).
        self.public_key: bytes = cs.signature_public_key(self._private_key)

    @classmethod
    def generate(cls, cipher_suite: int, provider: Provider | None = None) -> KeySigner:
        """A signer with a fresh key; deterministic if ``provider`` is (RFC 9420 §5.1.2)."""
        rng = provider.random if provider is not None else None
        private_key, _ = suite(cipher_suite).signature_key_pair(rng=rng)
        return cls(cipher_suite, private_key)

    @property
    def private_key(self) -> bytes:
        """The raw private key, for persisting it; handle with care."""
        return self._private_key

    def sign(self, message: bytes) -> bytes:
        return suite(self.cipher_suite).signer.sign(self._private_key, message)

    def __repr__(self) -> str:  # never show the private key
        return (
            f"KeySigner(cipher_suite=0x{self.cipher_suite:04x}, "
            f"public_key={self.public_key[:8].hex()}..., <secret>)"
        )


class Provider:
    """Randomness and time for the protocol core; the base class is the system's.

    Subclass and override :meth:`random` and :meth:`now` to inject others. ``random(n)`` must
    return exactly ``n`` bytes that are uniformly random and unpredictable (a CSPRNG) for
    anything but tests.
    """

    __slots__ = ()

    def random(self, n: int) -> bytes:
        """``n`` random bytes (``os.urandom``)."""
        return os.urandom(n)

    def now(self) -> int:
        """The current time in whole seconds since the Unix epoch (RFC 9420 §7.2 lifetimes)."""
        return int(time.time())

    @property
    def rng(self) -> Rng | None:
        """The crypto layer's ``rng`` argument for this provider: ``None`` while
        :meth:`random` is the system's (the crypto layer then draws from ``os.urandom``
        itself and keeps its native fast paths, e.g. native HPKE ``seal``), else
        :meth:`random`."""
        return None if type(self).random is Provider.random else self.random

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


DEFAULT_PROVIDER = Provider()
"""The system provider: ``os.urandom`` and ``time.time``."""

SEEDED_EPOCH = 1_735_689_600
"""The default fixed clock of :class:`SeededProvider`: 2025-01-01T00:00:00Z."""

_STREAM_LABEL = b"mlspy SeededProvider v1"


class SeededProvider(Provider):
    """A deterministic provider — **for tests and reproducibility only**.

    Its "randomness" is a keystream derived from ``seed``, so anyone who knows the seed knows
    every key and secret a client derives from it. Use it to make protocol runs reproducible
    (tests, test vectors, bug reports), never for real groups.

    The stream is HKDF-SHA-256 extraction followed by HMAC in counter mode (RFC 5869 §2.2;
    NIST SP 800-108r1 §4.1): ``PRK = HKDF-Extract(salt = "mlspy SeededProvider v1",
    IKM = seed)`` and 32-byte block ``i`` (from 0) is ``HMAC-SHA256(PRK, uint64(i))``. The
    stream does not depend on how it is read: ``random(3) + random(5)`` equals the first 8
    bytes of a fresh provider's ``random(8)``.

    The clock starts at ``now`` (default :data:`SEEDED_EPOCH`) and advances by ``tick``
    seconds after every :meth:`now` call (default 0: a fixed clock).
    """

    __slots__ = ("_buffer", "_clock", "_counter", "_lock", "_prk", "_tick")

    def __init__(self, seed: bytes, now: int = SEEDED_EPOCH, *, tick: int = 0) -> None:
        if now < 0 or tick < 0:
            raise UsageError("the seeded clock starts at a non-negative time and never goes back")
        self._prk = hmac.new(_STREAM_LABEL, bytes(seed), hashlib.sha256).digest()
        self._counter = 0
        self._buffer = b""
        self._clock = now
        self._tick = tick
        self._lock = threading.Lock()

    def random(self, n: int) -> bytes:
        """The next ``n`` bytes of the seeded stream."""
        if n < 0:
            raise UsageError("cannot draw a negative number of bytes")
        with self._lock:
            blocks = [self._buffer]
            have = len(self._buffer)
            while have < n:
                block = hmac.new(
                    self._prk, self._counter.to_bytes(8, "big"), hashlib.sha256
                ).digest()
                self._counter += 1
                blocks.append(block)
                have += len(block)
            stream = b"".join(blocks)
            self._buffer = stream[n:]
            return stream[:n]

    def now(self) -> int:
        """The seeded clock; advances by ``tick`` after each call."""
        with self._lock:
            t = self._clock
            self._clock += self._tick
            return t

    def child(self, label: bytes) -> SeededProvider:
        """An independent seeded provider for ``label`` (e.g. one per simulated client); it
        does not consume this provider's stream, and shares its clock settings."""
        seed = hmac.new(self._prk, b"child\x00" + bytes(label), hashlib.sha256).digest()
        return SeededProvider(seed, self._clock, tick=self._tick)

    def __repr__(self) -> str:  # never show the seed
        return f"SeededProvider(<seed>, now={self._clock}, tick={self._tick})"
