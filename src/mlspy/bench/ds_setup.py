"""The groups of ``mlspy bench-ds``, made through the Delivery Service as real clients make
them: each member registers (open registration) and logs in, the receivers upload a KeyPackage,
the group's sender creates the group at the DS, claims its members' KeyPackages and commits
their Adds (in batches, with the Welcome and the GroupInfo).

Receivers never process the Welcome: they only receive bytes, and in a group with public
handshakes the DS puts every registered client the commit adds on the group's delivery list
(``DeliveryService.submit``), so a receiver is a token and nothing more. Only the sender keeps
an MLS state, from which the benchmark encrypts its application messages.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mlspy.ds.client import DSClient, DSRequestError
from mlspy.group import Group, KeyPackageBundle, SigningIdentity, create_key_package
from mlspy.messages import MLSMessage

# Adds per commit: a commit and its Welcome grow by a few hundred bytes per added member and
# the DS takes requests of a few MB; 100 keeps each request small and quick to judge.
ADD_BATCH = 100
THREADS = 8


@dataclass(frozen=True)
class Endpoint:
    """A client of the benchmark: the DS node it talks to (index into the URLs) and its
    bearer token."""

    node: int
    token: str


@dataclass
class BenchGroup:
    """One group: its sender's MLS state (in the parent only) and everybody's endpoints."""

    index: int
    group: Group
    sender: Endpoint
    receivers: list[Endpoint]

    @property
    def group_id(self) -> bytes:
        return self.group.group_id


@dataclass
class _Member:
    name: bytes
    node: int
    ds: DSClient
    bundle: KeyPackageBundle | None


def _register(urls: Sequence[str], name: bytes, node: int, key_package: bool) -> _Member:
    identity = SigningIdentity.generate(name)
    # Plain http:// on loopback: not loading the CA bundle saves 20 ms a client.
    ds = DSClient(urls[node], identity, verify=False)
    ds.register()
    ds.login()
    bundle = create_key_package(identity) if key_package else None
    if bundle is not None:
        ds.upload_key_packages([bundle])
    return _Member(name, node, ds, bundle)


def _build(index: int, members: list[_Member]) -> BenchGroup:
    sender, receivers = members[0], members[1:]
    group = Group.create(sender.ds.identity)
    sender.ds.create_group(group.group_info())
    claiming = True
    for start in range(0, len(receivers), ADD_BATCH):
        key_packages = []
        for m in receivers[start : start + ADD_BATCH]:
            if claiming:
                try:
                    key_packages.append(MLSMessage.decode(sender.ds.claim_key_package(m.name)))
                    continue
                except DSRequestError as exc:
                    # The DS limits how many KeyPackages one client claims an hour (RFC 9750
                    # §8.4.3); a larger group gets the rest from its members directly, as
                    # MLS allows. They were uploaded, so the DS still routes the Welcome.
                    if exc.status != 429:
                        raise
                    claiming = False
            assert m.bundle is not None  # receivers have one
            key_packages.append(MLSMessage.wrap(m.bundle.key_package))
        out = group.commit(add=key_packages)
        sender.ds.submit(group.group_id, out.commit, welcome=out.welcome, group_info=out.group_info)
        group.merge_pending_commit()
    return BenchGroup(
        index,
        group,
        _endpoint(sender),
        [_endpoint(m) for m in receivers],
    )


def _endpoint(member: _Member) -> Endpoint:
    assert member.ds.token is not None  # logged in by _register
    return Endpoint(member.node, member.ds.token)


def build_groups(
    urls: Sequence[str], groups: int, size: int, progress: Callable[[str], None]
) -> list[BenchGroup]:
    """``groups`` groups of ``size`` members; member ``i`` of all uses node ``i % len(urls)``."""
    run = os.urandom(4).hex()  # fresh names: a reused database (``--url``) has the old ones
    plan = [
        (f"bench-{run}-g{g}-m{m}".encode(), (g * size + m) % len(urls), m > 0)
        for g in range(groups)
        for m in range(size)
    ]
    began = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        members = list(pool.map(lambda p: _register(urls, *p), plan))
        progress(f"setup: {len(members)} clients registered in {time.monotonic() - began:.1f}s")
        began = time.monotonic()
        try:
            built = list(
                pool.map(
                    lambda g: _build(g, members[g * size : (g + 1) * size]),
                    range(groups),
                )
            )
        finally:
            for m in members:
                m.ds.close()
    progress(f"setup: {groups} groups of {size} members in {time.monotonic() - began:.1f}s")
    return built
