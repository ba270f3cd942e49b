"""KeyPackages (RFC 9420 §10): creation with private keys, validation, references."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlspy.crypto import CipherSuiteProvider, MessageSigner, suite
from mlspy.errors import (
    DecodeError,
    KeyPackageError,
    LeafNodeError,
    MLSError,
    ProtocolVersionError,
    UsageError,
)
from mlspy.group.identity import SigningIdentity
from mlspy.messages import (
    Extension,
    KeyPackage,
    LastResort,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    MLSMessage,
    ProtocolVersion,
)
from mlspy.provider import DEFAULT_PROVIDER, Provider
from mlspy.tree.treekem import sign_leaf_node
from mlspy.tree.validation import MAX_LEAF_LIFETIME, validate_leaf_node

KEY_PACKAGE_TBS = "KeyPackageTBS"
DEFAULT_LIFETIME = 90 * 24 * 3600
# Tolerated clock skew for not_before, as other stacks do (an hour).
CLOCK_SKEW = 3600


@dataclass(frozen=True)
class KeyPackageBundle:
    """A KeyPackage with the private keys its owner needs to join with it.

    With an external signer (:meth:`SigningIdentity.external`) ``signature_private_key`` is
    empty and ``signer`` signs; :attr:`signing_key` is whichever there is."""

    key_package: KeyPackage
    init_private_key: bytes
    encryption_private_key: bytes
    signature_private_key: bytes
    signer: MessageSigner | None = field(default=None, compare=False, repr=False)

    @property
    def signing_key(self) -> bytes | MessageSigner:
        """The external signer if there is one, else the raw signature private key."""
        return self.signer if self.signer is not None else self.signature_private_key

    def ref(self) -> bytes:
        return key_package_ref(self.key_package)

    @property
    def is_last_resort(self) -> bool:
        return LastResort.find_in(self.key_package.extensions) is not None

    def __repr__(self) -> str:  # never print private keys
        return f"KeyPackageBundle(ref={self.ref().hex()[:16]}…)"


def key_package_ref(kp: KeyPackage) -> bytes:
    """``MakeKeyPackageRef(KeyPackage)`` (§5.2)."""
    return suite(kp.cipher_suite).make_key_package_ref(kp.encode())


def create_key_package(
    identity: SigningIdentity,
    *,
    lifetime: int = DEFAULT_LIFETIME,
    now: int | None = None,
    extensions: tuple[Extension, ...] = (),
    last_resort: bool = False,
    provider: Provider | None = None,
) -> KeyPackageBundle:
    """A fresh KeyPackage: new init key and leaf encryption key (distinct, §10), signed.

    ``provider`` (default: the system's) draws the keys and, unless ``now`` is given, tells
    the time the lifetime starts at."""
    provider = provider or DEFAULT_PROVIDER
    cs = suite(identity.cipher_suite)
    start = provider.now() if now is None else now
    init_priv, init_pub = cs.hpke_key_pair(rng=provider.rng)
    enc_priv, enc_pub = cs.hpke_key_pair(rng=provider.rng)
    leaf = sign_leaf_node(
        cs,
        identity.signing_key,
        LeafNode(
            enc_pub,
            identity.signature_key,
            identity.credential,
            identity.capabilities,
            LeafNodeSource.key_package,
            Lifetime(max(0, start - CLOCK_SKEW), start + lifetime),
            None,
            identity.leaf_extensions,
            b"",
        ),
        None,
        None,
    )
    exts = extensions + ((LastResort().to_extension(),) if last_resort else ())
    unsigned = KeyPackage(ProtocolVersion.mls10, identity.cipher_suite, init_pub, leaf, exts, b"")
    signature = cs.sign_with_label(identity.signing_key, KEY_PACKAGE_TBS, unsigned.tbs())
    kp = KeyPackage(ProtocolVersion.mls10, identity.cipher_suite, init_pub, leaf, exts, signature)
    return KeyPackageBundle(
        kp, init_priv, enc_priv, identity.signature_private_key, identity.signer
    )


def as_key_package(key_package: KeyPackage | bytes | MLSMessage) -> KeyPackage:
    """A KeyPackage given as the struct, as MLSMessage bytes, or as bare KeyPackage bytes
    (what other stacks' ``serialize()`` gives); anything else is a :class:`UsageError`."""
    if isinstance(key_package, KeyPackage):
        return key_package
    if isinstance(key_package, MLSMessage):
        if key_package.key_package is None:
            raise UsageError(
                f"expected a KeyPackage, got an MLSMessage({key_package.wire_format.name})"
            )
        return key_package.key_package
    if not isinstance(key_package, bytes | bytearray | memoryview):
        raise UsageError(f"expected a KeyPackage or its bytes, got {type(key_package).__name__}")
    data = bytes(key_package)
    try:
        message = MLSMessage.decode(data)
    except DecodeError as as_message:
        try:
            return KeyPackage.decode(data)
        except DecodeError as as_bare:
            raise UsageError(
                "expected a KeyPackage as MLSMessage bytes or bare KeyPackage bytes: "
                f"as an MLSMessage, {as_message}; as a KeyPackage, {as_bare}"
            ) from as_bare
    if message.version != ProtocolVersion.mls10:
        raise ProtocolVersionError(
            f"MLSMessage version {message.version} is not mls10", rule="KP-08"
        )
    if message.key_package is None:
        raise UsageError(f"expected a KeyPackage, got an MLSMessage({message.wire_format.name})")
    return message.key_package


def validate_key_package(
    kp: KeyPackage,
    *,
    cipher_suite: int | None = None,
    now: int | None = None,
    max_lifetime: int | None = MAX_LEAF_LIFETIME,
) -> CipherSuiteProvider:
    """The checks of §10.1; ``cipher_suite`` is the group's, ``now`` enables the clock check
    of the leaf's lifetime, ``max_lifetime`` bounds its total lifetime (§7.2)."""
    if kp.version != ProtocolVersion.mls10:
        raise KeyPackageError(f"KeyPackage version {kp.version} is not mls10", rule="KP-01")
    if cipher_suite is not None and kp.cipher_suite != cipher_suite:
        raise KeyPackageError(
            f"KeyPackage cipher suite {kp.cipher_suite} is not the group's {cipher_suite}",
            rule="KP-02",
        )
    try:
        cs = suite(kp.cipher_suite)
    except MLSError as exc:
        raise KeyPackageError(str(exc), rule="KP-02") from exc
    if kp.init_key == kp.leaf_node.encryption_key:
        raise KeyPackageError("init_key equals the leaf encryption_key", rule="KP-05")
    try:
        cs.hpke.check_public(kp.init_key)
    except (MLSError, ValueError) as exc:
        raise KeyPackageError(
            "init_key is not a valid public key for the suite", rule="KP-06"
        ) from exc
    try:
        validate_leaf_node(
            cs,
            kp.leaf_node,
            group_id=None,
            leaf_index=None,
            expected_source=LeafNodeSource.key_package,
            now=now,
            max_lifetime=max_lifetime,
        )
    except LeafNodeError as exc:
        raise KeyPackageError(f"invalid leaf node: {exc}", rule=exc.rule) from exc
    if not cs.verify_with_label(
        kp.leaf_node.signature_key, KEY_PACKAGE_TBS, kp.tbs(), kp.signature
    ):
        raise KeyPackageError("KeyPackage signature does not verify", rule="KP-04")
    return cs
