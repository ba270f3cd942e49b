"""One validator: the Delivery Service refuses what every member refuses (issue "One validator").

In a group with PublicMessage handshakes the DS follows the group through
:class:`~mlspy.group.public_group.PublicGroup` and takes its epoch from the commits it accepts.
Each test below builds a handshake message that every member rejects — checked first, on the
members' own state, with the error class a member raises — and submits it to a real DS on
loopback. Were the DS to accept it (HTTP 200: its epoch moves, or the proposal is cached and
fanned out), the group would be wedged: the DS would refuse every honest commit for the old
epoch while every member refuses the forged one. So each test asserts what a user cares about:

* the DS answers the forged message with a 4xx;
* the group's epoch at the DS does not move and nothing is fanned out;
* afterwards the honest members still commit (accepted by the DS, processed by everyone) and
  exchange application messages.

Messages are forged with the group tests' helpers (``tests/group/group_helpers.py``): honest in
every respect but the rule under test, so a DS that enforced every other rule still accepts it.

Two library-level tests (no DS) close the file: a rejected PrivateMessage leaves the member's
serialized state byte-identical, and a Remove of leaf 2^32-1 is refused for what it is.

Out of scope: an external commit with a corrupted confirmation tag into a group open to external
joins — the DS cannot check that tag (``test_ds_attacks`` covers what the DS does about it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest
from ds_helpers import Cluster, Member

from group_helpers import (
    forge_commit,
    forge_key_package,
    forge_proposal,
    make_group,
    reject,
    update_leaf,
)
from mlspy.credentials import CredentialError
from mlspy.crypto import CipherSuite
from mlspy.ds.client import ASCredentialValidator, DSClient, DSConflict, DSRequestError
from mlspy.errors import (
    CommitError,
    ConfirmationTagError,
    CredentialTypeError,
    CryptoError,
    MLSError,
    ProposalError,
    ProposalListError,
    SignatureError,
)
from mlspy.group import (
    Group,
    GroupConfig,
    SigningIdentity,
    StagedCommit,
    create_key_package,
)
from mlspy.group.identity import default_capabilities
from mlspy.messages import (
    Add,
    ContentType,
    Credential,
    CredentialType,
    FramedContent,
    KeyPackage,
    LeafNodeSource,
    Lifetime,
    MLSMessage,
    Proposal,
    Remove,
    Sender,
    Update,
    WireFormat,
)
from mlspy.protection import authenticate, protect_private_message
from mlspy.tree.math import LeafIndex
from mlspy.tree.validation import MAX_LEAF_LIFETIME

# A credential type no RFC defines and mlspy's default capabilities do not list (§5.3, §7.2).
CUSTOM_CREDENTIAL = 0xF00D
# The largest uint32 (a leaf index no tree of this size has; also mlspy's "nobody" sentinel).
LEAF_MAX = 0xFFFFFFFF

MemberConfig = Callable[[DSClient], GroupConfig]


# --- Members on the DS -------------------------------------------------------------------------


def join_ds(url: str, name: str, identity: SigningIdentity | None = None) -> Member:
    """A client registered and logged in at the DS, with two KeyPackages uploaded (like
    ``Member.new``, but with an identity of the test's choosing)."""
    identity = identity or SigningIdentity.generate(name.encode())
    client = DSClient(url, identity)
    client.register()
    client.login()
    m = Member(name, client, identity)
    m.bundles = [create_key_package(identity) for _ in range(2)]
    client.upload_key_packages(m.bundles)
    return m


@dataclass
class Trio:
    """Alice (leaf 0), bob (leaf 1) and carol (leaf 2) in one group at the DS, in sync."""

    alice: Member
    bob: Member
    carol: Member

    @property
    def members(self) -> list[Member]:
        return [self.alice, self.bob, self.carol]

    @property
    def group_id(self) -> bytes:
        return group_of(self.alice).group_id

    def others(self, sender: Member) -> list[Member]:
        return [m for m in self.members if m is not sender]


def group_of(m: Member) -> Group:
    assert m.group is not None, f"{m.name} is in no group"
    return m.group


def trio(
    url: str,
    *,
    bob: SigningIdentity | None = None,
    config: MemberConfig | None = None,
) -> Trio:
    """Alice creates a PublicMessage-handshake group at the DS and adds bob and carol in one
    commit; each member's ``GroupConfig`` is ``config(its DS client)`` (default: defaults)."""
    t = Trio(join_ds(url, "alice"), join_ds(url, "bob", bob), join_ds(url, "carol"))
    make = config or (lambda _: GroupConfig())
    t.alice.group = Group.create(t.alice.identity, config=make(t.alice.client))
    t.alice.client.create_group(t.alice.group.group_info())
    t.alice.add(t.bob, t.carol)
    for m in (t.bob, t.carol):
        items = m.client.fetch()
        assert [i["kind"] for i in items] == ["welcome"], items
        m.group = Group.join(items[0]["data"], m.bundles, config=make(m.client))
        m.last_seq = items[-1]["seq"]
        m.client.ack([i["seq"] for i in items])
    assert [int(group_of(m).own_leaf_index) for m in t.members] == [0, 1, 2]
    assert len({group_of(m).epoch_authenticator for m in t.members}) == 1
    return t


class Acting:
    """``group`` as ``forge_commit`` sees it, but with ``identity`` as the committer's new
    leaf (credential, signature key pair, capabilities): its UpdatePath is built for that leaf
    from the start and the leaf is signed with that identity's key, so everything but the rule
    under test is honest. Pass ``signature_private_key`` to ``forge_commit`` to sign the
    framing with the committer's current key.

    ``forge_commit`` reads the committer's identity as ``_identity``. Should it ever read it
    elsewhere, the forged commit would be an honest one and :func:`members_reject` (which every
    test runs first) would fail with "DID NOT RAISE" — loudly, never a silent pass."""

    def __init__(self, group: Group, identity: SigningIdentity) -> None:
        self._group = group
        self._identity = identity

    @property
    def identity(self) -> SigningIdentity:
        return self._identity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group, name)


