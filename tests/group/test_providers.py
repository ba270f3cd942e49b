"""Providers in the group engine (issue "Providers"): randomness, the clock and signing come
from one injected provider and an optional external signer.

* Determinism: two runs of the same scenario with ``SeededProvider(b"seed")`` (suite 0x0001,
  Ed25519: EdDSA signatures are deterministic too) produce byte-identical KeyPackages,
  commits, Welcomes, GroupInfos, proposals, application messages, external commits and
  stored states; another seed changes every one of them.
* The core never draws from ``os.urandom`` (nor ``secrets``) behind the provider's back: a
  seeded run passes with both patched to raise. Key generation inside ``cryptography`` does
  not go through Python's ``os.urandom``; the determinism test catches that.
* An external signer that keeps its Ed25519 key inside a ``cryptography`` key object signs
  everything a member sends; the state round-trips without the private key and refuses to
  load without the signer.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mlspy.crypto import MessageSigner
from mlspy.errors import ProposalError, UsageError
from mlspy.group import (
    ApplicationMessage,
    Group,
    GroupConfig,
    KeyPackageBundle,
    ProposalReceived,
    SigningIdentity,
    StagedCommit,
    create_key_package,
    join_external,
)
from mlspy.group.key_package import CLOCK_SKEW
from mlspy.messages import Credential, MLSMessage
from mlspy.provider import DEFAULT_PROVIDER, SEEDED_EPOCH, Provider, SeededProvider
from mlspy.tree.math import LeafIndex

SUITE = 0x0001  # MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519


def _deliver(receivers: Sequence[Group], message: bytes) -> list[object]:
    """Every receiver processes ``message``; commits are merged."""
    events: list[object] = []
    for g in receivers:
        event = g.process(message)
        if isinstance(event, StagedCommit):
            g.merge_staged_commit(event)
        events.append(event)
    return events


def _scenario(seed: bytes) -> dict[str, bytes]:
    """A whole group life on one seed; every output, by name."""
    root = SeededProvider(seed)
    providers = {name: root.child(name.encode()) for name in ("alice", "bob", "carol", "dave")}

    def config(name: str) -> GroupConfig:
        return GroupConfig(provider=providers[name])

    ids = {
        name: SigningIdentity.generate(name.encode(), SUITE, provider=p)
        for name, p in providers.items()
    }
    out: dict[str, bytes] = {}
    bundles = {
        name: create_key_package(ids[name], provider=providers[name]) for name in ("bob", "carol")
    }
    for name, b in bundles.items():
        out[f"key_package/{name}"] = MLSMessage.wrap(b.key_package).encode()

    alice = Group.create(ids["alice"], config=config("alice"))
    out["group_id"] = alice.group_id
    added = alice.add_members([b.key_package for b in bundles.values()])
    alice.merge_pending_commit()
    assert added.welcome is not None and added.group_info is not None
    out["commit/add"] = added.commit
    out["welcome"] = added.welcome
    out["group_info/add"] = added.group_info
    bob = Group.join(added.welcome, bundles["bob"], config=config("bob"))
    carol = Group.join(added.welcome, bundles["carol"], config=config("carol"))

    path = alice.commit(force_path=True)  # an UpdatePath: HPKE encryptions to bob and carol
    alice.merge_pending_commit()
    out["commit/path"] = path.commit
    _deliver([bob, carol], path.commit)

    out["app/alice"] = alice.encrypt_application(b"hello", b"aad")
    out["app/bob"] = bob.encrypt_application(b"hi alice")
    assert _deliver([bob, carol], out["app/alice"])[0] == ApplicationMessage(
        alice.member_at(0), b"hello", b"aad", alice.epoch
    )
    _deliver([alice, carol], out["app/bob"])

    # Proposals: an Update (fresh leaf key) and an external PSK (a random nonce).
    for g in (alice, bob, carol):
        g.add_external_psk(b"psk", b"shared secret")
    out["proposal/update"] = bob.propose_update()
    out["proposal/psk"] = alice.propose_external_psk(b"psk")
    assert isinstance(_deliver([alice, carol], out["proposal/update"])[0], ProposalReceived)
    _deliver([bob, carol], out["proposal/psk"])
    covering = carol.commit()
    carol.merge_pending_commit()
    out["commit/proposals"] = covering.commit
    _deliver([alice, bob], covering.commit)

    # An external join by dave from alice's GroupInfo.
    out["group_info/external"] = alice.group_info()
    dave, external = join_external(out["group_info/external"], ids["dave"], config=config("dave"))
    out["commit/external"] = external
    _deliver([alice, bob, carol], external)
    dave.merge_pending_commit()
    out["app/dave"] = dave.encrypt_application(b"I'm in")
    _deliver([alice, bob, carol], out["app/dave"])

    groups = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}
    assert len({g.epoch_authenticator for g in groups.values()}) == 1
    for name, g in groups.items():
        out[f"state/{name}"] = g.to_bytes()
    return out


def test_same_seed_same_bytes() -> None:
    first, second = _scenario(b"seed"), _scenario(b"seed")
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], f"{name} differs between two runs on one seed"


def test_other_seed_other_bytes() -> None:
    first, other = _scenario(b"seed"), _scenario(b"another seed")
    same = [name for name in first if first[name] == other[name]]
    assert not same, f"outputs independent of the seed: {same}"


def test_seeded_run_never_draws_from_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(n: int) -> bytes:
        raise AssertionError(f"the core drew {n} bytes from the system instead of the provider")

    monkeypatch.setattr(os, "urandom", refuse)
    monkeypatch.setattr(secrets, "token_bytes", refuse)
    # The patch is effective: the default provider does draw from os.urandom ...
    with pytest.raises(AssertionError, match="from the system"):
        Group.create(SigningIdentity.generate(b"x", SUITE, provider=SeededProvider(b"x")))
    # ... and a seeded run never does (its determinism catches draws that bypass Python).
    assert _scenario(b"seed") == _scenario(b"seed")


def test_time_comes_from_the_provider() -> None:
    provider = SeededProvider(b"clock", now=SEEDED_EPOCH + 1000)
    identity = SigningIdentity.generate(b"alice", SUITE, provider=provider)
    bundle = create_key_package(identity, provider=provider)
    lifetime = bundle.key_package.leaf_node.lifetime
    assert lifetime is not None and lifetime.not_before == SEEDED_EPOCH + 1000 - CLOCK_SKEW
    group = Group.create(identity, config=GroupConfig(provider=provider))
    leaf = group.tree.leaf(LeafIndex(0))
    assert leaf is not None and leaf.lifetime is not None
    assert leaf.lifetime.not_before == SEEDED_EPOCH + 1000 - CLOCK_SKEW
    assert GroupConfig(provider=provider).now() == SEEDED_EPOCH + 1000
    assert GroupConfig(provider=provider, check_lifetimes=False).now() is None
    # The legacy ``clock`` still overrides the provider's time.
    assert GroupConfig(provider=provider, clock=lambda: 42).now() == 42
    # A KeyPackage from the future (by the group's clock) is refused by a group on time.
    late = GroupConfig(provider=SeededProvider(b"late", now=SEEDED_EPOCH - 10 * CLOCK_SKEW))
    early_group = Group.create(SigningIdentity.generate(b"bob", SUITE), config=late)
    with pytest.raises(ProposalError, match=f"now \\({SEEDED_EPOCH - 10 * CLOCK_SKEW}\\)"):
        early_group.add_members([bundle.key_package])


def test_provider_is_not_stored() -> None:
    provider = SeededProvider(b"stored")
    group = Group.create(
        SigningIdentity.generate(b"alice", SUITE, provider=provider),
        config=GroupConfig(provider=provider),
    )
    data = group.to_bytes()
    assert Group.from_bytes(data).config.provider is DEFAULT_PROVIDER
    again = SeededProvider(b"again")
    assert Group.from_bytes(data, provider=again).config.provider is again
    assert Group.from_bytes(data, provider=again).config == group.config  # compare=False


def test_default_provider_keeps_native_paths() -> None:
    assert DEFAULT_PROVIDER.rng is None  # the crypto layer draws from os.urandom itself

    class Clock(Provider):
        def now(self) -> int:
            return 7

    assert Clock().rng is None
    seeded = SeededProvider(b"s")
    assert seeded.rng is not None and seeded.rng(4) == SeededProvider(b"s").random(4)


# --- External signers -----------------------------------------------------------------------


class HsmSigner:
    """Keeps its Ed25519 key inside a ``cryptography`` key object: the private bytes are
    never exposed, as with an HSM. Counts its signatures."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self.signatures = 0

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        self.signatures += 1
        return self._key.sign(message)


