"""Write the stored-state fixture of format version 1 (run once; the files are committed).

    .venv/bin/python tests/state/make_fixture.py

alice and bob share a group at epoch 2 with one cached proposal; ``message.bin`` is an
application message from alice that bob has not read yet. The fixture test loads these states
with today's code and continues the group.
"""

from __future__ import annotations

from pathlib import Path

from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import Add, Proposal

HERE = Path(__file__).resolve().parent / "fixtures"


def main() -> None:
    alice = Group.create(SigningIdentity.generate(b"alice"), group_id=b"fixture-group")
    bob_kp = create_key_package(SigningIdentity.generate(b"bob"))
    out = alice.commit([Proposal(Add(bob_kp.key_package))])
    alice.merge_pending_commit()
    bob = Group.join(out.welcome or b"", bob_kp)
    out = bob.commit()
    alice.merge_staged_commit(alice.process(out.commit))  # type: ignore[arg-type]
    bob.merge_pending_commit()
    message = alice.encrypt_application(b"written by format version 1")
    proposal = bob.propose_update()
    alice.process(proposal)
    HERE.mkdir(exist_ok=True)
    (HERE / "alice_v1.bin").write_bytes(alice.to_bytes())
    (HERE / "bob_v1.bin").write_bytes(bob.to_bytes())
    (HERE / "message_v1.bin").write_bytes(message)


if __name__ == "__main__":
    main()