def acting(group: Group, identity: SigningIdentity) -> Group:
    return cast(Group, Acting(group, identity))


# --- What the members and the DS say -----------------------------------------------------------


def members_reject(
    receivers: list[Member], message: bytes, error: type[MLSError], match: str | None = None
) -> None:
    """The precondition of every DS test: each receiver refuses ``message`` with ``error`` and
    its state is byte-for-byte what it was."""
    for m in receivers:
        g = group_of(m)
        before = g.to_bytes()
        with pytest.raises(error, match=match):
            g.process(message)
        assert g.to_bytes() == before, f"{m.name}'s state changed on a rejected message"


def refused(sender: Member, group_id: bytes, message: bytes) -> DSRequestError:
    """Submit ``message``; the DS must answer with a 4xx."""
    try:
        seq = sender.client.submit(group_id, message)
    except DSRequestError as exc:
        assert 400 <= exc.status < 500, f"the DS failed instead of refusing: {exc}"
        return exc
    pytest.fail(f"the DS accepted (seq {seq}) a message every member rejects")


def ds_epoch(t: Trio, asker: Member) -> int:
    """The group's epoch at the DS, read from the 409 it answers to a (validly signed)
    proposal for a far-future epoch — which it neither processes nor queues."""
    probe = forge_proposal(
        group_of(asker),
        Proposal(Remove(0)),
        tweak_content=lambda fc: replace(fc, epoch=2**62),
    )
    with pytest.raises(DSConflict) as info:
        asker.client.submit(t.group_id, probe)
    epoch = info.value.epoch
    assert epoch is not None, info.value.body
    return epoch


