"""Providers: injected randomness, clock and signers (issue "Providers").

A seeded provider makes key generation and HPKE encryption deterministic; the deterministic
HPKE path and the native one interoperate in every suite; a signer that keeps its key to itself
signs for ``sign_with_label``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlspy.crypto import CipherSuite, MessageSigner, suite
from mlspy.crypto.pq_suites import PQ_SUITES
from mlspy.errors import CryptoError, UsageError
from mlspy.messages import (
    Capabilities,
    ContentType,
    Credential,
    FramedContent,
    GroupContext,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    PrivateMessage,
    Sender,
    WireFormat,
)
from mlspy.protection import authenticate, decrypt_sender_data, protect_private_message
from mlspy.provider import (
    DEFAULT_PROVIDER,
    SEEDED_EPOCH,
    KeySigner,
    Provider,
    SeededProvider,
    Signer,
)
from mlspy.schedule.secret_tree import SecretTree
from mlspy.tree.math import LeafIndex, NodeIndex
from mlspy.tree.ratchet_tree import RatchetTree
from mlspy.tree.treekem import (
    LeafNodeParams,
    TreePrivateKeys,
    create_update_path,
    decrypt_update_path,
    merge_update_path,
    sign_leaf_node,
)

ALL = list(CipherSuite)
IDS = [f"suite{int(c)}" for c in ALL]
EDDSA = [c for c in ALL if suite(c).signer.scheme.name.startswith("ed")]
ECDSA = [c for c in ALL if suite(c).signer.scheme.name.startswith("ecdsa")]
# The post-quantum suites' encapsulations cannot be made deterministic (``cryptography`` has
# no derandomized ML-KEM encapsulation, ``crypto/pqkem.py``): with an ``rng`` their keys
# are, their HPKE outputs are not. DHKEM_ALL are the suites whose HPKE output is.
PQ = [c for c in ALL if c in PQ_SUITES]
DHKEM_ALL = [c for c in ALL if c not in PQ_SUITES]
DHKEM_IDS = [f"suite{int(c)}" for c in DHKEM_ALL]


# --- Providers -------------------------------------------------------------------------------


def test_default_provider() -> None:
    a, b = DEFAULT_PROVIDER.random(32), DEFAULT_PROVIDER.random(32)
    assert len(a) == 32 and a != b
    assert DEFAULT_PROVIDER.random(0) == b""
    assert isinstance(DEFAULT_PROVIDER.now(), int)
    assert abs(DEFAULT_PROVIDER.now() - Provider().now()) <= 1


def test_seeded_stream_is_a_function_of_the_seed() -> None:
    a, b, c = SeededProvider(b"seed"), SeededProvider(b"seed"), SeededProvider(b"other seed")
    stream_a = a.random(100)
    assert stream_a == b.random(100)
    assert stream_a != c.random(100)
    assert a.random(16) == b.random(16)  # and it keeps agreeing
    # Independent of how the stream is read.
    d = SeededProvider(b"seed")
    assert d.random(3) + d.random(0) + d.random(61) + d.random(36) == stream_a
    # Not a repeating or trivial stream.
    assert len(set(SeededProvider(b"").random(32 * 64)[i : i + 32] for i in range(0, 2048, 32)))
    assert stream_a[:32] != stream_a[32:64]


def test_seeded_stream_known_answer() -> None:
    # HKDF-Extract then HMAC-SHA256 in counter mode; pinned so the stream never drifts
    # (tests and recorded runs depend on it).
    import hashlib
    import hmac

    prk = hmac.new(b"mlspy SeededProvider v1", b"seed", hashlib.sha256).digest()
    expected = b"".join(
        hmac.new(prk, i.to_bytes(8, "big"), hashlib.sha256).digest() for i in range(3)
    )
    assert SeededProvider(b"seed").random(96) == expected


def test_seeded_children_are_independent_and_reproducible() -> None:
    p = SeededProvider(b"seed")
    alice, bob = p.child(b"alice"), p.child(b"bob")
    assert alice.random(32) != bob.random(32)
    assert SeededProvider(b"seed").child(b"alice").random(32) == p.child(b"alice").random(32)
    assert p.random(32) == SeededProvider(b"seed").random(32)  # children consume nothing


def test_seeded_clock() -> None:
    fixed = SeededProvider(b"s")
    assert fixed.now() == fixed.now() == SEEDED_EPOCH
    ticking = SeededProvider(b"s", now=1000, tick=5)
    assert [ticking.now() for _ in range(3)] == [1000, 1005, 1010]
    with pytest.raises(UsageError):
        SeededProvider(b"s", tick=-1)


def test_seeded_provider_repr_hides_the_seed() -> None:
    assert "secret-seed" not in repr(SeededProvider(b"secret-seed"))
    assert b"secret-seed".hex() not in repr(SeededProvider(b"secret-seed"))


def test_custom_provider_subclass() -> None:
    class Zeros(Provider):
        def random(self, n: int) -> bytes:
            return bytes(n)

        def now(self) -> int:
            return 42

    p = Zeros()
    assert p.random(4) == b"\x00" * 4 and p.now() == 42


def test_rng_returning_the_wrong_length_is_refused() -> None:
    cs = suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
    with pytest.raises(UsageError):
        cs.hpke_key_pair(rng=lambda n: bytes(n - 1))


# --- Deterministic key generation ------------------------------------------------------------


@pytest.mark.parametrize("cs_id", ALL, ids=IDS)
def test_hpke_key_pair_with_rng(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    a = cs.hpke_key_pair(rng=SeededProvider(b"k").random)
    assert a == cs.hpke_key_pair(rng=SeededProvider(b"k").random)
    assert a != cs.hpke_key_pair(rng=SeededProvider(b"k2").random)
    # It is DeriveKeyPair over the first Nsk bytes drawn (RFC 9180 §7.1.3).
    ikm = SeededProvider(b"k").random(cs.hpke.n_sk)
    assert a == cs.derive_key_pair(ikm)
    assert cs.hpke_public_key(a[0]) == a[1]
    assert cs.hpke_key_pair() != cs.hpke_key_pair()  # the default stays random


@pytest.mark.parametrize("cs_id", ALL, ids=IDS)
def test_signature_key_pair_with_rng(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    sk, pk = cs.signature_key_pair(rng=SeededProvider(b"sig").random)
    assert (sk, pk) == cs.signature_key_pair(rng=SeededProvider(b"sig").random)
    assert sk != cs.signature_key_pair(rng=SeededProvider(b"sig2").random)[0]
    assert cs.signature_public_key(sk) == pk
    sig = cs.sign_with_label(sk, "LeafNodeTBS", b"content")
    assert cs.verify_with_label(pk, "LeafNodeTBS", b"content", sig)
    assert cs.signature_key_pair() != cs.signature_key_pair()


@pytest.mark.parametrize(
    "cs_id",
    ECDSA,
    ids=[f"suite{int(c)}" for c in ECDSA],
)
def test_ecdsa_scalar_from_rng_is_never_zero(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    for fill in (b"\x00", b"\xff"):

        def constant(n: int, fill: bytes = fill) -> bytes:
            return fill * n

        sk, pk = cs.signature_key_pair(rng=constant)
        assert int.from_bytes(sk, "big") != 0
        assert cs.signature_public_key(sk) == pk


# --- Deterministic HPKE, interoperable with the native path ---------------------------------


@pytest.mark.parametrize("cs_id", DHKEM_ALL, ids=DHKEM_IDS)
def test_encrypt_with_label_deterministic_and_interoperable(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    sk, pk = cs.hpke_key_pair()
    label, ctx, pt = "UpdatePathNode", b"group context", b"path secret" * 3

    a = cs.encrypt_with_label(pk, label, ctx, pt, rng=SeededProvider(b"e").random)
    assert a == cs.encrypt_with_label(pk, label, ctx, pt, rng=SeededProvider(b"e").random)
    assert a != cs.encrypt_with_label(pk, label, ctx, pt, rng=SeededProvider(b"f").random)
    # The ephemeral key is DeriveKeyPair(rng(Nsk)): kem_output is its public key.
    assert a[0] == cs.hpke_key_pair(rng=SeededProvider(b"e").random)[1]

    # Deterministic output opens with the default (native where available) and composed open.
    assert cs.decrypt_with_label(sk, label, ctx, *a) == pt
    assert cs.hpke.open_composed(sk, a[0], _info(label, ctx), b"", a[1]) == pt
    # And the default (native) output opens on the composed path.
    native = cs.encrypt_with_label(pk, label, ctx, pt)
    assert native != cs.encrypt_with_label(pk, label, ctx, pt)
    assert cs.hpke.open_composed(sk, native[0], _info(label, ctx), b"", native[1]) == pt
    assert cs.decrypt_with_label(sk, label, ctx, *native) == pt


@pytest.mark.parametrize("cs_id", ALL, ids=IDS)
def test_default_seal_keeps_the_native_path(
    cs_id: CipherSuite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an rng, suites the native HPKE covers never take the composed path."""
    cs = suite(cs_id)
    sk, pk = cs.hpke_key_pair()
    composed: list[bool] = []
    original = type(cs.hpke).seal_composed

    def spy(self: object, *args: object, **kwargs: object) -> tuple[bytes, bytes]:
        composed.append(True)
        return original(cs.hpke, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(type(cs.hpke), "seal_composed", spy)
    kem_output, ct = cs.encrypt_with_label(pk, "L", b"c", b"pt")
    assert cs.decrypt_with_label(sk, "L", b"c", kem_output, ct) == b"pt"
    assert composed == ([] if cs.hpke._native is not None else [True])
    cs.encrypt_with_label(pk, "L", b"c", b"pt", rng=SeededProvider(b"r").random)
    assert composed[-1:] == [True]


@pytest.mark.parametrize("cs_id", DHKEM_ALL, ids=DHKEM_IDS)
def test_hpke_seal_and_export_with_rng(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    sk, pk = cs.hpke_key_pair(rng=SeededProvider(b"recipient").random)
    for aad in (b"", b"aad"):
        enc, ct = cs.hpke.seal(pk, b"info", aad, b"msg", rng=SeededProvider(b"s").random)
        assert (enc, ct) == cs.hpke.seal(pk, b"info", aad, b"msg", rng=SeededProvider(b"s").random)
        assert cs.hpke.open(sk, enc, b"info", aad, ct) == b"msg"
        enc2, ct2 = cs.hpke.seal(pk, b"info", aad, b"msg")
        assert cs.hpke.open_composed(sk, enc2, b"info", aad, ct2) == b"msg"
    enc, secret = cs.hpke.send_export(pk, b"", b"ctx", cs.nh, rng=SeededProvider(b"x").random)
    assert (enc, secret) == cs.hpke.send_export(
        pk, b"", b"ctx", cs.nh, rng=SeededProvider(b"x").random
    )
    assert cs.hpke.receive_export(sk, enc, b"", b"ctx", cs.nh) == secret


@pytest.mark.parametrize("cs_id", PQ, ids=[f"suite{int(c)}" for c in PQ])
def test_pq_hpke_with_rng_derives_keys_and_round_trips(cs_id: CipherSuite) -> None:
    """In the post-quantum suites an ``rng`` fixes the keys and the X-Wing ephemeral X25519
    key, not the ML-KEM encapsulation: outputs differ, and open on every path."""
    cs = suite(cs_id)
    sk, pk = cs.hpke_key_pair(rng=SeededProvider(b"recipient").random)
    assert (sk, pk) == cs.hpke_key_pair(rng=SeededProvider(b"recipient").random)
    for aad in (b"", b"aad"):
        enc, ct = cs.hpke.seal(pk, b"info", aad, b"msg", rng=SeededProvider(b"s").random)
        assert (enc, ct) != cs.hpke.seal(pk, b"info", aad, b"msg", rng=SeededProvider(b"s").random)
        assert cs.hpke.open(sk, enc, b"info", aad, ct) == b"msg"
        assert cs.hpke.open_composed(sk, enc, b"info", aad, ct) == b"msg"
    enc, secret = cs.hpke.send_export(pk, b"", b"ctx", cs.nh, rng=SeededProvider(b"x").random)
    assert cs.hpke.receive_export(sk, enc, b"", b"ctx", cs.nh) == secret


def test_seal_with_rng_matches_rfc9180_a_1_1() -> None:
    """RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base
    mode — the ephemeral key is DeriveKeyPair(ikmE), exactly what ``rng`` feeds."""
    h = bytes.fromhex
    cs = suite(CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
    ikm_e = h("7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234")
    sk_r, pk_r = cs.derive_key_pair(
        h("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037")
    )
    assert sk_r == h("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    assert pk_r == h("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
    info = h("4f6465206f6e2061204772656369616e2055726e")
    pt = h("4265617574792069732074727574682c20747275746820626561757479")

    def fixed(n: int) -> bytes:
        assert n == len(ikm_e)
        return ikm_e

    enc, ct = cs.hpke.seal(pk_r, info, h("436f756e742d30"), pt, rng=fixed)
    assert enc == h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    assert ct == h(
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )
    enc, exported = cs.hpke.send_export(pk_r, info, b"", 32, rng=fixed)
    assert exported == h("3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee")


def _info(label: str, context: bytes) -> bytes:
    full = b"MLS 1.0 " + label.encode()
    return bytes([len(full)]) + full + bytes([len(context)]) + context


# --- Signers ---------------------------------------------------------------------------------


class _RemoteSigner:
    """A signer whose private key lives in another object it cannot read: here a closure
    standing in for an HSM or a signing service. It counts what it signs."""

    def __init__(self, cs_id: CipherSuite) -> None:
        cs = suite(cs_id)
        private, public = cs.signature_key_pair()

        def hsm_sign(message: bytes) -> bytes:
            return cs.signer.sign(private, message)

        self._hsm: Callable[[bytes], bytes] = hsm_sign
        self._public = public
        self.requests: list[bytes] = []

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        self.requests.append(message)
        return self._hsm(message)


@pytest.mark.parametrize("cs_id", ALL, ids=IDS)
def test_sign_with_label_with_an_external_signer(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    remote = _RemoteSigner(cs_id)
    signer: Signer = remote  # satisfies the protocol statically ...
    assert isinstance(remote, MessageSigner)  # ... and at run time
    sig = cs.sign_with_label(signer, "LeafNodeTBS", b"content")
    assert cs.verify_with_label(signer.public_key, "LeafNodeTBS", b"content", sig)
    assert not cs.verify_with_label(signer.public_key, "KeyPackageTBS", b"content", sig)
    # The signer was handed exactly the SignContent of RFC 9420 §5.1.2.
    label = b"MLS 1.0 LeafNodeTBS"
    assert remote.requests == [bytes([len(label)]) + label + b"\x07content"]


@pytest.mark.parametrize("cs_id", ALL, ids=IDS)
def test_key_signer(cs_id: CipherSuite) -> None:
    cs = suite(cs_id)
    sk, pk = cs.signature_key_pair()
    signer = KeySigner(cs_id, sk)
    assert signer.public_key == pk
    assert signer.private_key == sk
    sig = cs.sign_with_label(signer, "FramedContentTBS", b"c")
    assert cs.verify_with_label(pk, "FramedContentTBS", b"c", sig)
    # The raw key and the signer sign alike.
    sig2 = cs.sign_with_label(sk, "FramedContentTBS", b"c")
    assert cs.verify_with_label(pk, "FramedContentTBS", b"c", sig2)
    if cs_id in EDDSA:
        assert sig == sig2  # EdDSA is deterministic (RFC 8032)
    text = repr(signer)
    assert sk.hex() not in text and sk.hex()[:16] not in text and repr(sk) not in text
    assert "KeySigner" in text


def test_key_signer_generate_and_errors() -> None:
    cs_id = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519
    a = KeySigner.generate(cs_id, SeededProvider(b"id"))
    b = KeySigner.generate(cs_id, SeededProvider(b"id"))
    assert a.public_key == b.public_key
    assert a.sign(b"m") == b.sign(b"m")
    assert KeySigner.generate(cs_id).public_key != a.public_key
    with pytest.raises(CryptoError):
        KeySigner(cs_id, b"")


# --- The protocol core draws from rng --------------------------------------------------------


def _member_leaf(
    cs_id: CipherSuite, provider: SeededProvider, name: bytes
) -> tuple[LeafNode, bytes, bytes]:
    cs = suite(cs_id)
    sig_priv, sig_pub = cs.signature_key_pair(rng=provider.random)
    enc_priv, enc_pub = cs.hpke_key_pair(rng=provider.random)
    leaf = LeafNode(
        enc_pub,
        sig_pub,
        Credential.basic(name),
        Capabilities((1,), (int(cs_id),), (), (), (1,)),
        LeafNodeSource.key_package,
        Lifetime(0, 2**64 - 1),
        None,
        (),
        b"",
    )
    return sign_leaf_node(cs, sig_priv, leaf, None, None), sig_priv, enc_priv


def _seeded_path(cs_id: CipherSuite, seed: bytes) -> tuple[bytes, bytes, bytes]:
    """Five members from ``seed``; member 0 commits a path with ``rng``. Returns the encoded
    UpdatePath, the commit secret and what member 3 decrypts."""
    cs = suite(cs_id)
    provider = SeededProvider(seed)
    members = [_member_leaf(cs_id, provider, b"m%d" % i) for i in range(5)]
    tree = RatchetTree.with_one_leaf(cs, members[0][0])
    for leaf, _, _ in members[1:]:
        tree.add_leaf(leaf)
    receiver_tree = tree.copy()

    def context_for(tree_hash: bytes) -> bytes:
        return GroupContext(1, int(cs_id), b"group", 1, tree_hash, b"", ()).encode()

    committer = members[0][0]
    params = LeafNodeParams(committer.signature_key, committer.credential, committer.capabilities)
    created = create_update_path(
        tree, LeafIndex(0), params, members[0][1], b"group", context_for, rng=provider.random
    )
    path = created.update_path
    fdp = merge_update_path(receiver_tree, LeafIndex(0), path)
    _, path_secret, commit_secret = decrypt_update_path(
        receiver_tree,
        TreePrivateKeys(LeafIndex(3), {NodeIndex(6): members[3][2]}),
        LeafIndex(0),
        path,
        fdp,
        context_for(receiver_tree.tree_hash()),
    )
    assert commit_secret == created.commit_secret
    return path.encode(), created.commit_secret, path_secret


@pytest.mark.parametrize("cs_id", ALL, ids=IDS)
def test_update_path_is_deterministic_given_rng(cs_id: CipherSuite) -> None:
    a = _seeded_path(cs_id, b"run")
    b = _seeded_path(cs_id, b"run")
    assert a[1:] == b[1:]  # commit secret and path secrets: every suite
    if cs_id in EDDSA and cs_id not in PQ:
        assert a[0] == b[0]  # byte-identical UpdatePath (EdDSA is deterministic)
    assert _seeded_path(cs_id, b"other run")[1] != a[1]


def test_private_message_reuse_guard_from_rng() -> None:
    cs_id = CipherSuite.MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519
    cs = suite(cs_id)
    sig_priv, _ = cs.signature_key_pair(rng=SeededProvider(b"sig").random)
    content = FramedContent(b"group", 1, Sender.member(1), b"", ContentType.application, b"hello")
    context = GroupContext(1, int(cs_id), b"group", 1, b"tree", b"", ())
    signed = authenticate(cs, sig_priv, WireFormat.mls_private_message, content, context)

    def protect(rng: Callable[[int], bytes] | None) -> PrivateMessage:
        tree = SecretTree(cs, b"\x01" * cs.nh, 2)
        return protect_private_message(cs, signed, tree, b"\x02" * cs.nh, rng=rng)

    a = protect(SeededProvider(b"guard").random)
    assert a == protect(SeededProvider(b"guard").random)
    assert a != protect(SeededProvider(b"other").random)
    sender_data = decrypt_sender_data(cs, a, b"\x02" * cs.nh)
    assert sender_data.reuse_guard == SeededProvider(b"guard").random(4)
    # The default draws from os.urandom.
    assert protect(None) != protect(None)