@dataclass
class _Pair:
    signer: HsmSigner
    alice: Group
    bob: Group


def _external_pair() -> _Pair:
    signer = HsmSigner()
    assert isinstance(signer, MessageSigner)
    identity = SigningIdentity.external(SUITE, Credential.basic(b"alice"), signer)
    assert identity.signature_private_key == b""
    assert identity.signature_key == signer.public_key
    assert identity.signing_key is signer
    assert "HsmSigner" not in repr(identity)
    alice = Group.create(identity)
    bob_bundle = create_key_package(SigningIdentity.generate(b"bob", SUITE))
    out = alice.add_members([bob_bundle.key_package])
    alice.merge_pending_commit()
    assert out.welcome is not None
    bob = Group.join(out.welcome, bob_bundle)  # verifies alice's leaf and GroupInfo signatures
    return _Pair(signer, alice, bob)


def test_external_signer_signs_everything() -> None:
    pair = _external_pair()
    signer, alice, bob = pair.signer, pair.alice, pair.bob
    before = signer.signatures
    path = alice.commit(force_path=True)  # leaf node, commit content and GroupInfo
    alice.merge_pending_commit()
    assert signer.signatures >= before + 3
    _deliver([bob], path.commit)
    message = alice.encrypt_application(b"signed by the HSM")
    (event,) = _deliver([bob], message)
    assert isinstance(event, ApplicationMessage) and event.data == b"signed by the HSM"
    assert event.sender.signature_key == signer.public_key
    update = alice.propose_update()
    _deliver([bob], update)
    covering = bob.commit()
    bob.merge_pending_commit()
    _deliver([alice], covering.commit)
    (reply,) = _deliver([alice], bob.encrypt_application(b"ack"))
    assert isinstance(reply, ApplicationMessage) and reply.data == b"ack"
    assert alice.epoch_authenticator == bob.epoch_authenticator