def nothing_fanned_out(t: Trio) -> None:
    for m in t.members:
        assert m.client.fetch(m.last_seq) == [], f"the DS queued something for {m.name}"


def still_works(t: Trio, committer: Member) -> None:
    """The group is not wedged: ``committer`` commits an update (path), the DS accepts it at
    the epoch the members are in, everyone processes it into the same epoch, and application
    messages flow every way."""
    g = group_of(committer)
    epoch = g.epoch
    out = g.commit(force_path=True, include_pending=False)
    committer.client.submit(t.group_id, out.commit, group_info=out.group_info)
    g.merge_pending_commit()
    for m in t.others(committer):
        events = m.sync()
        assert any(isinstance(e, StagedCommit) for e in events), (m.name, events)
    assert {group_of(m).epoch for m in t.members} == {epoch + 1}
    assert len({group_of(m).epoch_authenticator for m in t.members}) == 1
    assert ds_epoch(t, committer) == epoch + 1
    for m in t.members:
        m.send(f"hello from {m.name}".encode())
    for m in t.members:
        m.sync()
        expected = {f"hello from {o.name}".encode() for o in t.others(m)}
        assert expected <= set(m.received), (m.name, m.received)


def check_attack(t: Trio, attacker: Member, message: bytes) -> None:
    """The attack and the properties a user cares about: refused, the epoch at the DS
    unchanged, nothing queued, the group still working."""
    epoch = group_of(t.alice).epoch
    assert ds_epoch(t, t.alice) == epoch
    error = refused(attacker, t.group_id, message)
    assert ds_epoch(t, t.alice) == epoch, f"the DS moved the epoch ({error})"
    nothing_fanned_out(t)
    still_works(t, t.alice)


# --- 1. A committer's path leaf with a credential type the others do not support (§7.3) -------


def test_a_path_leaf_credential_type_the_members_do_not_support(ds: Cluster) -> None:
    """Bob (who lists a custom credential type in his capabilities) commits with a path whose
    LeafNode carries a credential of that type — correctly signed, with his own keys. Alice
    and carol only support basic and X.509: every credential type in use must be supported by
    every member (§7.3), so they raise ``CredentialTypeError``. The DS must refuse it too."""
    caps = default_capabilities(
        credentials=(CredentialType.basic, CredentialType.x509, CUSTOM_CREDENTIAL)
    )
    t = trio(ds.url, bob=SigningIdentity.generate(b"bob", capabilities=caps))
    bob = group_of(t.bob)
    custom = replace(bob.identity, credential=Credential.custom(CUSTOM_CREDENTIAL, b"bob"))
    message = forge_commit(acting(bob, custom), path=True)
    members_reject([t.alice, t.carol], message, CredentialTypeError, "credential type")
    check_attack(t, t.bob, message)


# --- 2. A committer's path leaf the members refuse: another's key, the AS (§7.3, §12.4.2) -----


def _as_validator(client: DSClient) -> GroupConfig:
    return GroupConfig(credential_validator=ASCredentialValidator(client))


@pytest.mark.parametrize("case", ["signature_key_of_another_member", "credential_refused_by_as"])
def test_a_path_leaf_the_members_refuse(ds: Cluster, case: str) -> None:
    """Bob commits with a path LeafNode (signed by the leaf's own key, as §7.3 demands) that
    the members refuse:

    * ``signature_key_of_another_member``: the new leaf takes carol's signature key (bob signs
      the leaf with carol's private key and the framing with his own): a signature key must be
      unique in the tree (§7.3) — ``CommitError``.
    * ``credential_refused_by_as``: the new leaf claims carol's basic identity with bob's
      key. The members ask the Authentication Service — this DS, which binds ``carol`` to
      carol's key (``ASCredentialValidator``) — and raise ``CredentialError`` (§5.3.1). The
      DS *is* that AS: it knows the binding and must not accept the impersonation either.
    """
    with_as = case == "credential_refused_by_as"
    t = trio(ds.url, config=_as_validator if with_as else None)
    bob, carol = group_of(t.bob), group_of(t.carol)
    if with_as:
        new = replace(bob.identity, credential=Credential.basic(b"carol"))
        error: type[MLSError] = CredentialError
        match = "another signature key"
    else:
        new = replace(
            bob.identity,
            signature_key=carol.identity.signature_key,
            signature_private_key=carol.identity.signature_private_key,
        )
        error, match = CommitError, "signature key belongs to another member"
    message = forge_commit(
        acting(bob, new), path=True, signature_private_key=bob.identity.signature_private_key
    )
    members_reject([t.alice, t.carol], message, error, match)
    check_attack(t, t.bob, message)


