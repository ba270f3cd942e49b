"""GroupInfo signing and Welcome messages: creating them for new members and joining from
them (RFC 9420 §12.4.3, §12.4.3.1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlspy.crypto import CipherSuiteProvider, MessageSigner, Rng, suite
from mlspy.errors import (
    CryptoError,
    DecodeError,
    GroupInfoError,
    MLSError,
    PskError,
    WelcomeError,
)
from mlspy.group.key_package import KeyPackageBundle, key_package_ref
from mlspy.group.proposals import check_leaf_supports_group, required_capabilities
from mlspy.group.state import EpochState, GroupConfig, build_epoch
from mlspy.messages import (
    EncryptedGroupSecrets,
    Extension,
    GroupContext,
    GroupInfo,
    GroupSecrets,
    HPKECiphertext,
    KeyPackage,
    PathSecret,
    PreSharedKeyID,
    PSKType,
    ResumptionPSKUsage,
    Welcome,
)
from mlspy.messages import (
    RatchetTree as RatchetTreeExtension,
)
from mlspy.schedule.key_schedule import (
    compute_welcome_secret,
    epoch_from_joiner,
    welcome_key_nonce,
)
from mlspy.schedule.psk import compute_psk_secret
from mlspy.tree.math import LeafIndex, NodeIndex, common_ancestor, direct_path
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import TreePrivateKeys, next_path_secret, node_key_pair
from mlspy.tree.validation import validate_tree

GROUP_INFO_TBS = "GroupInfoTBS"
WELCOME = "Welcome"

PskLookup = Callable[[PreSharedKeyID], bytes | None]


def sign_group_info(
    cs: CipherSuiteProvider,
    signature_private_key: bytes | MessageSigner,
    context: GroupContext,
    extensions: tuple[Extension, ...],
    confirmation_tag: bytes,
    signer: LeafIndex,
) -> GroupInfo:
    unsigned = GroupInfo(context, extensions, confirmation_tag, signer, b"")
    signature = cs.sign_with_label(signature_private_key, GROUP_INFO_TBS, unsigned.tbs())
    return GroupInfo(context, extensions, confirmation_tag, signer, signature)


def verify_group_info(
    cs: CipherSuiteProvider,
    group_info: GroupInfo,
    tree: RatchetTree,
    *,
    signature_rule: str = "WG-06",
) -> None:
    """The GroupInfo signature, by the leaf at ``signer`` (§12.4.3.1). ``signature_rule`` is
    the catalogue id of a bad signature (an external joiner's check is catalogued apart)."""
    signer = tree.leaf(LeafIndex(group_info.signer))
    if signer is None:
        raise GroupInfoError(f"GroupInfo signer {group_info.signer} is not a member", rule="WG-07")
    if not cs.verify_with_label(
        signer.signature_key, GROUP_INFO_TBS, group_info.tbs(), group_info.signature
    ):
        raise GroupInfoError("GroupInfo signature does not verify", rule=signature_rule)


def resolve_psks(
    cs: CipherSuiteProvider, psk_ids: Sequence[PreSharedKeyID], lookup: PskLookup
) -> bytes | None:
    """``psk_secret`` for ``psk_ids`` (§8.4); ``None`` (the zero vector) when there are none."""
    if not psk_ids:
        return None
    pairs = []
    for psk_id in psk_ids:
        value = lookup(psk_id)
        if value is None:
            raise PskError(
                "a PSK named by the group is not available to this client",
                rule="PS-01" if psk_id.psktype == PSKType.external else "PS-02",
            )
        pairs.append((psk_id.encode(), value))
    return compute_psk_secret(cs, pairs)


@dataclass(frozen=True)
class NewMember:
    leaf: LeafIndex
    key_package: KeyPackage


def create_welcome(
    cs: CipherSuiteProvider,
    group_info: GroupInfo,
    joiner_secret: bytes,
    psk_ids: Sequence[PreSharedKeyID],
    psk_secret: bytes | None,
    new_members: Sequence[NewMember],
    committer: LeafIndex,
    path_secrets: dict[NodeIndex, bytes] | None,
    *,
    rng: Rng | None = None,
) -> Welcome:
    """Encrypt the GroupInfo under the welcome key and the GroupSecrets to each new member's
    init key, with the path secret of its lowest common ancestor with the committer; ``rng``
    draws the HPKE encapsulations (the provider's)."""
    welcome_secret = compute_welcome_secret(cs, joiner_secret, psk_secret)
    key, nonce = welcome_key_nonce(cs, welcome_secret)
    encrypted_group_info = cs.aead_seal(key, nonce, b"", group_info.encode())
    secrets = []
    for member in new_members:
        path_secret = None
        if path_secrets:
            lca = common_ancestor(NodeIndex(2 * committer), NodeIndex(2 * member.leaf))
            if lca in path_secrets:
                path_secret = PathSecret(path_secrets[lca])
        group_secrets = GroupSecrets(joiner_secret, path_secret, tuple(psk_ids))
        kem_output, ct = cs.encrypt_with_label(
            member.key_package.init_key,
            WELCOME,
            encrypted_group_info,
            group_secrets.encode(),
            rng=rng,
        )
        secrets.append(
            EncryptedGroupSecrets(
                key_package_ref(member.key_package), HPKECiphertext(kem_output, ct)
            )
        )
    return Welcome(int(cs.id), tuple(secrets), encrypted_group_info)


@dataclass(frozen=True)
class JoinedEpoch:
    epoch: EpochState
    own_leaf: LeafIndex
    group_info: GroupInfo
    group_secrets: GroupSecrets

    def __repr__(self) -> str:  # holds the joiner secret
        return f"JoinedEpoch(epoch={self.epoch!r}, own_leaf={self.own_leaf}, <secret>)"


def _decode_tree(
    cs: CipherSuiteProvider, group_info: GroupInfo, ratchet_tree: RatchetTree | None
) -> tuple[RatchetTree, bool]:
    """The tree of the GroupInfo's extension, else the one given out of band (then True)."""
    try:
        ext = RatchetTreeExtension.find_in(group_info.extensions)
    except DecodeError as exc:
        raise WelcomeError(f"malformed ratchet_tree extension: {exc}", rule="WG-11") from exc
    if ext is not None:
        return RatchetTree.from_nodes(cs, ext.ratchet_tree), False
    if ratchet_tree is None:
        raise WelcomeError(
            "no ratchet_tree extension: the tree must be provided out of band", rule="WG-10"
        )
    return ratchet_tree.copy(), True


def join_from_welcome(
    welcome: Welcome,
    bundles: Sequence[KeyPackageBundle],
    config: GroupConfig,
    *,
    ratchet_tree: Callable[[CipherSuiteProvider], RatchetTree | None] | None = None,
    psk_lookup: PskLookup = lambda _: None,
) -> tuple[JoinedEpoch, KeyPackageBundle]:
    """Join from a Welcome (§12.4.3.1). ``ratchet_tree`` builds the out-of-band tree for the
    suite when the GroupInfo carries none. Returns the epoch and the KeyPackage used.

    The steps: find our entry and open our GroupSecrets; resolve the PSKs and open the
    GroupInfo; check the group against our KeyPackage; validate the tree and find our leaf;
    install the path secret; run the key schedule and verify the confirmation tag."""
    cs, bundle, group_secrets = _open_group_secrets(welcome, bundles)
    successor = _successor_psks(group_secrets)
    psk_secret = resolve_psks(cs, group_secrets.psks, psk_lookup)
    group_info = _open_group_info(cs, welcome, group_secrets.joiner_secret, psk_secret)
    context = group_info.group_context
    _check_group_for(context, bundle, successor)
    tree, own_leaf = _joined_tree(
        cs, group_info, bundle, config, ratchet_tree(cs) if ratchet_tree else None
    )
    private = TreePrivateKeys(own_leaf, {NodeIndex(2 * own_leaf): bundle.encryption_private_key})
    if group_secrets.path_secret is not None:
        _install_path_secret(
            cs, tree, private, LeafIndex(group_info.signer), group_secrets.path_secret.path_secret
        )
    secrets = epoch_from_joiner(cs, group_secrets.joiner_secret, psk_secret, context.encode())
    epoch = build_epoch(cs, config, context=context, tree=tree, private=private, secrets=secrets)
    if not cs.verify_mac(
        secrets.confirmation_key, context.confirmed_transcript_hash, group_info.confirmation_tag
    ):
        raise WelcomeError("the GroupInfo confirmation tag does not verify", rule="WG-16")
    return JoinedEpoch(epoch, own_leaf, group_info, group_secrets), bundle


def _open_group_secrets(
    welcome: Welcome, bundles: Sequence[KeyPackageBundle]
) -> tuple[CipherSuiteProvider, KeyPackageBundle, GroupSecrets]:
    """Our entry of the Welcome, by KeyPackage reference, decrypted with its init key."""
    try:
        cs = suite(welcome.cipher_suite)
    except MLSError as exc:
        raise WelcomeError(str(exc), rule="WG-03") from exc
    by_ref = {b.ref(): b for b in bundles if b.key_package.cipher_suite == welcome.cipher_suite}
    entry = next((s for s in welcome.secrets if s.new_member in by_ref), None)
    if entry is None:
        # An entry for one of our KeyPackages of another cipher suite breaks WG-02.
        ours = {b.ref() for b in bundles}
        other_suite = any(s.new_member in ours for s in welcome.secrets)
        raise WelcomeError(
            "the Welcome has no entry for any of our KeyPackages",
            rule="WG-02" if other_suite else "WG-01",
        )
    bundle = by_ref[entry.new_member]
    try:
        plaintext = cs.decrypt_with_label(
            bundle.init_private_key,
            WELCOME,
            welcome.encrypted_group_info,
            entry.encrypted_group_secrets.kem_output,
            entry.encrypted_group_secrets.ciphertext,
        )
    except CryptoError as exc:
        raise WelcomeError("cannot decrypt our GroupSecrets", rule="WG-04") from exc
    return cs, bundle, GroupSecrets.decode(plaintext)


def _successor_psks(group_secrets: GroupSecrets) -> list[PreSharedKeyID]:
    """The reinit/branch resumption PSK that makes the group a successor: at most one."""
    links = [
        p
        for p in group_secrets.psks
        if p.psktype == PSKType.resumption
        and p.usage in (ResumptionPSKUsage.reinit, ResumptionPSKUsage.branch)
    ]
    if len(links) > 1:
        raise WelcomeError("more than one reinit/branch resumption PSK", rule="RB-01")
    return links


def _open_group_info(
    cs: CipherSuiteProvider, welcome: Welcome, joiner_secret: bytes, psk_secret: bytes | None
) -> GroupInfo:
    welcome_secret = compute_welcome_secret(cs, joiner_secret, psk_secret)
    key, nonce = welcome_key_nonce(cs, welcome_secret)
    try:
        return GroupInfo.decode(cs.aead_open(key, nonce, b"", welcome.encrypted_group_info))
    except CryptoError as exc:
        raise WelcomeError("cannot decrypt the GroupInfo", rule="WG-05") from exc


def _check_group_for(
    context: GroupContext, bundle: KeyPackageBundle, successor: list[PreSharedKeyID]
) -> None:
    """The group is for our KeyPackage (suite, version); a successor starts at epoch 1."""
    if context.cipher_suite != bundle.key_package.cipher_suite:
        raise WelcomeError("the group's cipher suite is not our KeyPackage's", rule="WG-08")
    if context.version != bundle.key_package.version:
        raise WelcomeError("the group's protocol version is not our KeyPackage's", rule="WG-09")
    if successor and context.epoch != 1:
        raise WelcomeError("a reinit/branch Welcome must start at epoch 1", rule="RB-02")


def _joined_tree(
    cs: CipherSuiteProvider,
    group_info: GroupInfo,
    bundle: KeyPackageBundle,
    config: GroupConfig,
    out_of_band: RatchetTree | None,
) -> tuple[RatchetTree, LeafIndex]:
    """The group's tree, verified and validated as a joiner must (§12.4.3.1), and our leaf in
    it; we must support every extension of the group (§12.4.3, §13.4)."""
    context = group_info.group_context
    tree, given_out_of_band = _decode_tree(cs, group_info, out_of_band)
    verify_group_info(cs, group_info, tree)
    validate_group_tree(
        tree, context, config, tree_hash_rule="TR-02" if given_out_of_band else "TR-01"
    )
    leaf = bundle.key_package.leaf_node
    own_leaf = next((i for i, node in tree.leaves() if node == leaf), None)
    if own_leaf is None:
        raise WelcomeError("our KeyPackage's leaf is not in the tree", rule="WG-12")
    check_leaf_supports_group(leaf, context.extensions, rule="WG-17")
    return tree, own_leaf


def validate_group_tree(
    tree: RatchetTree, context: GroupContext, config: GroupConfig, *, tree_hash_rule: str = "TR-01"
) -> None:
    """Validate a group's tree as a joiner must (§12.4.3.1), with ``config``'s clock, leaf
    lifetime maximum and credential validator: one call for Welcome joins, external joins
    and the public view of a group."""
    validate_tree(
        tree,
        group_id=context.group_id,
        tree_hash=context.tree_hash,
        required_capabilities=required_capabilities(context.extensions),
        now=config.now(),
        max_lifetime=config.max_leaf_lifetime,
        credential_validator=config.credential_validator,
        tree_hash_rule=tree_hash_rule,
    )


def _install_path_secret(
    cs: CipherSuiteProvider,
    tree: RatchetTree,
    private: TreePrivateKeys,
    signer: LeafIndex,
    path_secret: bytes,
) -> None:
    """Keys from the common ancestor with the committer up to the root: every non-blank node
    above it is the next node of the committer's filtered direct path (§12.4.3.1)."""
    if signer == private.leaf:
        raise WelcomeError("the GroupInfo signer is ourselves", rule="WG-15")
    lca = common_ancestor(NodeIndex(2 * private.leaf), NodeIndex(2 * signer))
    if tree.is_blank(lca):
        raise WelcomeError("a path secret was sent but our common ancestor is blank", rule="WG-14")
    secret = path_secret
    for x in [lca, *direct_path(lca, tree.n_leaves)]:
        public = tree.encryption_key(x)
        if public is None:
            continue
        priv, pub = node_key_pair(cs, secret)
        if pub != public:
            raise WelcomeError(
                f"the path secret does not derive node {x}'s public key", rule="WG-13"
            )
        private.keys[x] = priv
        secret = next_path_secret(cs, secret)


__all__ = [
    "JoinedEpoch",
    "NewMember",
    "create_welcome",
    "join_from_welcome",
    "resolve_psks",
    "sign_group_info",
    "validate_group_tree",
    "verify_group_info",
]
