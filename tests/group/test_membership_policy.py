"""The group's membership policy (``group/policy.py``): join requests, external joins and what
a member who is not an admin may commit — refused alike by members and by the public view a
Delivery Service runs (``reject``), and refused before sending by an mlspy committer."""

from __future__ import annotations

import pytest

from group_helpers import (
    commit_and_deliver,
    forge_commit,
    forge_external_commit,
    make_identities,
    new_kp,
    reject,
)
from mlspy.errors import PolicyError
from mlspy.group import (
    Group,
    Joins,
    MembershipPolicy,
    SigningIdentity,
    create_key_package,
    join_external,
    new_member_add_proposal,
    policy_in,
)
from mlspy.messages import GroupContextExtensions, Proposal, Remove


def policy_group(
    n: int = 3, joins: Joins = Joins.invite, admins: tuple[bytes, ...] = ()
) -> list[Group]:
    from group_helpers import make_group

    ext = MembershipPolicy(joins, admins).to_extension()
    return make_group(n, identities=make_identities(n), extensions=(ext,))


def join_request(group: Group, name: bytes = b"outsider") -> bytes:
    identity = SigningIdentity.generate(name)
    kp = create_key_package(identity).key_package
    return new_member_add_proposal(group.group_id, group.epoch, kp, identity.signature_private_key)


def test_the_policy_round_trips_and_a_group_without_one_has_none() -> None:
    policy = MembershipPolicy(Joins.request, (b"alice", b"bob"))
    assert MembershipPolicy.decode(policy.encode()) == policy
    groups = policy_group(2, Joins.open)
    assert policy_in(groups[1].state.epoch.context.extensions) == MembershipPolicy(Joins.open)
    assert policy_in(()) is None


def test_an_invite_only_group_refuses_join_requests() -> None:
    groups = policy_group(3, Joins.invite)
    reject(groups[1], join_request(groups[0]), PolicyError, "join requests")


def test_a_group_that_takes_requests_caches_them_until_a_member_commits() -> None:
    groups = policy_group(3, Joins.request)
    request = join_request(groups[0])
    for g in groups:
        g.process(request)
    # A member that does not admit the request commits without it (§12.2 "application policy").
    out = groups[1].commit(admit=lambda q: q.sender.leaf_index is not None)
    assert out.welcome is None
    groups[1].clear_pending_commit()
    out = groups[1].commit()  # the approval
    assert out.welcome is not None


def test_an_outsiders_external_commit_needs_an_open_group() -> None:
    groups = policy_group(3, Joins.request)
    outsider = SigningIdentity.generate(b"outsider")
    reject(groups[1], forge_external_commit(groups[0], outsider), PolicyError, "external joins")
    with pytest.raises(PolicyError):  # and an mlspy joiner does not even send it
        join_external(groups[0].group_info(), outsider)
    open_groups = policy_group(3, Joins.open)
    _joined, commit = join_external(open_groups[0].group_info(), outsider)
    open_groups[1].process(commit)


def test_a_member_resyncs_but_a_removed_member_does_not_come_back() -> None:
    ids = make_identities(3)
    from group_helpers import make_group

    groups = make_group(3, identities=ids, extensions=(MembershipPolicy().to_extension(),))
    # Member 2 lost its state: it rejoins by replacing its own leaf.
    _g, commit = join_external(groups[0].group_info(), ids[2], remove_prior=2)
    staged = groups[1].process(commit)
    assert staged is not None
    # Removed, it cannot come back by itself.
    commit_and_deliver(groups[:2], groups[0], [Proposal(Remove(2))])
    with pytest.raises(PolicyError):
        join_external(groups[0].group_info(), ids[2])
    reject(groups[1], forge_external_commit(groups[0], ids[2]), PolicyError, "external joins")


def test_only_admins_add_remove_and_change_the_group() -> None:
    groups = policy_group(3, Joins.invite, admins=(b"member-0",))
    # A member who is not an admin may not add, remove another, or change the policy ...
    reject(groups[2], forge_commit(groups[1], [new_kp()]), PolicyError, "only an admin")
    reject(groups[2], forge_commit(groups[1], [Proposal(Remove(2))]), PolicyError, "remove")
    gce = Proposal(GroupContextExtensions((MembershipPolicy(Joins.open).to_extension(),)))
    reject(groups[2], forge_commit(groups[1], [gce]), PolicyError, "only an admin")
    with pytest.raises(PolicyError):  # ... and an mlspy client refuses to send it
        groups[1].commit([new_kp()])
    # ... but updates, and commits a member's own request to leave.
    commit_and_deliver(groups, groups[1])
    leave = groups[2].propose_remove(2)
    groups[0].process(leave)
    groups[1].process(leave)
    out = groups[1].commit()
    groups[1].merge_pending_commit()
    groups[0].merge_staged_commit(groups[0].process(out.commit))  # type: ignore[arg-type]
    # The admin adds and changes the policy.
    commit_and_deliver(groups[:2], groups[0], [new_kp()])
    commit_and_deliver(groups[:2], groups[0], [gce])
    assert policy_in(groups[1].state.epoch.context.extensions) == MembershipPolicy(Joins.open)


def test_a_malformed_policy_is_refused() -> None:
    from mlspy.messages import Extension, ExtensionType

    groups = policy_group(3, Joins.invite)
    bad = Extension(ExtensionType.mlspy_membership_policy, b"\x07\x00")
    gce = Proposal(GroupContextExtensions((bad,)))
    reject(groups[2], forge_commit(groups[1], [gce]), PolicyError, "malformed")