def test_external_signer_state_needs_the_signer() -> None:
    pair = _external_pair()
    signer, alice, bob = pair.signer, pair.alice, pair.bob
    data = alice.to_bytes()
    with pytest.raises(UsageError, match="pass the signer"):
        Group.from_bytes(data)
    with pytest.raises(UsageError, match="public key"):
        Group.from_bytes(data, signer=HsmSigner())
    restored = Group.from_bytes(data, signer=signer)
    assert restored.identity.signature_private_key == b""
    assert restored.identity.signer is signer
    assert restored.to_bytes() == data
    out = restored.commit(force_path=True)
    restored.merge_pending_commit()
    _deliver([bob], out.commit)
    (event,) = _deliver([bob], restored.encrypt_application(b"after reload"))
    assert isinstance(event, ApplicationMessage) and event.data == b"after reload"


def test_joining_with_an_external_signer() -> None:
    alice = Group.create(SigningIdentity.generate(b"alice", SUITE))
    signer = HsmSigner()
    bob_identity = SigningIdentity.external(SUITE, Credential.basic(b"bob"), signer)
    bundle = create_key_package(bob_identity)
    assert bundle.signature_private_key == b"" and bundle.signing_key is signer
    out = alice.add_members([bundle.key_package])
    alice.merge_pending_commit()
    assert out.welcome is not None
    # A bundle that lost its signer (e.g. stored) needs the identity passed again.
    stored = KeyPackageBundle(
        bundle.key_package, bundle.init_private_key, bundle.encryption_private_key, b""
    )
    with pytest.raises(UsageError, match="identity="):
        Group.join(out.welcome, stored)
    bob = Group.join(out.welcome, bundle)  # the bundle carries the signer
    assert bob.identity.signer is signer
    assert Group.join(out.welcome, stored, identity=bob_identity).identity.signer is signer
    commit = bob.commit(force_path=True)
    bob.merge_pending_commit()
    _deliver([alice], commit.commit)
    (event,) = _deliver([alice], bob.encrypt_application(b"from bob's HSM"))
    assert isinstance(event, ApplicationMessage) and event.data == b"from bob's HSM"
