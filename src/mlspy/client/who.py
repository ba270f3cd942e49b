"""Who did what to whom in a commit, as the application is told it (``events.py``)."""

from __future__ import annotations

from mlspy.client.events import (
    DeviceAdded,
    DeviceRemoved,
    EpochChanged,
    Event,
    KeysUpdated,
    MemberAdded,
    MemberLeft,
    MemberRemoved,
)
from mlspy.group import Group, StagedCommit
from mlspy.messages import Remove, SenderType
from mlspy.tree.math import LeafIndex
from mlspy.users import split_identity, user_of


def member_devices(group: Group) -> dict[str, tuple[str, ...]]:
    """Each user of the group and the names of its devices in it (``""``: the bare name)."""
    out: dict[str, list[str]] = {}
    for m in group.members():
        user, device = split_identity(m.credential.identity)
        out.setdefault(user, []).append(device)
    return {user: tuple(devices) for user, devices in out.items()}


def leave_requests(group: Group) -> set[str]:
    """Users who asked to leave: a pending Remove proposed by one of the removed user's own
    devices (a member cannot commit its own removal, RFC 9420 §12.2)."""
    out = set()
    tree = group.state.epoch.tree
    for q in group.pending_proposals:
        body = q.proposal.body
        if not isinstance(body, Remove) or q.sender.sender_type != SenderType.member:
            continue
        if q.sender.leaf_index is None:
            continue
        proposer = tree.leaf(LeafIndex(q.sender.leaf_index))
        removed = tree.leaf(LeafIndex(body.removed))
        if proposer is not None and removed is not None:
            user = user_of(removed.credential.identity)
            if user_of(proposer.credential.identity) == user:
                out.add(user)
    return out


def commit_events(
    group: Group,
    staged: StagedCommit,
    before: dict[str, tuple[str, ...]],
    leaving: set[str],
) -> list[Event]:
    """The events of a merged commit (``group`` after it): users added and removed (or who
    left), devices added and removed, keys updated when nothing else changed, then the new
    epoch. ``before``: the users and devices before it; ``leaving``: users who asked."""
    gid, epoch = group.group_id, group.epoch
    by, by_device = ("", "")
    if staged.committer is not None:
        by, by_device = split_identity(staged.committer.identity)
    after = member_devices(group)
    events: list[Event] = []
    for user in after.keys() - before.keys():
        events.append(MemberAdded(gid, epoch, user=user, devices=after[user], by=by))
    for user in sorted(before.keys() & after.keys()):
        for device in sorted(set(after[user]) - set(before[user])):
            events.append(DeviceAdded(gid, epoch, user=user, device=device, by=by))
        for device in sorted(set(before[user]) - set(after[user])):
            events.append(DeviceRemoved(gid, epoch, user=user, device=device, by=by))
    for user in sorted(before.keys() - after.keys()):
        if user in leaving:
            events.append(MemberLeft(gid, epoch, user=user, by=by))
        else:
            events.append(MemberRemoved(gid, epoch, user=user, by=by))
    if not events and staged.committer is not None:
        events.append(KeysUpdated(gid, epoch, user=by, device=by_device))
    events.append(EpochChanged(gid, epoch, members=tuple(after), by=by, device=by_device))
    return events


__all__ = ["commit_events", "leave_requests", "member_devices"]
