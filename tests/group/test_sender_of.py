"""``Group.sender_of``: whose message this is, read without processing or consuming it."""

from __future__ import annotations

from dataclasses import replace

from group_helpers import make_group, make_identities
from mlspy.group import GroupConfig
from mlspy.messages import MLSMessage, WireFormat


def test_sender_of_public_and_private_messages_consumes_nothing() -> None:
    config = GroupConfig(handshake_wire_format=WireFormat.mls_private_message)
    groups = make_group(3, identities=make_identities(3), config=config)
    app = groups[2].encrypt_application(b"hi")
    before = groups[0].to_bytes()
    sender = groups[0].sender_of(app)
    assert sender is not None and sender.leaf_index == 2 and sender.identity == b"member-2"
    assert groups[0].to_bytes() == before  # nothing consumed: it still decrypts
    assert groups[0].process(app).data == b"hi"  # type: ignore[union-attr]
    commit = groups[1].commit().commit  # an encrypted commit
    found = groups[0].sender_of(commit)
    assert found is not None and found.leaf_index == 1
    groups[1].clear_pending_commit()
    out = groups[1].commit(wire_format=WireFormat.mls_public_message)
    assert groups[0].sender_of(out.commit).leaf_index == 1  # type: ignore[union-attr]


def test_sender_of_is_none_for_other_epochs_and_garbage() -> None:
    groups = make_group(2)
    app = groups[1].encrypt_application(b"old")
    groups[0].commit()
    groups[0].merge_pending_commit()
    assert groups[0].sender_of(app) is None  # another epoch
    msg = MLSMessage.decode(groups[1].encrypt_application(b"x"))
    pm = msg.private_message
    assert pm is not None
    flipped = bytes(b ^ 0xFF for b in pm.encrypted_sender_data)
    tampered = MLSMessage.wrap(replace(pm, encrypted_sender_data=flipped))
    assert groups[0].sender_of(tampered) is None  # sender data that does not decrypt
