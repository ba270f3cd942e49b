"""Vector kinds ``tree-math``, ``deserialization`` and ``crypto-basics``."""

from __future__ import annotations

from mlspy.codec import Reader
from mlspy.crypto import suite
from mlspy.tree.math import NodeIndex, left, level, node_width, parent, right, root, sibling
from mlspy.vectors.check import Entry, expect, expect_eq, h


def check_tree_math(e: Entry) -> None:
    n = e["n_leaves"]
    expect_eq("n_nodes", node_width(n), e["n_nodes"])
    expect_eq("root", root(n), e["root"])
    r = root(n)
    for i in range(node_width(n)):
        x = NodeIndex(i)
        leaf = level(x) == 0
        expect_eq(f"left[{i}]", None if leaf else left(x), e["left"][i])
        expect_eq(f"right[{i}]", None if leaf else right(x), e["right"][i])
        expect_eq(f"parent[{i}]", None if x == r else parent(x, n), e["parent"][i])
        expect_eq(f"sibling[{i}]", None if x == r else sibling(x, n), e["sibling"][i])


def check_deserialization(e: Entry) -> None:
    r = Reader(h(e["vlbytes_header"]))
    expect_eq("length", r.varint(), e["length"])
    expect("header fully consumed", r.remaining == 0)


def check_crypto_basics(e: Entry) -> None:
    cs = suite(e["cipher_suite"])
    v = e["ref_hash"]
    expect_eq("ref_hash", cs.ref_hash(v["label"], h(v["value"])), h(v["out"]))
    v = e["expand_with_label"]
    out = cs.expand_with_label(h(v["secret"]), v["label"], h(v["context"]), v["length"])
    expect_eq("expand_with_label", out, h(v["out"]))
    v = e["derive_secret"]
    expect_eq("derive_secret", cs.derive_secret(h(v["secret"]), v["label"]), h(v["out"]))
    v = e["derive_tree_secret"]
    out = cs.derive_tree_secret(h(v["secret"]), v["label"], v["generation"], v["length"])
    expect_eq("derive_tree_secret", out, h(v["out"]))

    v = e["sign_with_label"]
    pub, priv, label, content = h(v["pub"]), h(v["priv"]), v["label"], h(v["content"])
    expect(
        "sign_with_label: verify given signature",
        cs.verify_with_label(pub, label, content, h(v["signature"])),
    )
    sig = cs.sign_with_label(priv, label, content)
    expect("sign_with_label: verify own signature", cs.verify_with_label(pub, label, content, sig))

    v = e["encrypt_with_label"]
    priv, pub, label, ctx, pt = (
        h(v["priv"]),
        h(v["pub"]),
        v["label"],
        h(v["context"]),
        h(v["plaintext"]),
    )
    got = cs.decrypt_with_label(priv, label, ctx, h(v["kem_output"]), h(v["ciphertext"]))
    expect_eq("encrypt_with_label: decrypt given ciphertext", got, pt)
    kem_output, ct = cs.encrypt_with_label(pub, label, ctx, pt)
    got = cs.decrypt_with_label(priv, label, ctx, kem_output, ct)
    expect_eq("encrypt_with_label: decrypt own ciphertext", got, pt)
