"""The MLS key schedule (RFC 9420 §8).

Theory of operation::

    init_secret_[n-1] --Extract(commit_secret)--> ExpandWithLabel("joiner", GroupContext_[n])
      = joiner_secret --Extract(psk_secret or 0)--> member secret
          +--> DeriveSecret("welcome") = welcome_secret
          +--> ExpandWithLabel("epoch", GroupContext_[n]) = epoch_secret
                 +--> DeriveSecret(<label>) for each epoch-derived secret (§8, table)
                 +--> DeriveSecret("init") = init_secret_[n]

The GroupContext enters as its encoded bytes, so this module depends only on the crypto layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlspy.crypto import CipherSuiteProvider


@dataclass(frozen=True, slots=True)
class EpochSecrets:
    """Every secret one epoch of the key schedule produces (§8, "Epoch-Derived Secrets")."""

    joiner_secret: bytes
    welcome_secret: bytes
    epoch_secret: bytes
    sender_data_secret: bytes
    encryption_secret: bytes
    exporter_secret: bytes
    external_secret: bytes
    confirmation_key: bytes
    membership_key: bytes
    resumption_psk: bytes
    epoch_authenticator: bytes
    init_secret: bytes

    def __repr__(self) -> str:  # never show secrets
        return "EpochSecrets(<secret>)"


def compute_joiner_secret(
    cs: CipherSuiteProvider, init_secret: bytes, commit_secret: bytes, group_context: bytes
) -> bytes:
    """``ExpandWithLabel(Extract(init_secret, commit_secret), "joiner", GroupContext, Nh)``."""
    prk = cs.extract(init_secret, commit_secret)
    return cs.expand_with_label(prk, "joiner", group_context, cs.nh)


def _member_secret(
    cs: CipherSuiteProvider, joiner_secret: bytes, psk_secret: bytes | None
) -> bytes:
    return cs.extract(joiner_secret, psk_secret if psk_secret is not None else bytes(cs.nh))


def compute_welcome_secret(
    cs: CipherSuiteProvider, joiner_secret: bytes, psk_secret: bytes | None
) -> bytes:
    """``DeriveSecret(Extract(joiner_secret, psk_secret), "welcome")``."""
    return cs.derive_secret(_member_secret(cs, joiner_secret, psk_secret), "welcome")


def epoch_from_joiner(
    cs: CipherSuiteProvider,
    joiner_secret: bytes,
    psk_secret: bytes | None,
    group_context: bytes,
) -> EpochSecrets:
    """Derive an epoch's secrets from its joiner secret (the path a new member takes)."""
    member = _member_secret(cs, joiner_secret, psk_secret)
    epoch_secret = cs.expand_with_label(member, "epoch", group_context, cs.nh)
    return secrets_from_epoch_secret(
        cs, epoch_secret, joiner_secret, cs.derive_secret(member, "welcome")
    )


def secrets_from_epoch_secret(
    cs: CipherSuiteProvider, epoch_secret: bytes, joiner_secret: bytes, welcome_secret: bytes
) -> EpochSecrets:
    """Every epoch-derived secret of the table in §8 from ``epoch_secret``."""
    d = cs.derive_secret
    return EpochSecrets(
        joiner_secret=joiner_secret,
        welcome_secret=welcome_secret,
        epoch_secret=epoch_secret,
        sender_data_secret=d(epoch_secret, "sender data"),
        encryption_secret=d(epoch_secret, "encryption"),
        exporter_secret=d(epoch_secret, "exporter"),
        external_secret=d(epoch_secret, "external"),
        confirmation_key=d(epoch_secret, "confirm"),
        membership_key=d(epoch_secret, "membership"),
        resumption_psk=d(epoch_secret, "resumption"),
        epoch_authenticator=d(epoch_secret, "authentication"),
        init_secret=d(epoch_secret, "init"),
    )


def advance_epoch(
    cs: CipherSuiteProvider,
    init_secret: bytes,
    commit_secret: bytes,
    psk_secret: bytes | None,
    group_context: bytes,
) -> EpochSecrets:
    """The full key schedule of one epoch from the previous epoch's ``init_secret``."""
    joiner = compute_joiner_secret(cs, init_secret, commit_secret, group_context)
    return epoch_from_joiner(cs, joiner, psk_secret, group_context)


def welcome_key_nonce(cs: CipherSuiteProvider, welcome_secret: bytes) -> tuple[bytes, bytes]:
    """The AEAD key and nonce that protect a Welcome's GroupInfo (§12.4.3.1)."""
    return (
        cs.expand_with_label(welcome_secret, "key", b"", cs.nk),
        cs.expand_with_label(welcome_secret, "nonce", b"", cs.nn),
    )


def mls_exporter(
    cs: CipherSuiteProvider, exporter_secret: bytes, label: str | bytes, context: bytes, length: int
) -> bytes:
    """``MLS-Exporter(Label, Context, Length)`` (§8.5)::

    ExpandWithLabel(DeriveSecret(exporter_secret, Label), "exported", Hash(Context), Length)
    """
    return cs.expand_with_label(
        cs.derive_secret(exporter_secret, label), "exported", cs.hash(context), length
    )


def external_key_pair(cs: CipherSuiteProvider, external_secret: bytes) -> tuple[bytes, bytes]:
    """``external_priv, external_pub = KEM.DeriveKeyPair(external_secret)`` (§8)."""
    return cs.derive_key_pair(external_secret)