# --- 3. Standalone proposals the members refuse on receipt (§12.1) ----------------------------


def _bad_proposal(t: Trio, case: str) -> Proposal:
    bob, carol = group_of(t.bob), group_of(t.carol)
    stranger = SigningIdentity.generate(b"dave")
    kp: KeyPackage | None = None
    if case == "remove_blank_leaf":
        assert bob.tree.n_leaves > 3 and bob.tree.leaf(LeafIndex(3)) is None
        return Proposal(Remove(3))
    if case == "remove_absent_leaf":
        return Proposal(Remove(1000))
    if case == "add_wrong_cipher_suite":
        kp = forge_key_package(
            stranger, cipher_suite=CipherSuite.MLS_128_DHKEMP256_AES128GCM_SHA256_P256
        )
    elif case == "add_bad_key_package_signature":
        good = create_key_package(stranger).key_package
        kp = replace(good, signature=bytes(len(good.signature)))
    elif case == "add_expired":
        kp = forge_key_package(stranger, leaf_changes={"lifetime": Lifetime(0, 1)})
    elif case == "add_leaf_node_source_not_key_package":
        kp = forge_key_package(
            stranger, leaf_changes={"leaf_node_source": LeafNodeSource.update, "lifetime": None}
        )
    elif case == "add_signature_key_in_the_group":
        kp = create_key_package(carol.identity).key_package
    elif case == "update_unchanged_encryption_key":
        own = bob.tree.leaf(bob.own_leaf_index)
        assert own is not None
        return Proposal(Update(update_leaf(bob, encryption_key=own.encryption_key)))
    elif case == "update_signature_key_of_another_member":
        leaf = update_leaf(
            bob,
            signature_key=carol.identity.signature_key,
            signature_private_key=carol.identity.signature_private_key,
        )
        return Proposal(Update(leaf))
    else:
        raise AssertionError(case)
    assert kp is not None
    return Proposal(Add(kp))


# case -> (the error class a member raises on receipt, what its message says)
PROPOSAL_CASES: dict[str, tuple[type[MLSError], str]] = {
    "remove_blank_leaf": (ProposalError, "blank or absent"),
    "remove_absent_leaf": (ProposalError, "blank or absent"),
    "add_wrong_cipher_suite": (ProposalError, "cipher suite"),
    "add_bad_key_package_signature": (ProposalError, "KeyPackage signature"),
    "add_expired": (ProposalError, "outside"),
    "add_leaf_node_source_not_key_package": (ProposalError, "leaf_node_source"),
    "add_signature_key_in_the_group": (ProposalListError, "already in the group"),
    "update_unchanged_encryption_key": (ProposalError, "must change the encryption key"),
    "update_signature_key_of_another_member": (
        ProposalError,
        "signature key belongs to another member",
    ),
}


