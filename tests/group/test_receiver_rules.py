"""Receiver-side rules of RFC 9420 that the other negative tests do not break: Welcome and
GroupInfo tampering (§12.4.3, §12.4.3.1), framing and message protection (§6 to §6.3), the
secret tree (§9), external commits and proposals (§12.4.3.2, §12.1.8), PSKs in Welcome messages
(§8.4), reinitialization and branching (§11.2, §11.3), leaf-node rules that depend on the
group's extensions or on the Authentication Service (§7.3, §5.3.1), and codec rules seen
through ``Group.process`` (§2.1). ``docs/validation.md`` catalogues every rule and names its
test.

Every forged message is honest in everything but the rule under test: a tampered Welcome is
re-encrypted under the right keys, its GroupInfo re-signed by the committer and given the
confirmation tag the joiner would compute; a forged PrivateMessage is encrypted under the
sender's real ratchet key (from a copy of its secret tree). A receiver that did not enforce the
rule would therefore accept the message. For a member receiving a message, each test checks
the exact error class and that the member's state (epoch, epoch authenticator, exported secret,
tree hash, GroupContext, cached proposals) did not change; for a joiner, that the genuine
Welcome still works with the same KeyPackage afterwards.

Rules mlspy does not enforce are tested anyway and marked ``xfail(strict=True)``.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pytest

from group_helpers import (
    PSK_ID,
    PSK_VALUE,
    assert_recovers,
    commit_and_deliver,
    deliver,
    forge_commit,
    forge_external_commit,
    forge_key_package,
    forge_proposal,
    make_group,
    new_kp,
    reject,
    reject_any,
    resign_leaf,
    snapshot,
    update_leaf,
)
from mlspy.credentials import CredentialError
from mlspy.crypto import CipherSuiteProvider, suite
from mlspy.errors import (
    CapabilitiesError,
    CommitError,
    ContentTypeError,
    CryptoError,
    DecodeError,
    EpochError,
    ExternalCommitError,
    ExternalProposalError,
    FramingError,
    GroupInfoError,
    LifetimeError,
    MembershipTagError,
    MLSError,
    PaddingError,
    ProposalError,
    ProtocolVersionError,
    PskError,
    RequiredCapabilitiesError,
    SecretTreeError,
    SenderError,
    SignatureError,
    TreeError,
    TreeHashError,
    UnmergedLeafError,
    WelcomeError,
)
from mlspy.group import (
    ApplicationMessage,
    Group,
    GroupConfig,
    KeyPackageBundle,
    SigningIdentity,
    StagedCommit,
    branch,
    check_successor,
    create_key_package,
    default_capabilities,
    external_proposal,
    join_external,
    key_package_ref,
    new_member_add_proposal,
    reinit_successor,
)
from mlspy.group.welcome import sign_group_info
from mlspy.messages import (
    Add,
    ApplicationId,
    ContentType,
    Credential,
    EncryptedGroupSecrets,
    Extension,
    ExternalInit,
    ExternalSender,
    ExternalSenders,
    FramedContent,
    GroupContextExtensions,
    GroupInfo,
    GroupSecrets,
    HPKECiphertext,
    KeyPackage,
    Lifetime,
    MLSMessage,
    Node,
    PathSecret,
    PreSharedKey,
    PreSharedKeyID,
    PrivateMessage,
    PrivateMessageContent,
    Proposal,
    PublicMessage,
    RatchetTree,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Sender,
    SenderData,
    SenderType,
    Update,
    UpdatePath,
    Welcome,
    WireFormat,
    decode_ratchet_tree,
    encode_ratchet_tree,
    private_content_aad,
    sender_data_aad,
)
from mlspy.protection import authenticate, protect_public_message
from mlspy.schedule.key_schedule import (
    compute_welcome_secret,
    epoch_from_joiner,
    welcome_key_nonce,
)
from mlspy.schedule.psk import compute_psk_secret
from mlspy.schedule.secret_tree import RatchetType, sender_data_key_nonce
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree as Tree
from parity import raises_exactly

ALICE, BOB, CAROL, DAVE = 0, 1, 2, 3
CUSTOM_EXTENSION = 0xF0F0
WELCOME_LABEL = "Welcome"


# --- Checks --------------------------------------------------------------------------------------


def reject_join(
    welcome: bytes,
    bundle: KeyPackageBundle,
    error: type[MLSError],
    match: str | None = None,
    *,
    genuine: bytes | None = None,
    **join: object,
) -> None:
    """``Group.join`` raises exactly ``error``; then, if given, the ``genuine`` Welcome still
    joins with the same KeyPackage (the failed attempt consumed nothing)."""
    with raises_exactly(error, match):
        Group.join(welcome, bundle, **join)  # type: ignore[arg-type]
    if genuine is not None:
        joined = Group.join(genuine, bundle, **join)  # type: ignore[arg-type]
        assert joined.epoch >= 1


def application_flows(sender: Group, receiver: Group) -> None:
    """The sender's next genuine application message (its ratchet never moved for a forged
    one) still decrypts at the receiver."""
    got = receiver.process(sender.encrypt_application(b"genuine"))
    assert isinstance(got, ApplicationMessage) and got.data == b"genuine"


class Deny:
    """An Authentication Service that refuses the basic credentials of some identities."""

    def __init__(self, *identities: bytes) -> None:
        self.identities = set(identities)

    def validate(self, credential: Credential, signature_key: bytes) -> None:
        if credential.identity in self.identities:
            raise CredentialError(f"the AS refuses {credential.identity!r}")


# --- Forging Welcome messages --------------------------------------------------------------------


PskValue = Callable[[PreSharedKeyID], bytes]


def _psk_secret(
    cs: CipherSuiteProvider, psks: Sequence[PreSharedKeyID], value: PskValue
) -> bytes | None:
    if not psks:
        return None
    return compute_psk_secret(cs, [(p.encode(), value(p)) for p in psks])


def _zero_psk(_: PreSharedKeyID) -> bytes:
    return bytes(32)


@dataclass(frozen=True)
class OpenWelcome:
    """A Welcome decrypted with one new member's init key."""

    cs: CipherSuiteProvider
    welcome: Welcome
    group_secrets: GroupSecrets
    group_info: GroupInfo


def open_welcome(
    welcome: bytes, bundle: KeyPackageBundle, psk: PskValue = _zero_psk
) -> OpenWelcome:
    w = MLSMessage.decode(welcome).welcome
    assert w is not None
    cs = suite(w.cipher_suite)
    entry = next(s for s in w.secrets if s.new_member == bundle.ref())
    gs = GroupSecrets.decode(
        cs.decrypt_with_label(
            bundle.init_private_key,
            WELCOME_LABEL,
            w.encrypted_group_info,
            entry.encrypted_group_secrets.kem_output,
            entry.encrypted_group_secrets.ciphertext,
        )
    )
    welcome_secret = compute_welcome_secret(cs, gs.joiner_secret, _psk_secret(cs, gs.psks, psk))
    key, nonce = welcome_key_nonce(cs, welcome_secret)
    gi = GroupInfo.decode(cs.aead_open(key, nonce, b"", w.encrypted_group_info))
    return OpenWelcome(cs, w, gs, gi)


