"""Vector kinds ``welcome`` and ``passive-client`` (every ``passive-client-*.json`` file)."""

from __future__ import annotations

from mlspy.crypto import suite
from mlspy.group.group import Group
from mlspy.group.key_package import KeyPackageBundle, key_package_ref
from mlspy.group.state import GroupConfig, StagedCommit
from mlspy.group.welcome import GROUP_INFO_TBS, WELCOME
from mlspy.messages import GroupInfo, GroupSecrets, KeyPackage, MLSMessage, Welcome
from mlspy.schedule.key_schedule import (
    compute_welcome_secret,
    epoch_from_joiner,
    welcome_key_nonce,
)
from mlspy.vectors.check import CheckFailed, Entry, expect, expect_eq, h

# Vectors were generated in the past: their KeyPackage lifetimes may have ended. Receivers
# are only RECOMMENDED to check lifetimes (RFC 9420 §7.3), so replay without that check.
# Recorded vectors: no clock, and leaves as long-lived as their generators made them.
_REPLAY = GroupConfig(check_lifetimes=False, max_leaf_lifetime=None)


def _key_package(data: str) -> KeyPackage:
    msg = MLSMessage.decode(h(data))
    if msg.key_package is None:
        raise CheckFailed("key_package", "not an MLSMessage(KeyPackage)")
    return msg.key_package


def _welcome(data: str) -> Welcome:
    msg = MLSMessage.decode(h(data))
    if msg.welcome is None:
        raise CheckFailed("welcome", "not an MLSMessage(Welcome)")
    return msg.welcome


def check_welcome(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    kp = _key_package(e["key_package"])
    welcome = _welcome(e["welcome"])
    ref = key_package_ref(kp)
    entry = next((s for s in welcome.secrets if s.new_member == ref), None)
    expect("welcome has an entry for key_package", entry is not None)
    assert entry is not None
    plaintext = cs.decrypt_with_label(
        h(e["init_priv"]),
        WELCOME,
        welcome.encrypted_group_info,
        entry.encrypted_group_secrets.kem_output,
        entry.encrypted_group_secrets.ciphertext,
    )
    secrets = GroupSecrets.decode(plaintext)
    welcome_secret = compute_welcome_secret(cs, secrets.joiner_secret, None)
    key, nonce = welcome_key_nonce(cs, welcome_secret)
    group_info = GroupInfo.decode(cs.aead_open(key, nonce, b"", welcome.encrypted_group_info))
    expect(
        "group_info signature",
        cs.verify_with_label(
            h(e["signer_pub"]), GROUP_INFO_TBS, group_info.tbs(), group_info.signature
        ),
    )
    ctx = group_info.group_context
    epoch = epoch_from_joiner(cs, secrets.joiner_secret, None, ctx.encode())
    expect(
        "confirmation_tag",
        cs.verify_mac(
            epoch.confirmation_key, ctx.confirmed_transcript_hash, group_info.confirmation_tag
        ),
    )


def check_passive_client(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    kp = _key_package(e["key_package"])
    expect_eq("init_priv", cs.hpke_public_key(h(e["init_priv"])), kp.init_key)
    expect_eq(
        "encryption_priv",
        cs.hpke_public_key(h(e["encryption_priv"])),
        kp.leaf_node.encryption_key,
    )
    expect_eq(
        "signature_priv",
        cs.signature_public_key(h(e["signature_priv"])),
        kp.leaf_node.signature_key,
    )
    bundle = KeyPackageBundle(
        kp, h(e["init_priv"]), h(e["encryption_priv"]), h(e["signature_priv"])
    )
    psks = {h(p["psk_id"]): h(p["psk"]) for p in e["external_psks"]}
    tree = h(e["ratchet_tree"]) if e["ratchet_tree"] else None
    group = Group.join(
        h(e["welcome"]), bundle, ratchet_tree=tree, external_psks=psks, config=_REPLAY
    )
    expect_eq(
        "initial_epoch_authenticator",
        group.epoch_authenticator,
        h(e["initial_epoch_authenticator"]),
    )
    for i, ep in enumerate(e["epochs"]):
        for p in ep["proposals"]:
            group.process(h(p))
        staged = group.process(h(ep["commit"]))
        expect(f"epoch {i}: commit yields a staged commit", isinstance(staged, StagedCommit))
        assert isinstance(staged, StagedCommit)
        group.merge_staged_commit(staged)
        expect_eq(
            f"epoch {i}: epoch_authenticator",
            group.epoch_authenticator,
            h(ep["epoch_authenticator"]),
        )