@pytest.mark.parametrize("case", list(PROPOSAL_CASES))
def test_a_proposal_the_members_refuse_is_neither_cached_nor_fanned_out(
    ds: Cluster, case: str
) -> None:
    """Bob sends, as a PublicMessage signed and MACed for the epoch, a proposal every member
    refuses on receipt (§12.1): a Remove of a blank or absent leaf (§12.1.3), an Add whose
    KeyPackage fails §10.1 or is of a client already in the group (§12.1.1), an Update whose
    LeafNode fails §7.3 / §12.1.2. The DS must refuse it and not fan it out."""
    t = trio(ds.url)
    error, match = PROPOSAL_CASES[case]
    message = forge_proposal(group_of(t.bob), _bad_proposal(t, case))
    members_reject([t.alice, t.carol], message, error, match)
    check_attack(t, t.bob, message)


# --- 4. Leaf lifetimes in a commit: too long, expired (§7.2, §10.1) ----------------------------


@pytest.mark.parametrize("case", ["longer_than_the_maximum", "expired"])
def test_a_commit_adding_a_key_package_with_a_bad_lifetime(ds: Cluster, case: str) -> None:
    """Bob commits an Add (by value) of a correctly signed KeyPackage whose lifetime the
    members refuse: longer than the library's maximum total lifetime (``MAX_LEAF_LIFETIME``,
    §7.2 — it needs no clock), or over already (§7.3). Members raise ``ProposalError``; the
    DS, which has a clock, must refuse it too."""
    t = trio(ds.url)
    now = int(time.time())
    if case == "expired":
        lifetime = Lifetime(now - 7 * 24 * 3600, now - 24 * 3600)
    else:
        lifetime = Lifetime(now - 60, now - 60 + MAX_LEAF_LIFETIME + 24 * 3600)
    kp = forge_key_package(SigningIdentity.generate(b"dave"), leaf_changes={"lifetime": lifetime})
    message = forge_commit(group_of(t.bob), [Proposal(Add(kp))])
    match = "outside" if case == "expired" else "exceeds the maximum"
    members_reject([t.alice, t.carol], message, ProposalError, match)
    check_attack(t, t.bob, message)


# --- 6. Library: a rejected PrivateMessage changes nothing, to the byte ---------------------------

ENCRYPTED = GroupConfig(handshake_wire_format=WireFormat.mls_private_message)


def _internals(group: Group) -> tuple[Any, Any]:
    """The suite and current epoch state of ``group``, wherever this version keeps the epoch
    (``Group.state.epoch``; before the refactoring, ``Group._epoch``)."""
    state = getattr(group, "state", None)
    epoch = state.epoch if state is not None else group._epoch
    return group.cipher_suite, epoch


def _private(sender: Group, fc: FramedContent, signature_private_key: bytes) -> bytes:
    """``fc`` from ``sender`` as a PrivateMessage, signed with ``signature_private_key``,
    encrypted with a copy of the sender's secret tree (its own ratchet stays put)."""
    cs, epoch = _internals(sender)
    ac = authenticate(cs, signature_private_key, WireFormat.mls_private_message, fc, epoch.context)
    secret_tree = copy.deepcopy(epoch.secret_tree, {id(cs): cs})
    pm = protect_private_message(cs, ac, secret_tree, epoch.secrets.sender_data_secret)
    return MLSMessage.wrap(pm).encode()


def _content(sender: Group, content_type: ContentType, **body: Any) -> FramedContent:
    return FramedContent(
        sender.group_id,
        sender.epoch,
        Sender.member(sender.own_leaf_index),
        b"",
        content_type,
        **body,
    )


