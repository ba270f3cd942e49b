"""X.509 credentials and the CredentialValidator hook (RFC 9420 §5.3, §5.3.1)."""

from __future__ import annotations

import pytest

from group_helpers import (
    assert_recovers,
    forge_proposal,
    make_group,
    reject,
    update_leaf,
)
from mlspy.credentials import CredentialError, X509Validator
from mlspy.errors import CredentialTypeError
from mlspy.group import (
    Group,
    GroupConfig,
    SigningIdentity,
    create_key_package,
)
from mlspy.messages import Add, Credential, Proposal, Update
from parity import raises_exactly
from x509_helpers import make_ca, x509_identity


def test_x509_chain_accepted_and_identity() -> None:
    ca_key, ca = make_ca()
    ident = x509_identity(ca_key, ca, "alice@example.org")
    assert X509Validator([ca]).identity(ident.credential, ident.signature_key) == (
        b"alice@example.org"
    )


def test_x509_rejections() -> None:
    ca_key, ca = make_ca()
    validator = X509Validator([ca])
    ident = x509_identity(ca_key, ca, "a@example.org")
    with raises_exactly(CredentialError, "not the MLS signature key"):
        validator.validate(ident.credential, SigningIdentity.generate(b"x").signature_key)
    other_key, other_ca = make_ca()
    with raises_exactly(CredentialError, "chain rejected"):
        X509Validator([other_ca]).validate(ident.credential, ident.signature_key)
    expired = x509_identity(ca_key, ca, "b@example.org", days=-1)
    with raises_exactly(CredentialError, "chain rejected"):
        validator.validate(expired.credential, expired.signature_key)
    no_sign = x509_identity(ca_key, ca, "c@example.org", signing=False)
    with raises_exactly(CredentialError):
        validator.validate(no_sign.credential, no_sign.signature_key)
    with raises_exactly(CredentialError, "basic"):
        validator.validate(Credential.basic(b"bob"), ident.signature_key)
    assert other_key is not None

    # In a group of X.509 members validating with this CA, an Update to the expired
    # certificate is refused by the member and by its public view (the Delivery Service's).
    ids = [x509_identity(ca_key, ca, f"m{i}@example.org") for i in range(4)]
    groups = make_group(identities=ids, config=GroupConfig(credential_validator=validator))
    carol, dave = groups[2], groups[3]
    leaf = update_leaf(
        dave,
        credential=expired.credential,
        signature_key=expired.signature_key,
        signature_private_key=expired.signature_private_key,
    )
    reject(carol, forge_proposal(dave, Proposal(Update(leaf))), CredentialError, "chain rejected")
    assert_recovers(groups, carol)


def test_groups_ask_the_validator_on_join_and_add() -> None:
    ca_key, ca = make_ca()
    config = GroupConfig(credential_validator=X509Validator([ca]))
    alice = Group.create(x509_identity(ca_key, ca, "alice@example.org"), config=config)
    bob = x509_identity(ca_key, ca, "bob@example.org")
    kp = create_key_package(bob)
    out = alice.commit([Proposal(Add(kp.key_package))])
    alice.merge_pending_commit()
    joined = Group.join(out.welcome or b"", kp, config=config)
    assert joined.epoch_authenticator == alice.epoch_authenticator
    # A basic-credential member is refused by this policy, at commit creation.
    eve = create_key_package(SigningIdentity.generate(b"eve"))
    with pytest.raises((CredentialError, CredentialTypeError)):
        alice.commit([Proposal(Add(eve.key_package))])
    # And a joiner whose tree holds an unknown CA's member refuses to join.
    other_ca_key, other_ca = make_ca()
    strict = GroupConfig(credential_validator=X509Validator([other_ca]))
    kp2 = create_key_package(x509_identity(ca_key, ca, "carol@example.org"))
    out = alice.commit([Proposal(Add(kp2.key_package))])
    alice.merge_pending_commit()
    with raises_exactly(CredentialError, "chain rejected"):
        Group.join(out.welcome or b"", kp2, config=strict)
    assert other_ca_key is not None
