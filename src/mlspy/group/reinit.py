"""Reinitialization and subgroup branching (RFC 9420 §11.2, §11.3).

Both start a new group whose first commit (epoch 0 -> 1) adds the members and injects a
resumption PSK of the old group: usage ``reinit`` (after a committed ReInit; the new group's
id, version, cipher suite and extensions are the ReInit's) or ``branch`` (same version and
suite, a subset of the members). Joiners pass the old group's resumption PSKs to
``Group.join`` and check the link with :func:`check_successor`.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlspy.errors import GroupStateError, UsageError, WelcomeError
from mlspy.group.group import Group
from mlspy.group.identity import SigningIdentity
from mlspy.group.key_package import as_key_package
from mlspy.group.state import CommitOutput, GroupConfig
from mlspy.messages import (
    Add,
    KeyPackage,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    PSKType,
    ResumptionPSKUsage,
)


def _successor(
    old: Group,
    identity: SigningIdentity,
    group_id: bytes,
    extensions: tuple[object, ...],
    key_packages: Sequence[KeyPackage | bytes | MLSMessage],
    usage: ResumptionPSKUsage,
    config: GroupConfig | None,
) -> tuple[Group, CommitOutput]:
    psk = old.resumption_psk()
    if psk is None:  # pragma: no cover - the current epoch's PSK is always retained
        raise GroupStateError("no resumption PSK for the current epoch")
    new = Group.create(
        identity,
        group_id=group_id,
        extensions=extensions,  # type: ignore[arg-type]
        config=config or old.config,
    )
    new.add_resumption_psk(old.group_id, old.epoch, psk)
    psk_id = PreSharedKeyID.resumption(
        usage, old.group_id, old.epoch, new.config.provider.random(new.cipher_suite.nh)
    )
    proposals = [Proposal(Add(as_key_package(kp))) for kp in key_packages]
    proposals.append(Proposal(PreSharedKey(psk_id)))
    out = new.commit(proposals, resumption_usage=usage)
    new.merge_pending_commit()
    return new, out


def reinit_successor(
    old: Group,
    key_packages: Sequence[KeyPackage | bytes | MLSMessage],
    *,
    identity: SigningIdentity | None = None,
    config: GroupConfig | None = None,
) -> tuple[Group, CommitOutput]:
    """Create the group that replaces ``old`` after its ReInit commit (§11.2).

    ``identity`` must be given when the ReInit changes the cipher suite."""
    reinit = old.reinit
    if reinit is None:
        raise GroupStateError("the group was not closed by a ReInit commit")
    ident = identity or old.identity
    if ident.cipher_suite != reinit.cipher_suite:
        raise UsageError("the ReInit changes the cipher suite: pass an identity for it")
    return _successor(
        old,
        ident,
        reinit.group_id,
        reinit.extensions,
        key_packages,
        ResumptionPSKUsage.reinit,
        config,
    )


def branch(
    old: Group,
    key_packages: Sequence[KeyPackage | bytes | MLSMessage],
    *,
    group_id: bytes | None = None,
    config: GroupConfig | None = None,
) -> tuple[Group, CommitOutput]:
    """Branch a subgroup of ``old`` with some of its members' new KeyPackages (§11.3)."""
    if not old.active:
        raise GroupStateError("cannot branch from a group we no longer belong to")
    provider = (config or old.config).provider
    return _successor(
        old,
        old.identity,
        group_id if group_id is not None else provider.random(old.cipher_suite.nh),
        old.extensions,
        key_packages,
        ResumptionPSKUsage.branch,
        config,
    )


def check_successor(new: Group, old: Group) -> None:
    """Joiner-side checks that ``new`` is a valid reinit or branch successor of ``old``
    (§11.2, §11.3, §12.4.3.1): epoch 1, the PSK names ``old``, and for reinit the ReInit's
    parameters; for branch the same version and cipher suite and a subset of the members."""
    links = [
        p
        for p in new.welcome_psks
        if p.psktype == PSKType.resumption
        and p.usage in (ResumptionPSKUsage.reinit, ResumptionPSKUsage.branch)
    ]
    if len(links) != 1 or links[0].psk_group_id != old.group_id:
        raise WelcomeError(
            "the new group does not name the old group in a resumption PSK", rule="RB-03"
        )
    if new.epoch != 1:
        raise WelcomeError("a successor group must start at epoch 1", rule="RB-02")
    if links[0].usage == ResumptionPSKUsage.reinit:
        _check_reinit_successor(new, old)
    else:
        _check_branch(new, old)


def _check_reinit_successor(new: Group, old: Group) -> None:
    """§11.2: the ReInit's group id, version, suite and extensions, and every old member."""
    reinit = old.reinit
    if reinit is None:
        raise WelcomeError("the old group's last commit was not a ReInit", rule="RB-04")
    ctx = new.context
    expected = (reinit.group_id, reinit.version, reinit.cipher_suite, reinit.extensions)
    if (ctx.group_id, ctx.version, ctx.cipher_suite, ctx.extensions) != expected:
        raise WelcomeError("the new group does not match the ReInit proposal", rule="RB-05")
    new_ids = {m.credential for m in new.members()}
    if any(m.credential not in new_ids for m in old.members()):
        raise WelcomeError(
            "a reinitialized group must keep every member of the old one", rule="RB-06"
        )


def _check_branch(new: Group, old: Group) -> None:
    """§11.3: the same version and suite, and only members of the old group."""
    if (new.context.cipher_suite, new.context.version) != (
        old.context.cipher_suite,
        old.context.version,
    ):
        raise WelcomeError("a branch keeps the version and cipher suite", rule="RB-07")
    old_ids = {m.credential for m in old.members()}
    if any(m.credential not in old_ids for m in new.members()):
        raise WelcomeError("a branch may only contain members of the old group", rule="RB-08")
