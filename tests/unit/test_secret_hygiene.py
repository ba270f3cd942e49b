"""No object shows secret bytes in its repr/str, and no secret reaches the logs."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from mlspy.ds.server import InProcessServer
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import Add, Proposal
from mlspy.schedule.secret_tree import RatchetType
from mlspy.tree.math import LeafIndex


def _secrets_of(group: Group, extra: list[bytes]) -> set[bytes]:
    epoch = group.state.epoch
    found = {getattr(epoch.secrets, f.name) for f in dataclasses.fields(epoch.secrets)}
    if epoch.private is not None:
        found |= set(epoch.private.keys.values())
    found |= set(epoch.secret_tree._nodes.values())
    for r in epoch.secret_tree._ratchets.values():
        found.add(r.secret)
        for key, nonce in (r.retained or {}).values():
            found |= {key, nonce}
    found.add(group.identity.signature_private_key)
    found |= set(extra)
    return {s for s in found if len(s) >= 16}


def _leaks(text: str, secrets: set[bytes]) -> list[str]:
    return [s.hex() for s in secrets if s.hex() in text or repr(s)[2:-1] in text]


def _scenario() -> tuple[Group, Group, list[object], set[bytes]]:
    alice = Group.create(SigningIdentity.generate(b"alice"))
    bundle = create_key_package(SigningIdentity.generate(b"bob"))
    out = alice.commit([Proposal(Add(bundle.key_package))], force_path=True)
    pending = alice.state.pending
    alice.merge_pending_commit()
    bob = Group.join(out.welcome or b"", bundle)
    bob.process(alice.encrypt_application(b"x"))
    alice.encrypt_application(b"y")
    lookup = bob.state.epoch.secret_tree.lookup(LeafIndex(0), RatchetType.APPLICATION, 3)
    objects: list[object] = [
        alice.state.epoch,
        alice.state.epoch.secrets,
        alice.state.epoch.private,
        bob.state.epoch,
        bob.state.epoch.private,
        bundle,
        alice.identity,
        pending,
        lookup,
        lookup.key,
        *bob.state.epoch.secret_tree._ratchets.values(),
    ]
    extra = [
        bundle.init_private_key,
        bundle.encryption_private_key,
        lookup.key.key,
        lookup.key.nonce,
    ]
    secrets = _secrets_of(alice, extra) | _secrets_of(bob, [])
    return alice, bob, objects, secrets


def test_no_secret_in_any_repr() -> None:
    _, _, objects, secrets = _scenario()
    assert len(secrets) > 10
    for obj in objects:
        for text in (repr(obj), str(obj)):
            assert not _leaks(text, secrets), f"{type(obj).__name__} shows a secret"


def test_no_secret_reaches_the_logs(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from mlspy.client import Client

    caplog.set_level(logging.DEBUG)

    async def scenario() -> list[Client]:
        alice, bob = Client(server.url, "alice"), Client(server.url, "bob")
        await alice.start()
        await bob.start()
        gid = await alice.create_group()
        await alice.invite(gid, "bob")
        await bob.sync()
        await bob.send(gid, "secret plans")
        await alice.sync()
        await alice.remove(gid, "nobody")  # a no-op intent
        return [alice, bob]

    clients = asyncio.run(scenario())
    secrets: set[bytes] = set()
    for c in clients:
        secrets.add(c.identity.signature_private_key)
        for gid in c.group_ids():
            secrets |= _secrets_of(c.group(gid).group, [])
        for b in c.groups.key_packages():
            secrets |= {b.init_private_key, b.encryption_private_key}
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret plans" not in logs
    assert not _leaks(logs, secrets)


# --- Deletion of consumed secrets (§9.2, §12.4.2), found in review ------------------------------


def test_pending_commit_keeps_no_consumed_secret() -> None:
    """Once the Welcome is made, the joiner, welcome, epoch and encryption secrets of the new
    epoch are consumed: neither the pending commit nor its stored form keeps them."""
    from mlspy.group import Group, SigningIdentity, create_key_package
    from mlspy.messages import Add, Proposal

    alice = Group.create(SigningIdentity.generate(b"alice"))
    bob = create_key_package(SigningIdentity.generate(b"bob"))
    out = alice.commit([Proposal(Add(bob.key_package))])
    pending = alice.pending_commit
    assert pending is not None and pending.new_state is not None
    s = pending.new_state.secrets
    assert s.joiner_secret == s.welcome_secret == s.epoch_secret == s.encryption_secret == b""
    stored = Group.from_bytes(alice.to_bytes()).pending_commit
    assert stored is not None and stored.new_state is not None
    assert stored.new_state.secrets.joiner_secret == b""
    alice.merge_pending_commit()
    joined = Group.join(out.welcome or b"", bob)
    assert joined.epoch_authenticator == alice.epoch_authenticator


def test_removed_member_keeps_only_what_a_past_epoch_keeps() -> None:
    from mlspy.errors import MLSError
    from mlspy.group import Group, SigningIdentity, StagedCommit, create_key_package
    from mlspy.messages import Add, Proposal, Remove

    alice = Group.create(SigningIdentity.generate(b"alice"))
    bob_kp = create_key_package(SigningIdentity.generate(b"bob"))
    out = alice.commit([Proposal(Add(bob_kp.key_package))])
    alice.merge_pending_commit()
    bob = Group.join(out.welcome or b"", bob_kp)
    late = alice.encrypt_application(b"sent before the removal")
    removal = alice.commit([Proposal(Remove(bob.own_leaf_index))])
    alice.merge_pending_commit()
    staged = bob.process(removal.commit)
    assert isinstance(staged, StagedCommit) and staged.self_removed
    bob.merge_staged_commit(staged)
    assert not bob.active
    kept = Group.from_bytes(bob.to_bytes()).state.epoch  # what a stored state would hold
    assert kept.private is None
    assert kept.secrets.init_secret == kept.secrets.exporter_secret == b""
    assert kept.secrets.external_secret == b""
    try:
        secret = bob.export_secret("label", b"", 32)
    except MLSError:
        secret = b""
    assert secret != alice.export_secret("label", b"", 32)
    assert bob.process(late).data == b"sent before the removal"  # type: ignore[union-attr]


def test_removed_members_state_is_stored_and_loaded(tmp_path: Path) -> None:
    from mlspy.group import Group, SigningIdentity, StagedCommit, create_key_package
    from mlspy.messages import Add, Proposal, Remove
    from mlspy.storage import GroupStore, SQLiteStore

    alice = Group.create(SigningIdentity.generate(b"alice"))
    bob_kp = create_key_package(SigningIdentity.generate(b"bob"))
    out = alice.commit([Proposal(Add(bob_kp.key_package))])
    alice.merge_pending_commit()
    groups = GroupStore(SQLiteStore(tmp_path / "bob.db"))
    bob = groups.adopt(Group.join(out.welcome or b"", bob_kp))
    removal = alice.commit([Proposal(Remove(bob.group.own_leaf_index))])
    alice.merge_pending_commit()
    staged = bob.process(removal.commit)
    assert isinstance(staged, StagedCommit)
    bob.merge_staged_commit(staged)
    loaded = groups.load(bob.group.group_id).group
    assert not loaded.active and loaded.to_bytes() == bob.group.to_bytes()
