"""Vector kinds ``secret-tree``, ``key-schedule`` and ``psk_secret``."""

from __future__ import annotations

from mlspy.crypto import suite
from mlspy.messages import GroupContext, PreSharedKeyID
from mlspy.schedule.key_schedule import advance_epoch, external_key_pair, mls_exporter
from mlspy.schedule.psk import compute_psk_secret
from mlspy.schedule.secret_tree import RatchetType, SecretTree, sender_data_key_nonce
from mlspy.tree.math import LeafIndex
from mlspy.vectors.check import Entry, expect_eq, h

_EPOCH_FIELDS = (
    "joiner_secret",
    "welcome_secret",
    "init_secret",
    "sender_data_secret",
    "encryption_secret",
    "exporter_secret",
    "epoch_authenticator",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
)


def check_secret_tree(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    sd = e["sender_data"]
    key, nonce = sender_data_key_nonce(cs, h(sd["sender_data_secret"]), h(sd["ciphertext"]))
    expect_eq("sender_data.key", key, h(sd["key"]))
    expect_eq("sender_data.nonce", nonce, h(sd["nonce"]))
    tree = SecretTree(cs, h(e["encryption_secret"]), len(e["leaves"]))
    for i, generations in enumerate(e["leaves"]):
        leaf = LeafIndex(i)
        for g in generations:
            gen = g["generation"]
            hs = tree.key_for(leaf, RatchetType.HANDSHAKE, gen)
            app = tree.key_for(leaf, RatchetType.APPLICATION, gen)
            expect_eq(f"leaf {i} gen {gen} handshake_key", hs.key, h(g["handshake_key"]))
            expect_eq(f"leaf {i} gen {gen} handshake_nonce", hs.nonce, h(g["handshake_nonce"]))
            expect_eq(f"leaf {i} gen {gen} application_key", app.key, h(g["application_key"]))
            expect_eq(f"leaf {i} gen {gen} application_nonce", app.nonce, h(g["application_nonce"]))


def check_key_schedule(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    init_secret = h(e["initial_init_secret"])
    for i, ep in enumerate(e["epochs"]):
        ctx = GroupContext(
            version=1,
            cipher_suite=e["cipher_suite"],
            group_id=h(e["group_id"]),
            epoch=i,
            tree_hash=h(ep["tree_hash"]),
            confirmed_transcript_hash=h(ep["confirmed_transcript_hash"]),
            extensions=(),
        ).encode()
        expect_eq(f"epoch {i} group_context", ctx, h(ep["group_context"]))
        secrets = advance_epoch(cs, init_secret, h(ep["commit_secret"]), h(ep["psk_secret"]), ctx)
        for field in _EPOCH_FIELDS:
            expect_eq(f"epoch {i} {field}", getattr(secrets, field), h(ep[field]))
        _, external_pub = external_key_pair(cs, secrets.external_secret)
        expect_eq(f"epoch {i} external_pub", external_pub, h(ep["external_pub"]))
        x = ep["exporter"]
        exported = mls_exporter(
            cs, secrets.exporter_secret, x["label"], h(x["context"]), x["length"]
        )
        expect_eq(f"epoch {i} exporter.secret", exported, h(x["secret"]))
        init_secret = secrets.init_secret


def check_psk_secret(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    psks = [
        (
            PreSharedKeyID.external(h(p["psk_id"]), h(p["psk_nonce"])).encode(),
            h(p["psk"]),
        )
        for p in e["psks"]
    ]
    expect_eq("psk_secret", compute_psk_secret(cs, psks), h(e["psk_secret"]))
