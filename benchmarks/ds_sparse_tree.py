"""What a mostly blank ratchet tree costs the Delivery Service (issue 18).

    .venv/bin/python benchmarks/ds_sparse_tree.py [--log2 12 14 16 18]

For each width 2^k, a valid GroupInfo whose tree holds two members (the first and the last
leaf, everything else blank) is registered with a real DS (SQLite, loopback); prints its size,
the status and the time the DS took to answer. A blank node is one byte on the wire, but
validating the tree hashes every node, so without a bound the time grows with the width.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mlspy.crypto import suite
from mlspy.ds.app import create_app
from mlspy.ds.client import DSClient, DSRequestError
from mlspy.ds.db import SQLiteDatabase
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.group.welcome import sign_group_info
from mlspy.messages import MLSMessage, Node
from mlspy.messages import RatchetTree as RatchetTreeExtension
from mlspy.tree.math import LeafIndex
from mlspy.tree.ratchet_tree import RatchetTree


def sparse_group_info(owner: SigningIdentity, other: SigningIdentity, leaves: int) -> bytes:
    group = Group.create(owner)
    state = group._state.epoch
    cs = suite(1)
    nodes: list[Node | None] = [None] * (2 * leaves - 1)
    nodes[0] = state.tree.to_nodes()[0]
    nodes[-1] = Node.leaf(create_key_package(other).key_package.leaf_node)
    tree = RatchetTree.from_nodes(cs, nodes)
    context = replace(state.context, tree_hash=tree.tree_hash())
    exts = (RatchetTreeExtension(tree.to_nodes()).to_extension(),)
    gi = sign_group_info(cs, owner.signing_key, context, exts, state.confirmation_tag, LeafIndex(0))
    return MLSMessage.wrap(gi).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2", type=int, nargs="+", default=[12, 14, 16, 18])
    args = parser.parse_args()
    service = DeliveryService(SQLiteDatabase(Path(tempfile.mkdtemp()) / "ds.sqlite"))
    print(f"{'leaves':>8} {'bytes':>9} {'status':>6} {'seconds':>8}")
    with InProcessServer(create_app(service)) as server:
        for k in args.log2:
            owner = SigningIdentity.generate(f"owner{k}".encode())
            other = SigningIdentity.generate(f"other{k}".encode())
            for identity in (owner, other):
                client = DSClient(server.url, identity)
                client.register()
            client = DSClient(server.url, owner)
            client.login()
            data = sparse_group_info(owner, other, 1 << k)
            started = time.perf_counter()
            try:
                client.create_group(data)
                status = 200
            except DSRequestError as exc:
                status = exc.status
            print(f"{1 << k:>8} {len(data):>9} {status:>6} {time.perf_counter() - started:>8.2f}")


if __name__ == "__main__":
    main()