def rewelcome(
    welcome: bytes,
    bundle: KeyPackageBundle,
    signer_key: bytes,
    *,
    group_info: Callable[[GroupInfo], GroupInfo] | None = None,
    group_secrets: Callable[[GroupSecrets], GroupSecrets] | None = None,
    psk: PskValue = _zero_psk,
    fix_tag: bool = True,
    reseal: bool = True,
    to: KeyPackage | None = None,
    cipher_suite: int | None = None,
) -> bytes:
    """Re-issue the Welcome ``bundle`` can open, with its GroupInfo and GroupSecrets edited.

    The edited GroupInfo gets the confirmation tag a joiner computes from the (edited) joiner
    secret, PSKs and GroupContext (unless ``fix_tag`` is false), is re-signed with
    ``signer_key`` and re-encrypted under the (edited) welcome key — unless ``reseal`` is
    false, which keeps the original ``encrypted_group_info``. The GroupSecrets are encrypted to
    ``to`` (default: the bundle's KeyPackage); ``cipher_suite`` overrides the Welcome's field.
    """
    opened = open_welcome(welcome, bundle, psk)
    cs = opened.cs
    gs = group_secrets(opened.group_secrets) if group_secrets else opened.group_secrets
    gi = group_info(opened.group_info) if group_info else opened.group_info
    encrypted_group_info = opened.welcome.encrypted_group_info
    if reseal:
        psk_secret = _psk_secret(cs, gs.psks, psk)
        tag = gi.confirmation_tag
        if fix_tag:
            secrets = epoch_from_joiner(cs, gs.joiner_secret, psk_secret, gi.group_context.encode())
            tag = cs.mac(secrets.confirmation_key, gi.group_context.confirmed_transcript_hash)
        gi = sign_group_info(
            cs, signer_key, gi.group_context, gi.extensions, tag, LeafIndex(gi.signer)
        )
        key, nonce = welcome_key_nonce(cs, compute_welcome_secret(cs, gs.joiner_secret, psk_secret))
        encrypted_group_info = cs.aead_seal(key, nonce, b"", gi.encode())
    target = to if to is not None else bundle.key_package
    kem_output, ciphertext = cs.encrypt_with_label(
        target.init_key, WELCOME_LABEL, encrypted_group_info, gs.encode()
    )
    entry = EncryptedGroupSecrets(key_package_ref(target), HPKECiphertext(kem_output, ciphertext))
    suite_id = opened.welcome.cipher_suite if cipher_suite is None else cipher_suite
    return MLSMessage.wrap(Welcome(suite_id, (entry,), encrypted_group_info)).encode()


def with_tree(
    cs: CipherSuiteProvider, edit: Callable[[list[Node | None]], None]
) -> Callable[[GroupInfo], GroupInfo]:
    """A GroupInfo edit: change the nodes of its ``ratchet_tree`` extension and set the
    GroupContext's tree hash to the edited tree's, so that only the edited rule breaks."""

    def change(gi: GroupInfo) -> GroupInfo:
        ext = RatchetTree.find_in(gi.extensions)
        assert ext is not None
        nodes = list(ext.ratchet_tree)
        edit(nodes)
        tree_hash = Tree.from_nodes(cs, nodes).tree_hash()
        exts = tuple(
            RatchetTree(tuple(nodes)).to_extension()
            if e.extension_type == RatchetTree.extension_type
            else e
            for e in gi.extensions
        )
        ctx = replace(gi.group_context, tree_hash=tree_hash)
        return replace(gi, group_context=ctx, extensions=exts)

    return change


def context_change(**changes: object) -> Callable[[GroupInfo], GroupInfo]:
    return lambda gi: replace(gi, group_context=replace(gi.group_context, **changes))  # type: ignore[arg-type]


@dataclass
class Welcomed:
    """A group (by default alice, bob, carol at leaves 0-2) whose member alice committed an Add
    of dave (the next leaf) with a path: the Welcome carries a path secret and the ratchet tree."""

    groups: list[Group]
    welcome: bytes
    bundle: KeyPackageBundle

    @property
    def alice(self) -> Group:
        return self.groups[ALICE]

    @property
    def signer_key(self) -> bytes:
        return self.alice.identity.signature_private_key


def welcomed(n: int = 3, *, path: bool = True, tree_in_welcome: bool = True) -> Welcomed:
    groups = make_group(n)
    bundle = create_key_package(SigningIdentity.generate(b"dave"))
    out = groups[ALICE].commit(
        [Proposal(Add(bundle.key_package))],
        force_path=path,
        ratchet_tree_in_welcome=tree_in_welcome,
    )
    groups[ALICE].merge_pending_commit()
    deliver(groups, out.commit, sender=groups[ALICE])
    assert out.welcome is not None
    return Welcomed(groups, out.welcome, bundle)


# --- Forging PrivateMessages ---------------------------------------------------------------------


def _guarded(nonce: bytes, guard: bytes) -> bytes:
    head = int.from_bytes(nonce[:4], "big") ^ int.from_bytes(guard, "big")
    return head.to_bytes(4, "big") + nonce[4:]


def seal_private(
    sender: Group,
    content: FramedContent,
    *,
    signer: bytes | None = None,
    padding: int = 0,
    plaintext: Callable[[bytes], bytes] | None = None,
    ciphertext: Callable[[bytes], bytes] | None = None,
    sender_leaf: int | None = None,
    generation: int | None = None,
    ratchet_leaf: int | None = None,
) -> bytes:
    """A PrivateMessage of ``content`` encrypted under the next key of the ratchet of
    ``ratchet_leaf`` (default: the content's sender) in a *copy* of ``sender``'s secret tree,
    exactly as ``protect_private_message`` does, with optional edits: the plaintext before
    encryption, the ciphertext after, and the SenderData's leaf index and generation."""
    cs = sender.cipher_suite
    epoch = sender.state.epoch
    key = signer or sender.identity.signature_private_key
    tag = b"\x00" * cs.nh if content.content_type == ContentType.commit else None
    ac = authenticate(cs, key, WireFormat.mls_private_message, content, epoch.context, tag)
    tree = copy.deepcopy(epoch.secret_tree, {id(cs): cs})
    leaf = LeafIndex(ratchet_leaf if ratchet_leaf is not None else content.sender.leaf_index or 0)
    kind = (
        RatchetType.APPLICATION
        if content.content_type == ContentType.application
        else RatchetType.HANDSHAKE
    )
    rk = tree.next_key(leaf, kind)
    body = PrivateMessageContent.from_authenticated_content(ac, padding).encode()
    if plaintext is not None:
        body = plaintext(body)
    guard = os.urandom(4)
    aad = private_content_aad(
        content.group_id, content.epoch, content.content_type, content.authenticated_data
    )
    ct = cs.aead_seal(rk.key, _guarded(rk.nonce, guard), aad, body)
    if ciphertext is not None:
        ct = ciphertext(ct)
    sd = SenderData(
        leaf if sender_leaf is None else sender_leaf,
        rk.generation if generation is None else generation,
        guard,
    )
    sd_key, sd_nonce = sender_data_key_nonce(cs, epoch.secrets.sender_data_secret, ct)
    sd_aad = sender_data_aad(content.group_id, content.epoch, content.content_type)
    encrypted_sender_data = cs.aead_seal(sd_key, sd_nonce, sd_aad, sd.encode())
    pm = PrivateMessage(
        content.group_id,
        content.epoch,
        content.content_type,
        content.authenticated_data,
        encrypted_sender_data,
        ct,
    )
    return MLSMessage.wrap(pm).encode()


def app_content(group: Group, data: bytes = b"forged", **changes: object) -> FramedContent:
    """Application content from ``group``'s member for its current epoch, then ``changes``."""
    fc = FramedContent(
        group.group_id,
        group.epoch,
        Sender.member(group.own_leaf_index),
        b"",
        ContentType.application,
        application_data=data,
    )
    return replace(fc, **changes)  # type: ignore[arg-type]


def proposal_content(group: Group, proposal: Proposal, **changes: object) -> FramedContent:
    """Proposal content from ``group``'s member for its current epoch, then ``changes``."""
    fc = FramedContent(
        group.group_id,
        group.epoch,
        Sender.member(group.own_leaf_index),
        b"",
        ContentType.proposal,
        proposal=proposal,
    )
    return replace(fc, **changes)  # type: ignore[arg-type]


def public(
    group: Group,
    content: FramedContent,
    signer: bytes,
    *,
    member_tag: bool = True,
) -> bytes:
    """Sign ``content`` as a PublicMessage (with a real membership tag for member senders)."""
    cs = group.cipher_suite
    epoch = group.state.epoch
    member = content.sender.sender_type == SenderType.member
    signs_context = member or content.sender.sender_type == SenderType.new_member_commit
    context = epoch.context if signs_context else None
    ac = authenticate(cs, signer, WireFormat.mls_public_message, content, context)
    key = epoch.secrets.membership_key if member and member_tag else None
    return MLSMessage.wrap(protect_public_message(cs, ac, context, key)).encode()


def flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


# --- §12.4.3, §12.4.3.1: Welcome and GroupInfo ---------------------------------------------------