def _flip_ciphertext(message: bytes) -> bytes:
    pm = MLSMessage.decode(message).private_message
    assert pm is not None
    ct = bytearray(pm.ciphertext)
    ct[len(ct) // 2] ^= 0x01
    return MLSMessage.wrap(replace(pm, ciphertext=bytes(ct))).encode()


def _bad_private_message(case: str, sender: Group, other: Group) -> bytes:
    if case == "application_corrupted_ciphertext":
        return _flip_ciphertext(sender.encrypt_application(b"tampered"))
    if case == "application_signed_by_another_member":
        fc = _content(sender, ContentType.application, application_data=b"forged")
        return _private(sender, fc, other.identity.signature_private_key)
    if case == "proposal_signed_by_another_member":
        fc = _content(sender, ContentType.proposal, proposal=Proposal(Remove(other.own_leaf_index)))
        return _private(sender, fc, other.identity.signature_private_key)
    if case == "proposal_remove_of_a_blank_leaf":
        fc = _content(sender, ContentType.proposal, proposal=Proposal(Remove(3)))
        return _private(sender, fc, sender.identity.signature_private_key)
    if case == "commit_signed_by_another_member":
        return forge_commit(
            sender,
            wire_format=WireFormat.mls_private_message,
            signature_private_key=other.identity.signature_private_key,
        )
    if case == "commit_corrupted_confirmation_tag":
        return forge_commit(
            sender, wire_format=WireFormat.mls_private_message, confirmation_tag=bytes(32)
        )
    raise AssertionError(case)


# case -> the error class the receiver raises
PRIVATE_CASES: dict[str, type[MLSError]] = {
    "application_corrupted_ciphertext": CryptoError,
    "application_signed_by_another_member": SignatureError,
    "proposal_signed_by_another_member": SignatureError,
    "proposal_remove_of_a_blank_leaf": ProposalError,
    "commit_signed_by_another_member": SignatureError,
    "commit_corrupted_confirmation_tag": ConfirmationTagError,
}


@pytest.mark.parametrize("case", list(PRIVATE_CASES))
def test_a_rejected_private_message_leaves_the_state_byte_identical(case: str) -> None:
    """A failed ``process`` leaves the group exactly as it was (DESIGN.md): after a rejected
    PrivateMessage (application data, or a handshake in a group with encrypted handshakes) —
    corrupted ciphertext, a wrong signature, a broken rule found only after decryption —
    ``to_bytes()`` is byte-identical to before. The forged application messages come two
    generations ahead of what the receiver has seen (a receiver that ratchets forward before
    authenticating would keep the skipped keys); the forged ones reuse the generation the
    sender's next honest message takes, which must still decrypt."""
    alice, bob, carol = make_group(3, config=ENCRYPTED)
    bob.process(alice.encrypt_application(b"warm up"))  # a ratchet that has moved before
    unseen = [alice.encrypt_application(b"lost") for _ in range(2)]
    assert bob.to_bytes() == bob.to_bytes()  # serialization is deterministic
    before = bob.to_bytes()
    with pytest.raises(PRIVATE_CASES[case]):
        bob.process(_bad_private_message(case, alice, carol))
    assert bob.to_bytes() == before, "a rejected PrivateMessage changed the receiver's state"
    got = bob.process(alice.encrypt_application(b"honest"))
    assert getattr(got, "data", None) == b"honest"
    assert [getattr(bob.process(m), "data", None) for m in unseen] == [b"lost", b"lost"]


# --- 7. Library: Remove(2^32 - 1) is a Remove of an absent leaf ---------------------------------


@pytest.mark.parametrize("how", ["by_value_in_a_commit", "as_a_proposal"])
def test_a_remove_of_leaf_uint32_max_is_refused_as_absent(how: str) -> None:
    """Leaf 4294967295 is absent from any tree a group can have. A commit (or a proposal)
    removing it breaks §12.1.3 — the removed leaf must be a member — and must be reported as
    such (``ProposalError``, "blank or absent leaf"), not as "a commit may not remove the
    committer": mlspy's placeholder committer for proposals checked on receipt is that very
    index."""
    groups = make_group(3)
    bob, carol = groups[1], groups[2]
    remove = Proposal(Remove(LEAF_MAX))
    message = forge_proposal(bob, remove) if how == "as_a_proposal" else forge_commit(bob, [remove])
    error = reject(carol, message, ProposalError, "blank or absent")
    assert "may not remove the committer" not in str(error)
