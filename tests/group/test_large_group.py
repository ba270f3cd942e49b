"""A 1,000-member group is built and every member processes a commit (RFC 9420 §12).

Times are printed (run with ``-s`` to see them), never asserted: performance is measured by
the scripts in ``benchmarks/``.
"""

from __future__ import annotations

import time

import pytest

from mlspy.group import Group, GroupConfig, SigningIdentity, StagedCommit, create_key_package
from mlspy.messages import Add, Proposal, Remove

N = 1000


@pytest.mark.slow
def test_thousand_members_each_process_a_commit() -> None:
    t0 = time.perf_counter()
    identities = [SigningIdentity.generate(f"member-{i}".encode()) for i in range(N)]
    bundles = [create_key_package(identity) for identity in identities[1:]]
    # The tree goes out of band, as a Delivery Service cache would serve it.
    config = GroupConfig(ratchet_tree_extension=False)
    creator = Group.create(identities[0], config=config)
    out = creator.commit([Proposal(Add(b.key_package)) for b in bundles])
    creator.merge_pending_commit()
    assert out.welcome is not None
    t1 = time.perf_counter()
    tree = creator.tree
    members = [creator] + [
        Group.join(out.welcome, bundle, ratchet_tree=tree, config=config) for bundle in bundles
    ]
    t2 = time.perf_counter()
    assert len(creator.members()) == N

    # A member in the middle removes another and refreshes its path; all others follow.
    committer = members[N // 2]
    out = committer.commit([Proposal(Remove(7))], force_path=True)
    committer.merge_pending_commit()
    t3 = time.perf_counter()
    for i, member in enumerate(members):
        if member is committer:
            continue
        staged = member.process(out.commit)
        assert isinstance(staged, StagedCommit)
        member.merge_staged_commit(staged)
        if i != 7:
            assert member.epoch_authenticator == committer.epoch_authenticator
    t4 = time.perf_counter()
    assert not members[7].active
    print(
        f"\n{N} members: add commit {t1 - t0:.1f}s, {N - 1} joins {t2 - t1:.1f}s "
        f"({(t2 - t1) / (N - 1) * 1000:.1f} ms each), commit {t3 - t2:.2f}s, "
        f"{N - 1} members process it {t4 - t3:.1f}s ({(t4 - t3) / (N - 1) * 1000:.1f} ms each)"
    )