class TestWelcome:
    """RFC 9420 §12.4.3.1 "Joining via Welcome Message": a joiner finds its entry, decrypts the
    GroupSecrets and GroupInfo, verifies the GroupInfo's signature by a non-blank ``signer``,
    checks cipher suite and version against its KeyPackage, validates the tree, finds its own
    leaf, installs the path secret (which must derive the tree's public keys) and verifies the
    confirmation tag."""

    def test_no_entry_for_our_key_package(self) -> None:
        w = welcomed()
        other = create_key_package(SigningIdentity.generate(b"eve"))
        reject_join(w.welcome, other, WelcomeError, "no entry")
        assert Group.join(w.welcome, w.bundle).epoch_authenticator == w.alice.epoch_authenticator

    def test_welcome_cipher_suite_is_not_our_key_packages(self) -> None:
        w = welcomed()
        forged = rewelcome(w.welcome, w.bundle, w.signer_key, cipher_suite=3)
        reject_join(forged, w.bundle, WelcomeError, "no entry", genuine=w.welcome)

    def test_welcome_cipher_suite_unsupported(self) -> None:
        w = welcomed()
        forged = rewelcome(w.welcome, w.bundle, w.signer_key, cipher_suite=0x0A0A)
        reject_join(forged, w.bundle, WelcomeError, "0x0a0a", genuine=w.welcome)

    def test_group_secrets_do_not_decrypt(self) -> None:
        w = welcomed()
        welcome = MLSMessage.decode(w.welcome).welcome
        assert welcome is not None
        entry = welcome.secrets[0]
        broken = replace(
            entry.encrypted_group_secrets,
            ciphertext=flip_last(entry.encrypted_group_secrets.ciphertext),
        )
        forged = replace(welcome, secrets=(replace(entry, encrypted_group_secrets=broken),))
        reject_join(
            MLSMessage.wrap(forged).encode(),
            w.bundle,
            WelcomeError,
            "cannot decrypt our GroupSecrets",
            genuine=w.welcome,
        )

    def test_group_info_does_not_decrypt(self) -> None:
        """A joiner secret that does not match the one the GroupInfo was sealed with."""
        w = welcomed()
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_secrets=lambda gs: replace(gs, joiner_secret=os.urandom(32)),
            reseal=False,
        )
        reject_join(
            forged, w.bundle, WelcomeError, "cannot decrypt the GroupInfo", genuine=w.welcome
        )

    def test_group_info_signature_does_not_verify(self) -> None:
        w = welcomed()
        impostor = SigningIdentity.generate(b"impostor").signature_private_key
        forged = rewelcome(w.welcome, w.bundle, impostor)
        reject_join(forged, w.bundle, GroupInfoError, "does not verify", genuine=w.welcome)

    @pytest.mark.parametrize("signer", [17, 6], ids=["outside_tree", "blank_leaf"])
    def test_group_info_signer_is_not_a_member(self, signer: int) -> None:
        """Five members and dave fill leaves 0-5 of an 8-leaf tree: leaf 6 is blank, leaf 17
        does not exist."""
        w = welcomed(5)
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_info=lambda gi: replace(gi, signer=signer),
        )
        reject_join(forged, w.bundle, GroupInfoError, f"signer {signer} is not a member")
        assert Group.join(w.welcome, w.bundle).epoch == w.alice.epoch

    def test_group_info_cipher_suite_is_not_our_key_packages(self) -> None:
        w = welcomed()
        forged = rewelcome(
            w.welcome, w.bundle, w.signer_key, group_info=context_change(cipher_suite=3)
        )
        reject_join(forged, w.bundle, WelcomeError, "cipher suite", genuine=w.welcome)

    def test_group_info_version_is_not_our_key_packages(self) -> None:
        w = welcomed()
        forged = rewelcome(w.welcome, w.bundle, w.signer_key, group_info=context_change(version=2))
        reject_join(forged, w.bundle, WelcomeError, "protocol version", genuine=w.welcome)

    def test_confirmation_tag_does_not_verify(self) -> None:
        w = welcomed()
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_info=lambda gi: replace(gi, confirmation_tag=os.urandom(32)),
            fix_tag=False,
        )
        reject_join(forged, w.bundle, WelcomeError, "confirmation tag", genuine=w.welcome)

    def test_our_leaf_is_not_in_the_tree(self) -> None:
        """The GroupSecrets are addressed to eve's KeyPackage, but the tree holds dave's."""
        w = welcomed()
        eve = create_key_package(SigningIdentity.generate(b"eve"))
        forged = rewelcome(w.welcome, w.bundle, w.signer_key, to=eve.key_package)
        reject_join(forged, eve, WelcomeError, "leaf is not in the tree")

    def test_path_secret_does_not_derive_the_tree_keys(self) -> None:
        w = welcomed()
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_secrets=lambda gs: replace(gs, path_secret=PathSecret(os.urandom(32))),
        )
        reject_join(forged, w.bundle, WelcomeError, "does not derive", genuine=w.welcome)

    def test_path_secret_for_a_blank_common_ancestor(self) -> None:
        w = welcomed(path=False)
        assert open_welcome(w.welcome, w.bundle).group_secrets.path_secret is None
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_secrets=lambda gs: replace(gs, path_secret=PathSecret(os.urandom(32))),
        )
        reject_join(forged, w.bundle, WelcomeError, "common ancestor is blank", genuine=w.welcome)

    def test_group_info_signer_is_ourselves(self) -> None:
        """The joiner's own leaf as ``signer`` (its KeyPackage key signs): a path secret then
        has no common ancestor with the committer."""
        w = welcomed()
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.bundle.signature_private_key,
            group_info=lambda gi: replace(gi, signer=DAVE),
        )
        reject_join(forged, w.bundle, WelcomeError, "signer is ourselves", genuine=w.welcome)

    def test_tree_out_of_band_with_another_tree_hash(self) -> None:
        """The Welcome has no tree; the one provided out of band is the previous epoch's."""
        groups = make_group(3)
        stale = groups[ALICE].export_ratchet_tree()
        bundle = create_key_package(SigningIdentity.generate(b"dave"))
        out = groups[ALICE].commit(
            [Proposal(Add(bundle.key_package))], ratchet_tree_in_welcome=False
        )
        assert out.welcome is not None
        reject_join(out.welcome, bundle, TreeHashError, "tree hash", ratchet_tree=stale)
        joined = Group.join(out.welcome, bundle, ratchet_tree=out.ratchet_tree)
        assert joined.epoch == 2

    def test_ratchet_tree_extension_malformed(self) -> None:
        w = welcomed()

        def garble(gi: GroupInfo) -> GroupInfo:
            exts = tuple(
                Extension(e.extension_type, b"\xff\xff")
                if e.extension_type == RatchetTree.extension_type
                else e
                for e in gi.extensions
            )
            return replace(gi, extensions=exts)

        forged = rewelcome(w.welcome, w.bundle, w.signer_key, group_info=garble)
        reject_join(forged, w.bundle, WelcomeError, "malformed ratchet_tree", genuine=w.welcome)

    def test_ratchet_tree_ends_with_a_blank_node(self) -> None:
        """§12.4.3.3: the last node of a ``ratchet_tree`` must be non-blank."""
        w = welcomed(tree_in_welcome=False)
        nodes = decode_ratchet_tree(w.alice.export_ratchet_tree())
        padded = encode_ratchet_tree((*nodes, None, None))
        reject_join(w.welcome, w.bundle, TreeError, "last node", ratchet_tree=padded)

    def test_ratchet_tree_node_of_the_wrong_type(self) -> None:
        """§12.4.3.3: leaves at even, parents at odd positions."""
        w = welcomed(tree_in_welcome=False)
        nodes = list(decode_ratchet_tree(w.alice.export_ratchet_tree()))
        leaf = nodes[0]
        assert leaf is not None and leaf.leaf_node is not None
        nodes[1] = Node.leaf(leaf.leaf_node)
        bad = encode_ratchet_tree(tuple(nodes))
        reject_join(w.welcome, w.bundle, TreeError, "must be a parent node", ratchet_tree=bad)

    def test_intermediate_node_does_not_list_an_unmerged_leaf(self) -> None:
        """§12.4.3.1, §7.1: every non-blank node between an unmerged leaf and the parent that
        lists it lists it too. Leaf 4's path set nodes 9, 11, 7; the newcomer at leaf 7 is
        unmerged at 11 and 7 (13 is blank); the forged tree drops it from node 11."""
        groups = make_group(7)
        committer = groups[4]
        commit_and_deliver(groups, committer, force_path=True)
        bundle = create_key_package(SigningIdentity.generate(b"newcomer"))
        out = committer.commit([Proposal(Add(bundle.key_package))])
        assert out.welcome is not None
        tree = Tree.from_nodes(committer.cipher_suite, decode_ratchet_tree(out.ratchet_tree))
        eleven, root = tree.parent(NodeIndex(11)), tree.parent(NodeIndex(7))
        assert eleven is not None and eleven.unmerged_leaves == (7,)
        assert root is not None and root.unmerged_leaves == (7,)

        def drop(nodes: list[Node | None]) -> None:
            node = nodes[11]
            assert node is not None and node.parent_node is not None
            nodes[11] = Node.parent(replace(node.parent_node, unmerged_leaves=()))

        forged = rewelcome(
            out.welcome,
            bundle,
            committer.identity.signature_private_key,
            group_info=with_tree(committer.cipher_suite, drop),
        )
        reject_join(
            forged, bundle, UnmergedLeafError, "node 11 .* does not list", genuine=out.welcome
        )

    def test_leaf_lifetime_expired_at_join(self) -> None:
        """§7.3: the joiner checks the lifetime of every key_package leaf of the tree."""
        w = welcomed()
        later = GroupConfig(clock=lambda: 2**40)
        reject_join(w.welcome, w.bundle, LifetimeError, "outside", config=later)
        assert Group.join(w.welcome, w.bundle).epoch == w.alice.epoch

    def test_group_context_extension_the_joiner_does_not_support(self) -> None:
        w = welcomed()
        ext = Extension(CUSTOM_EXTENSION, b"")
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_info=lambda gi: replace(
                gi,
                group_context=replace(
                    gi.group_context, extensions=(*gi.group_context.extensions, ext)
                ),
            ),
        )
        reject_join(forged, w.bundle, RequiredCapabilitiesError)

    def test_required_capabilities_no_leaf_supports(self) -> None:
        w = welcomed()
        required = RequiredCapabilities((CUSTOM_EXTENSION,), (), ()).to_extension()
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_info=lambda gi: replace(
                gi,
                group_context=replace(
                    gi.group_context, extensions=(*gi.group_context.extensions, required)
                ),
            ),
        )
        reject_join(forged, w.bundle, CapabilitiesError)


# --- §6, §6.1, §6.2, §6.3: framing and message protection ----------------------------------------


class TestFraming:
    """RFC 9420 §6 (MLSMessage version, wire format), §6.1 (sender types and their content
    types), §6.2 (membership tag, no application data in a PublicMessage), §6.3 (group and
    epoch of a PrivateMessage, AEAD, zero padding, the signature inside), §6.3.2 (sender data
    decrypts and names a non-blank leaf of the tree)."""

    def test_mls_message_version_not_mls10(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = bob.propose_remove(DAVE)
        reject_any(carol, b"\x00\x02" + message[2:], ProtocolVersionError, "not mls10")
        assert_recovers(groups, carol)

    def test_key_package_given_to_process(self, groups: list[Group]) -> None:
        carol = groups[CAROL]
        kp = create_key_package(SigningIdentity.generate(b"kp")).key_package
        reject_any(carol, MLSMessage.wrap(kp).encode(), FramingError, "not a group message")
        assert_recovers(groups, carol)

    def test_welcome_given_to_process(self, groups: list[Group]) -> None:
        alice, carol = groups[ALICE], groups[CAROL]
        out = alice.commit([new_kp()])
        alice.clear_pending_commit()
        assert out.welcome is not None
        reject_any(carol, out.welcome, FramingError, "mls_welcome")
        assert_recovers(groups, carol)

    def test_membership_tag_missing(self, groups: list[Group]) -> None:
        """A member's PublicMessage without its membership tag does not even decode."""
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_proposal(bob, Proposal(Remove(DAVE)))
        pm = MLSMessage.decode(message).public_message
        assert pm is not None and pm.membership_tag is not None
        truncated = message[: -(1 + len(pm.membership_tag))]
        reject_any(carol, truncated, DecodeError, "truncated")
        assert_recovers(groups, carol)

    def test_proposal_membership_tag_wrong(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        pm = MLSMessage.decode(forge_proposal(bob, Proposal(Remove(DAVE)))).public_message
        assert pm is not None and pm.membership_tag is not None
        forged = replace(pm, membership_tag=flip_last(pm.membership_tag))
        reject_any(
            carol,
            MLSMessage.wrap(forged).encode(),
            MembershipTagError,
            "does not verify",
            member_only=True,
        )
        assert_recovers(groups, carol)

    def test_application_data_in_a_public_message(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        cs, epoch = bob.cipher_suite, bob.state.epoch
        fc = app_content(bob)
        ac = authenticate(
            cs, bob.identity.signature_private_key, WireFormat.mls_public_message, fc, epoch.context
        )
        unsigned = PublicMessage(fc, ac.auth, b"")
        tag = cs.mac(epoch.secrets.membership_key, unsigned.tbm(epoch.context))
        message = MLSMessage.wrap(replace(unsigned, membership_tag=tag)).encode()
        reject_any(carol, message, ContentTypeError, "application data")
        assert_recovers(groups, carol)

    def test_private_message_for_another_group(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = seal_private(bob, app_content(bob, group_id=os.urandom(32)))
        reject_any(carol, message, EpochError, "another group")
        application_flows(bob, carol)

    @pytest.mark.parametrize("delta", [1, -1], ids=["future", "past"])
    def test_private_handshake_for_another_epoch(self, groups: list[Group], delta: int) -> None:
        """A past epoch's keys are kept for application messages only (§6.3, §15.3)."""
        bob, carol = groups[BOB], groups[CAROL]
        if delta < 0:
            commit_and_deliver(groups, groups[ALICE])
        content = proposal_content(bob, Proposal(Remove(DAVE)), epoch=bob.epoch + delta)
        reject_any(carol, seal_private(bob, content), EpochError, "epoch")
        application_flows(bob, carol)

    def test_content_ciphertext_tampered(self, groups: list[Group]) -> None:
        """The AEAD tag at the end of the ciphertext is flipped; the sample the sender-data
        key derives from (its first KDF.Nh bytes) is not."""
        bob, carol = groups[BOB], groups[CAROL]
        message = seal_private(bob, app_content(bob, data=b"x" * 64), ciphertext=flip_last)
        reject_any(carol, message, CryptoError)
        application_flows(bob, carol)

    def test_sender_data_tampered(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        pm = MLSMessage.decode(seal_private(bob, app_content(bob))).private_message
        assert pm is not None
        forged = replace(pm, encrypted_sender_data=flip_last(pm.encrypted_sender_data))
        reject_any(carol, MLSMessage.wrap(forged).encode(), CryptoError)
        application_flows(bob, carol)

    @pytest.mark.parametrize("position", [-1, -8])
    def test_nonzero_padding(self, groups: list[Group], position: int) -> None:
        bob, carol = groups[BOB], groups[CAROL]

        def dirty(plaintext: bytes) -> bytes:
            data = bytearray(plaintext)
            data[position] = 0x01
            return bytes(data)

        message = seal_private(bob, app_content(bob), padding=8, plaintext=dirty)
        reject_any(carol, message, PaddingError, "nonzero padding")
        application_flows(bob, carol)

    def test_zero_padding_is_accepted(self, groups: list[Group]) -> None:
        """Control for the test above: the same message with zero padding decrypts."""
        bob, carol = groups[BOB], groups[CAROL]
        got = carol.process(seal_private(bob, app_content(bob), padding=8))
        assert isinstance(got, ApplicationMessage) and got.data == b"forged"

    def test_private_message_signed_by_another_member(self, groups: list[Group]) -> None:
        bob, carol, alice = groups[BOB], groups[CAROL], groups[ALICE]
        message = seal_private(bob, app_content(bob), signer=alice.identity.signature_private_key)
        reject_any(carol, message, SignatureError, "does not verify")
        application_flows(bob, carol)

    def test_sender_data_names_a_blank_leaf(self, groups: list[Group]) -> None:
        """Dave was removed; his leaf is blank but still inside the (4-leaf) secret tree, so
        his ratchet yields a key and only the blank-leaf check can reject the message."""
        alice, bob, carol, dave = groups[ALICE], groups[BOB], groups[CAROL], groups[DAVE]
        commit_and_deliver(groups, alice, [Proposal(Remove(DAVE))])
        assert carol.tree.n_leaves == 4 and carol.tree.leaf(LeafIndex(DAVE)) is None
        content = app_content(bob, sender=Sender.member(DAVE))
        message = seal_private(bob, content, signer=dave.identity.signature_private_key)
        reject_any(carol, message, SenderError, "sender leaf 3 is not a member")
        application_flows(bob, carol)

    def test_sender_data_names_a_leaf_outside_the_tree(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = seal_private(bob, app_content(bob), sender_leaf=99)
        reject_any(carol, message, SenderError, "outside the group")
        application_flows(bob, carol)

    def test_new_member_commit_sender_sending_a_proposal(self, groups: list[Group]) -> None:
        """§6.1: a ``new_member_commit`` sender may only send a Commit."""
        carol = groups[CAROL]
        joiner = SigningIdentity.generate(b"joiner")
        content = proposal_content(carol, Proposal(Remove(DAVE)), sender=Sender.new_member_commit())
        message = public(carol, content, joiner.signature_private_key)
        reject_any(carol, message, CommitError, "may only send commits")
        assert_recovers(groups, carol)


# --- §9: the secret tree -------------------------------------------------------------------------


class TestSecretTree:
    """RFC 9420 §9 and §15.3: every ratchet key is used once (a replayed message is rejected),
    and a generation too far ahead of the ratchet is refused before any derivation."""

    def test_replayed_application_message(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = bob.encrypt_application(b"once")
        assert isinstance(carol.process(message), ApplicationMessage)
        reject_any(carol, message, SecretTreeError, "already used")
        application_flows(bob, carol)

    def test_replayed_out_of_order_message(self, groups: list[Group]) -> None:
        """A late message decrypts once from the retained keys, then never again."""
        bob, carol = groups[BOB], groups[CAROL]
        first, second = bob.encrypt_application(b"1"), bob.encrypt_application(b"2")
        carol.process(second)
        carol.process(first)
        reject_any(carol, first, SecretTreeError, "already used")
        reject_any(carol, second, SecretTreeError, "already used")
        application_flows(bob, carol)

    def test_generation_too_far_ahead(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        window = carol.config.max_forward_distance
        message = seal_private(bob, app_content(bob), generation=window + 1)
        reject_any(carol, message, SecretTreeError, "ahead")
        application_flows(bob, carol)

    def test_generation_at_the_edge_of_the_window_is_accepted(self) -> None:
        """Control: the window is exact (a message at ``max_forward_distance`` decrypts when
        encrypted under that generation's key)."""
        groups = make_group(3, config=GroupConfig(max_forward_distance=4))
        bob, carol = groups[BOB], groups[CAROL]
        for _ in range(4):
            bob.encrypt_application(b"skipped")
        got = carol.process(bob.encrypt_application(b"fifth"))
        assert isinstance(got, ApplicationMessage) and got.data == b"fifth"


# --- §12.1.8: external proposals and senders -----------------------------------------------------


@dataclass
class DeliveryService:
    identity: SigningIdentity

    @property
    def extension(self) -> Extension:
        sender = ExternalSender(self.identity.signature_key, Credential.basic(b"ds"))
        return ExternalSenders((sender,)).to_extension()


@pytest.fixture
def ds() -> DeliveryService:
    return DeliveryService(SigningIdentity.generate(b"ds"))


@pytest.fixture
def ds_groups(ds: DeliveryService) -> list[Group]:
    return make_group(4, extensions=(ds.extension,))


class TestExternalProposals:
    """RFC 9420 §12.1.8 and §6.1: an ``external`` sender must be listed in the group's
    ``external_senders`` extension at ``sender_index`` and sign with that key, and may propose
    only add, remove, psk, reinit and group_context_extensions; a ``new_member_proposal`` is
    an Add of the sender's own KeyPackage, signed with its leaf key."""

    def test_control_external_remove_is_accepted(
        self, ds_groups: list[Group], ds: DeliveryService
    ) -> None:
        carol = ds_groups[CAROL]
        message = external_proposal(
            carol.group_info(), Proposal(Remove(DAVE)), ds.identity.signature_private_key, 0
        )
        assert carol.process(message).sender == Sender.external(0)

    def test_group_without_external_senders(self, groups: list[Group], ds: DeliveryService) -> None:
        carol = groups[CAROL]
        message = external_proposal(
            carol.group_info(), Proposal(Remove(DAVE)), ds.identity.signature_private_key, 0
        )
        reject(carol, message, ExternalProposalError, "no external sender at index 0")
        assert_recovers(groups, carol)

    def test_sender_index_beyond_the_list(
        self, ds_groups: list[Group], ds: DeliveryService
    ) -> None:
        carol = ds_groups[CAROL]
        message = external_proposal(
            carol.group_info(), Proposal(Remove(DAVE)), ds.identity.signature_private_key, 1
        )
        reject(carol, message, ExternalProposalError, "no external sender at index 1")
        assert_recovers(ds_groups, carol)

    def test_signed_by_another_key(self, ds_groups: list[Group]) -> None:
        carol = ds_groups[CAROL]
        other = SigningIdentity.generate(b"not the ds").signature_private_key
        message = external_proposal(carol.group_info(), Proposal(Remove(DAVE)), other, 0)
        reject(carol, message, SignatureError, "does not verify")
        assert_recovers(ds_groups, carol)

    @pytest.mark.parametrize("kind", ["update", "external_init"])
    def test_proposal_type_not_allowed_for_external_senders(
        self, ds_groups: list[Group], ds: DeliveryService, kind: str
    ) -> None:
        carol, dave = ds_groups[CAROL], ds_groups[DAVE]
        proposal = (
            Proposal(Update(update_leaf(dave)))
            if kind == "update"
            else Proposal(ExternalInit(os.urandom(32)))
        )
        message = external_proposal(
            carol.group_info(), proposal, ds.identity.signature_private_key, 0
        )
        reject(carol, message, ProposalError, "external sender may not propose")
        assert_recovers(ds_groups, carol)

    def test_external_proposal_for_another_epoch(
        self, ds_groups: list[Group], ds: DeliveryService
    ) -> None:
        carol = ds_groups[CAROL]
        stale = carol.group_info()
        commit_and_deliver(ds_groups, ds_groups[ALICE])
        message = external_proposal(
            stale, Proposal(Remove(DAVE)), ds.identity.signature_private_key, 0
        )
        reject(carol, message, EpochError, "epoch")
        assert_recovers(ds_groups, carol)

    def test_malformed_external_senders_in_the_group(self, ds: DeliveryService) -> None:
        groups = make_group(3, extensions=(Extension(ExternalSenders.extension_type, b"\xff"),))
        carol = groups[CAROL]
        message = external_proposal(
            carol.group_info(), Proposal(Remove(BOB)), ds.identity.signature_private_key, 0
        )
        reject(carol, message, ExternalProposalError, "malformed external_senders")
        assert_recovers(groups, carol)

    def test_new_member_proposal_that_is_not_an_add(self, groups: list[Group]) -> None:
        carol = groups[CAROL]
        stranger = SigningIdentity.generate(b"stranger")
        content = proposal_content(
            carol, Proposal(Remove(DAVE)), sender=Sender.new_member_proposal()
        )
        message = public(carol, content, stranger.signature_private_key)
        reject(carol, message, ExternalProposalError, "must be an Add")
        assert_recovers(groups, carol)

    def test_new_member_proposal_not_signed_by_its_key_package(self, groups: list[Group]) -> None:
        carol = groups[CAROL]
        kp = create_key_package(SigningIdentity.generate(b"eve")).key_package
        other = SigningIdentity.generate(b"mallory").signature_private_key
        message = new_member_add_proposal(carol.group_id, carol.epoch, kp, other)
        reject(carol, message, SignatureError, "does not verify")
        assert_recovers(groups, carol)

    def test_new_member_proposal_with_an_invalid_key_package(self, groups: list[Group]) -> None:
        carol = groups[CAROL]
        eve = SigningIdentity.generate(b"eve")
        kp = forge_key_package(eve, leaf_changes={"lifetime": Lifetime(0, 1)})
        message = new_member_add_proposal(
            carol.group_id, carol.epoch, kp, eve.signature_private_key
        )
        reject(carol, message, ProposalError, "invalid KeyPackage in add")
        assert_recovers(groups, carol)

    def test_gce_with_malformed_external_senders(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        gce = GroupContextExtensions((Extension(ExternalSenders.extension_type, b"\xff"),))
        reject(
            carol, forge_commit(bob, [Proposal(gce)]), ProposalError, "malformed external_senders"
        )
        assert_recovers(groups, carol)

    def test_external_sender_credential_checked_with_the_as(self) -> None:
        config = GroupConfig(credential_validator=Deny(b"mallory"))
        groups = make_group(4, config=config)
        bob, carol = groups[BOB], groups[CAROL]
        mallory = SigningIdentity.generate(b"mallory")
        sender = ExternalSender(mallory.signature_key, Credential.basic(b"mallory"))
        gce = GroupContextExtensions((ExternalSenders((sender,)).to_extension(),))
        reject(carol, forge_commit(bob, [Proposal(gce)]), CredentialError)


# --- §12.4.3.2: external commits -----------------------------------------------------------------


class TestExternalJoin:
    """RFC 9420 §12.4.3.2 from both sides: the joiner needs a GroupInfo with ``external_pub``,
    verifies its signature and the tree (hash, §12.4.3.1); members run the joiner's path leaf
    through the Authentication Service, and a resync Remove must remove the joiner's own
    earlier appearance (§12.2)."""

    def test_group_info_without_external_pub(self, groups: list[Group]) -> None:
        alice = groups[ALICE]
        gi = alice.group_info(external_pub=False)
        with raises_exactly(ExternalCommitError, "external_pub"):
            join_external(gi, SigningIdentity.generate(b"joiner"))

    def test_group_info_signature_does_not_verify(self, groups: list[Group]) -> None:
        gi = MLSMessage.decode(groups[ALICE].group_info()).group_info
        assert gi is not None
        forged = replace(gi, signature=flip_last(gi.signature))
        with raises_exactly(GroupInfoError, "does not verify"):
            join_external(forged, SigningIdentity.generate(b"joiner"))

    def test_tree_out_of_band_with_another_tree_hash(self, groups: list[Group]) -> None:
        alice = groups[ALICE]
        stale = alice.export_ratchet_tree()
        commit_and_deliver(groups, alice)
        gi = alice.group_info(with_ratchet_tree=False)
        with raises_exactly(TreeHashError, "tree hash"):
            join_external(gi, SigningIdentity.generate(b"joiner"), ratchet_tree=stale)
        group, _ = join_external(
            gi, SigningIdentity.generate(b"joiner"), ratchet_tree=alice.export_ratchet_tree()
        )
        group.merge_pending_commit()
        assert group.epoch == alice.epoch + 1

    def test_joiner_credential_refused_by_the_as(self) -> None:
        groups = make_group(4, config=GroupConfig(credential_validator=Deny(b"mallory")))
        carol = groups[CAROL]
        message = forge_external_commit(carol, SigningIdentity.generate(b"mallory"))
        reject(carol, message, CredentialError, "refuses")
        assert_recovers(groups, carol)

    def test_resync_removing_someone_else(self, groups: list[Group]) -> None:
        carol = groups[CAROL]
        stranger = SigningIdentity.generate(b"stranger")
        message = forge_external_commit(carol, stranger, extra=[Proposal(Remove(DAVE))])
        reject(carol, message, ExternalCommitError)

    def test_resync_of_oneself_is_accepted(self, groups: list[Group]) -> None:
        """Control for the test above: dave rejoins and removes his old leaf."""
        alice, carol, dave = groups[ALICE], groups[CAROL], groups[DAVE]
        _, message = join_external(alice.group_info(), dave.identity, remove_prior=DAVE)
        staged = carol.process(message)
        assert isinstance(staged, StagedCommit) and staged.removed_leaves == [DAVE]


# --- §7.3, §5.3.1: leaf nodes against the group's extensions and the AS --------------------------


def _required_custom_group() -> list[Group]:
    """Four members supporting the custom extension, which the group requires (§11.1)."""
    caps = default_capabilities(extensions=(0x000A, CUSTOM_EXTENSION))
    ids = [SigningIdentity.generate(f"m{i}".encode(), capabilities=caps) for i in range(4)]
    required = RequiredCapabilities((CUSTOM_EXTENSION,), (), ()).to_extension()
    return make_group(identities=ids, extensions=(required,))


class TestLeafNodeAgainstTheGroup:
    """RFC 9420 §7.3: a new or changed LeafNode (Add, Update, the committer's path leaf) must
    list the GroupContext's required capabilities, and its credential must be validated with
    the Authentication Service (§5.3.1). Applications must bound a LeafNode's total lifetime;
    a list of extensions has at most one of each type (§13.4)."""

    def test_add_lacking_a_required_capability(self) -> None:
        groups = _required_custom_group()
        bob, carol = groups[BOB], groups[CAROL]
        kp = create_key_package(SigningIdentity.generate(b"plain")).key_package
        reject(carol, forge_commit(bob, [Proposal(Add(kp))]), RequiredCapabilitiesError)
        assert_recovers(groups, carol)

    def test_update_lacking_a_required_capability(self) -> None:
        groups = _required_custom_group()
        carol, dave = groups[CAROL], groups[DAVE]
        leaf = update_leaf(dave, capabilities=default_capabilities())
        reject(carol, forge_proposal(dave, Proposal(Update(leaf))), RequiredCapabilitiesError)
        assert_recovers(groups, carol)

    def test_committer_leaf_lacking_a_required_capability(self) -> None:
        groups = _required_custom_group()
        bob, carol = groups[BOB], groups[CAROL]

        def drop(path: UpdatePath) -> UpdatePath:
            leaf = replace(path.leaf_node, capabilities=default_capabilities())
            signed = resign_leaf(bob, leaf, bob.identity.signature_private_key, BOB)
            return replace(path, leaf_node=signed)

        reject(carol, forge_commit(bob, tweak_path=drop), RequiredCapabilitiesError)
        assert_recovers(groups, carol)

    def test_add_after_a_gce_in_the_same_commit(self) -> None:
        """§12.3: the new extensions apply to the Adds of the same commit. Every member
        supports the custom extension; the newcomer does not."""
        caps = default_capabilities(extensions=(0x000A, CUSTOM_EXTENSION))
        ids = [SigningIdentity.generate(f"m{i}".encode(), capabilities=caps) for i in range(4)]
        groups = make_group(identities=ids)
        bob, carol = groups[BOB], groups[CAROL]
        required = RequiredCapabilities((CUSTOM_EXTENSION,), (), ()).to_extension()
        gce = Proposal(GroupContextExtensions((required,)))
        reject(carol, forge_commit(bob, [gce, new_kp()]), RequiredCapabilitiesError)
        staged = carol.process(forge_commit(bob, [gce]))
        assert isinstance(staged, StagedCommit)

    def test_gce_with_an_extension_a_member_does_not_support(self, groups: list[Group]) -> None:
        """§13.4: every GroupContext extension must be supported by every member."""
        bob, carol = groups[BOB], groups[CAROL]
        gce = Proposal(GroupContextExtensions((Extension(CUSTOM_EXTENSION, b""),)))
        reject(carol, forge_commit(bob, [gce]), RequiredCapabilitiesError, "does not support")
        assert_recovers(groups, carol)

    def test_gce_with_malformed_required_capabilities(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        bad = Extension(RequiredCapabilities.extension_type, b"\xff")
        message = forge_commit(bob, [Proposal(GroupContextExtensions((bad,)))])
        reject(carol, message, ProposalError, "malformed required_capabilities")
        assert_recovers(groups, carol)

    def test_added_credential_refused_by_the_as(self) -> None:
        groups = make_group(4, config=GroupConfig(credential_validator=Deny(b"mallory")))
        bob, carol = groups[BOB], groups[CAROL]
        kp = create_key_package(SigningIdentity.generate(b"mallory")).key_package
        reject(carol, forge_commit(bob, [Proposal(Add(kp))]), CredentialError, "refuses")
        assert_recovers(groups, carol)

    def test_updated_credential_refused_by_the_as(self) -> None:
        groups = make_group(4, config=GroupConfig(credential_validator=Deny(b"mallory")))
        carol, dave = groups[CAROL], groups[DAVE]
        leaf = update_leaf(dave, credential=Credential.basic(b"mallory"))
        reject(carol, forge_proposal(dave, Proposal(Update(leaf))), CredentialError, "refuses")
        assert_recovers(groups, carol)

    def test_committer_credential_refused_by_the_as(self) -> None:
        groups = make_group(4, config=GroupConfig(credential_validator=Deny(b"mallory")))
        bob, carol = groups[BOB], groups[CAROL]

        def swap(path: UpdatePath) -> UpdatePath:
            leaf = replace(path.leaf_node, credential=Credential.basic(b"mallory"))
            signed = resign_leaf(bob, leaf, bob.identity.signature_private_key, BOB)
            return replace(path, leaf_node=signed)

        reject(carol, forge_commit(bob, tweak_path=swap), CredentialError, "refuses")
        assert_recovers(groups, carol)

    def test_key_package_lifetime_longer_than_any_maximum(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        forever = Lifetime(0, 2**64 - 1)
        kp = forge_key_package(
            SigningIdentity.generate(b"forever"), leaf_changes={"lifetime": forever}
        )
        reject(carol, forge_commit(bob, [Proposal(Add(kp))]), ProposalError, "lifetime")

    def test_key_package_lifetime_just_over_five_years(self, groups: list[Group]) -> None:
        # mlspy's application maximum (§7.2) is five years; one second more is refused, and
        # the limit itself is accepted.
        bob, carol = groups[BOB], groups[CAROL]
        five_years = 5 * 365 * 24 * 3600
        start = int(time.time()) - 60
        over = forge_key_package(
            SigningIdentity.generate(b"over"),
            leaf_changes={"lifetime": Lifetime(start, start + five_years + 1)},
        )
        reject(carol, forge_commit(bob, [Proposal(Add(over))]), ProposalError, "lifetime")
        at_limit = forge_key_package(
            SigningIdentity.generate(b"limit"),
            leaf_changes={"lifetime": Lifetime(start, start + five_years)},
        )
        epoch = carol.epoch
        staged = carol.process(forge_commit(bob, [Proposal(Add(at_limit))]))
        assert isinstance(staged, StagedCommit)
        carol.merge_staged_commit(staged)
        assert carol.epoch == epoch + 1

    def test_leaf_extensions_with_a_repeated_type(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        twice = (ApplicationId(b"a").to_extension(), ApplicationId(b"b").to_extension())
        kp = forge_key_package(
            SigningIdentity.generate(b"twice"), leaf_changes={"extensions": twice}
        )
        reject(carol, forge_commit(bob, [Proposal(Add(kp))]), ProposalError)

    def test_update_leaf_without_its_own_credential_type(self, groups: list[Group]) -> None:
        """§7.2: a LeafNode lists its own credential type in ``capabilities.credentials``."""
        carol, dave = groups[CAROL], groups[DAVE]
        leaf = update_leaf(dave, capabilities=default_capabilities(credentials=(2,)))
        message = forge_proposal(dave, Proposal(Update(leaf)))
        reject(carol, message, ProposalError, "credential type 1 is not in its capabilities")
        assert_recovers(groups, carol)


# --- §10.1, §12.1: KeyPackages and single proposals ----------------------------------------------


class TestProposalReceipt:
    """RFC 9420 §12.1: a proposal is verified (signature, epoch) on receipt; an ExternalInit
    is only valid inside an external commit (§12.1.6); a KeyPackage downloaded in an
    MLSMessage must be for mls10 like the MLSMessage (§10)."""

    def test_proposal_for_another_epoch(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_proposal(
            bob, Proposal(Remove(DAVE)), tweak_content=lambda fc: replace(fc, epoch=fc.epoch + 1)
        )
        reject(carol, message, EpochError, "epoch")
        assert_recovers(groups, carol)

    def test_proposal_signed_by_another_member(self, groups: list[Group]) -> None:
        alice, bob, carol = groups[ALICE], groups[BOB], groups[CAROL]
        content = proposal_content(bob, Proposal(Remove(DAVE)))
        message = public(bob, content, alice.identity.signature_private_key)
        reject(carol, message, SignatureError, "does not verify")
        assert_recovers(groups, carol)

    def test_external_init_proposal_from_a_member(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        message = forge_proposal(bob, Proposal(ExternalInit(os.urandom(32))))
        reject(carol, message, ProposalError, "external commit only")
        assert_recovers(groups, carol)

    def test_key_package_message_of_another_version(self, groups: list[Group]) -> None:
        bob = groups[BOB]
        kp = create_key_package(SigningIdentity.generate(b"eve")).key_package
        message = MLSMessage.wrap(kp, version=2).encode()
        before = snapshot(bob)
        with raises_exactly(ProtocolVersionError, "not mls10"):
            bob.propose_add(message)
        assert snapshot(bob) == before


# --- §8.4, §11.2, §11.3: PSKs in Welcome messages, reinit and branch -----------------------------


def _psk_welcome() -> tuple[list[Group], bytes, KeyPackageBundle]:
    """Alice adds dave in a commit that injects two external PSKs (ids ``PSK_ID`` and
    ``PSK_ID + b"2"``); every member knows both."""
    groups = make_group(3)
    second = PSK_ID + b"2"
    for g in groups:
        g.add_external_psk(PSK_ID, PSK_VALUE)
        g.add_external_psk(second, PSK_VALUE[::-1])
    bundle = create_key_package(SigningIdentity.generate(b"dave"))
    psks = [
        Proposal(PreSharedKey(PreSharedKeyID.external(pid, os.urandom(32))))
        for pid in (PSK_ID, second)
    ]
    out = groups[ALICE].commit([Proposal(Add(bundle.key_package)), *psks])
    assert out.welcome is not None
    return groups, out.welcome, bundle


PSK_VALUES = {PSK_ID: PSK_VALUE, PSK_ID + b"2": PSK_VALUE[::-1]}


def _resumption(
    usage: ResumptionPSKUsage, epoch: int = 1, group_id: bytes = b"old"
) -> PreSharedKeyID:
    return PreSharedKeyID.resumption(usage, group_id, epoch, os.urandom(32))


class TestWelcomePsks:
    """RFC 9420 §12.4.3.1 and §8.4: every PSK named by the GroupSecrets must be available to
    the joiner, in the order the commit used; at most one is a reinit/branch resumption PSK,
    and then the new group starts at epoch 1 (§11.2, §11.3)."""

    def test_control_psk_welcome_joins(self) -> None:
        groups, welcome, bundle = _psk_welcome()
        joined = Group.join(welcome, bundle, external_psks=PSK_VALUES)
        groups[ALICE].merge_pending_commit()
        assert joined.epoch_authenticator == groups[ALICE].epoch_authenticator

    def test_unknown_external_psk(self) -> None:
        _, welcome, bundle = _psk_welcome()
        reject_join(
            welcome,
            bundle,
            PskError,
            "not available",
            external_psks={PSK_ID: PSK_VALUE},
        )

    def test_unknown_resumption_psk(self) -> None:
        w = welcomed()
        extra = _resumption(ResumptionPSKUsage.application)
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_secrets=lambda gs: replace(gs, psks=(*gs.psks, extra)),
        )
        reject_join(forged, w.bundle, PskError, "not available", genuine=w.welcome)

    def test_psks_in_another_order_than_the_commits(self) -> None:
        """The GroupSecrets list the commit's PSKs reversed: the welcome secret differs."""
        _, welcome, bundle = _psk_welcome()

        def lookup(p: PreSharedKeyID) -> bytes:
            return PSK_VALUES[p.psk_id or b""]

        forged = rewelcome(
            welcome,
            bundle,
            b"",
            group_secrets=lambda gs: replace(gs, psks=gs.psks[::-1]),
            psk=lookup,
            reseal=False,
        )
        reject_join(
            forged,
            bundle,
            WelcomeError,
            "cannot decrypt the GroupInfo",
            genuine=welcome,
            external_psks=PSK_VALUES,
        )

    @pytest.mark.parametrize(
        "usages",
        [
            (ResumptionPSKUsage.reinit, ResumptionPSKUsage.branch),
            (ResumptionPSKUsage.branch, ResumptionPSKUsage.branch),
        ],
        ids=["reinit_and_branch", "two_branch"],
    )
    def test_two_reinit_or_branch_psks(self, usages: tuple[ResumptionPSKUsage, ...]) -> None:
        w = welcomed()
        extra = tuple(_resumption(u, epoch=i) for i, u in enumerate(usages))
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_secrets=lambda gs: replace(gs, psks=(*gs.psks, *extra)),
        )
        resumption = {(b"old", i): bytes(32) for i in range(len(usages))}
        reject_join(
            forged,
            w.bundle,
            WelcomeError,
            "more than one reinit/branch",
            genuine=w.welcome,
            resumption_psks=resumption,
        )

    @pytest.mark.parametrize("usage", [ResumptionPSKUsage.reinit, ResumptionPSKUsage.branch])
    def test_reinit_or_branch_welcome_not_at_epoch_1(self, usage: ResumptionPSKUsage) -> None:
        w = welcomed()  # the Welcome is for epoch 2
        link = _resumption(usage)
        forged = rewelcome(
            w.welcome,
            w.bundle,
            w.signer_key,
            group_secrets=lambda gs: replace(gs, psks=(*gs.psks, link)),
        )
        reject_join(
            forged,
            w.bundle,
            WelcomeError,
            "epoch 1",
            genuine=w.welcome,
            resumption_psks={(b"old", 1): bytes(32)},
        )


def _close_with_reinit(groups: list[Group], **reinit: object) -> None:
    """Bob proposes a ReInit, carol commits it, everyone merges."""
    bob, carol = groups[BOB], groups[CAROL]
    message = bob.propose_reinit(**reinit)  # type: ignore[arg-type]
    deliver(groups, message, sender=bob)
    commit_and_deliver(groups, carol)
    assert all(g.reinit is not None and not g.active for g in groups)


def _successor_by_hand(
    old: Group,
    identity: SigningIdentity,
    joiner: KeyPackageBundle,
    usage: ResumptionPSKUsage,
    *,
    group_id: bytes,
) -> Group:
    """A would-be successor of ``old`` built with the public API only (a new group whose first
    commit adds ``joiner`` and injects ``old``'s resumption PSK with ``usage``); returns the
    joiner's view of it."""
    new = Group.create(identity, group_id=group_id)
    psk = old.resumption_psk()
    assert psk is not None
    new.add_resumption_psk(old.group_id, old.epoch, psk)
    link = PreSharedKeyID.resumption(usage, old.group_id, old.epoch, os.urandom(32))
    out = new.commit(
        [Proposal(Add(joiner.key_package)), Proposal(PreSharedKey(link))], resumption_usage=usage
    )
    new.merge_pending_commit()
    assert out.welcome is not None
    return Group.join(out.welcome, joiner, resumption_psks=old.resumption_psks())


class TestSuccessors:
    """RFC 9420 §11.2, §11.3 and §12.4.3.1, checked by ``check_successor``: the new group names
    the old one in its one reinit/branch resumption PSK; for reinit, the old group ended with
    a ReInit whose parameters the new group has, and keeps all members; for branch, the
    version and cipher suite are the old group's and the members a subset of its members."""

    def test_no_resumption_link(self, groups: list[Group]) -> None:
        alice, bob = groups[ALICE], groups[BOB]
        bundle = create_key_package(bob.identity)
        new = Group.create(alice.identity)
        out = new.commit([Proposal(Add(bundle.key_package))])
        assert out.welcome is not None
        joined = Group.join(out.welcome, bundle)
        with raises_exactly(WelcomeError, "does not name the old group"):
            check_successor(joined, bob)

    def test_reinit_link_to_a_group_not_closed_by_reinit(self, groups: list[Group]) -> None:
        alice, bob = groups[ALICE], groups[BOB]
        joined = _successor_by_hand(
            alice,
            alice.identity,
            create_key_package(bob.identity),
            ResumptionPSKUsage.reinit,
            group_id=b"next",
        )
        with raises_exactly(WelcomeError, "not a ReInit"):
            check_successor(joined, bob)

    def test_reinit_successor_that_does_not_match_the_reinit(self, groups: list[Group]) -> None:
        _close_with_reinit(groups, group_id=b"agreed")
        alice, bob = groups[ALICE], groups[BOB]
        joined = _successor_by_hand(
            alice,
            alice.identity,
            create_key_package(bob.identity),
            ResumptionPSKUsage.reinit,
            group_id=b"something else",
        )
        with raises_exactly(WelcomeError, "does not match the ReInit"):
            check_successor(joined, bob)

    def test_reinit_successor_that_drops_a_member(self, groups: list[Group]) -> None:
        _close_with_reinit(groups)
        alice, bob = groups[ALICE], groups[BOB]
        bundle = create_key_package(bob.identity)
        new, out = reinit_successor(alice, [bundle.key_package])  # carol and dave left out
        assert out.welcome is not None and len(new.members()) == 2
        joined = Group.join(out.welcome, bundle, resumption_psks=bob.resumption_psks())
        with raises_exactly(WelcomeError):
            check_successor(joined, bob)

    def test_branch_with_another_cipher_suite(self, groups: list[Group]) -> None:
        alice, bob = groups[ALICE], groups[BOB]
        bob3 = SigningIdentity.generate(b"member-1", 3)
        joined = _successor_by_hand(
            alice,
            SigningIdentity.generate(b"member-0", 3),
            create_key_package(bob3),
            ResumptionPSKUsage.branch,
            group_id=b"branch",
        )
        assert joined.context.cipher_suite == 3
        with raises_exactly(WelcomeError, "cipher suite"):
            check_successor(joined, bob)

    def test_branch_with_a_stranger(self, groups: list[Group]) -> None:
        alice, bob = groups[ALICE], groups[BOB]
        bundle = create_key_package(bob.identity)
        stranger = create_key_package(SigningIdentity.generate(b"stranger")).key_package
        _, out = branch(alice, [bundle.key_package, stranger])
        assert out.welcome is not None
        joined = Group.join(out.welcome, bundle, resumption_psks=bob.resumption_psks())
        with raises_exactly(WelcomeError, "only contain members"):
            check_successor(joined, bob)

    def test_control_branch_of_members(self, groups: list[Group]) -> None:
        alice, bob = groups[ALICE], groups[BOB]
        bundle = create_key_package(bob.identity)
        _, out = branch(alice, [bundle.key_package])
        assert out.welcome is not None
        joined = Group.join(out.welcome, bundle, resumption_psks=bob.resumption_psks())
        check_successor(joined, bob)


# --- §2.1: the codec, seen through Group.process -------------------------------------------------


class TestCodecThroughProcess:
    """RFC 9420 §2.1: malformed bytes handed to ``Group.process`` are a DecodeError and change
    nothing: trailing bytes after the MLSMessage, a non-minimal vector length, a bad optional
    presence octet."""

    def test_trailing_bytes(self, groups: list[Group]) -> None:
        bob, carol = groups[BOB], groups[CAROL]
        reject_any(carol, bob.propose_remove(DAVE) + b"\x00", DecodeError, "trailing")
        assert_recovers(groups, carol)

    def test_non_minimal_vector_header(self, groups: list[Group]) -> None:
        """The group_id header of a PublicMessage (offset 4) re-encoded in two bytes."""
        bob, carol = groups[BOB], groups[CAROL]
        message = bob.propose_remove(DAVE)
        assert message[4] == len(bob.group_id) < 0x40
        longer = message[:4] + bytes([0x40, message[4]]) + message[5:]
        reject_any(carol, longer, DecodeError, "non-minimal")
        assert_recovers(groups, carol)

    def test_bad_optional_presence_octet(self, groups: list[Group]) -> None:
        """The Commit's ``optional<UpdatePath>`` octet set to 2."""
        bob, carol = groups[BOB], groups[CAROL]
        out = bob.commit([Proposal(Remove(DAVE))])
        bob.clear_pending_commit()
        pm = MLSMessage.decode(out.commit).public_message
        assert pm is not None and pm.content.commit is not None
        commit, path = pm.content.commit, pm.content.commit.path
        assert path is not None
        # The presence octet sits just before the UpdatePath, at the end of the Commit.
        encoded = commit.encode()
        at = out.commit.index(encoded) + len(encoded) - len(path.encode()) - 1
        assert out.commit[at] == 1
        broken = out.commit[:at] + b"\x02" + out.commit[at + 1 :]
        reject_any(carol, broken, DecodeError, "presence octet 2")
        assert_recovers(groups, carol)
