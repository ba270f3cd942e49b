"""Subprocess for the crash tests: performs one state transition on a SQLite store and kills
itself with SIGKILL at a chosen write point ("begin", "written", "committed") or not at all.
The kill comes at the first write that reaches the point.

    python crash_worker.py DB OPERATION POINT INPUT OUTPUT

OPERATION: merge (merge the stored pending commit), join (join from the Welcome in INPUT),
encrypt (encrypt a message, written to OUTPUT), decrypt (process the message in INPUT),
receive (receive the commit in INPUT: process and merge in one write), receive_two_writes
(the old sequence: process the commit in INPUT, then merge it, in two writes), receive_event
(receive the application message in INPUT with an inbox entry in the same write).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from mlspy.group import StagedCommit
from mlspy.storage import GroupStore, SQLiteStore

# The key and value ``receive_event`` writes in the batch that consumes the message's key.
EVENT_KEY = "inbox/x"
EVENT_VALUE = b"event"


def main() -> None:
    db, operation, point, input_path, output_path = sys.argv[1:6]

    def hook(at: str) -> None:
        if at == point:
            os.kill(os.getpid(), signal.SIGKILL)

    groups = GroupStore(SQLiteStore(db, on_write=hook))
    if operation == "join":
        groups.join(Path(input_path).read_bytes())
        return
    (group_id,) = groups.group_ids()
    stored = groups.load(group_id)
    if operation == "merge":
        stored.merge_pending_commit()
    elif operation == "encrypt":
        message = stored.encrypt_application(b"from the worker")
        Path(output_path).write_bytes(message)
    elif operation == "decrypt":
        stored.process(Path(input_path).read_bytes())
    elif operation == "receive":
        stored.receive(Path(input_path).read_bytes())
    elif operation == "receive_two_writes":
        staged = stored.process(Path(input_path).read_bytes())
        if not isinstance(staged, StagedCommit):
            raise SystemExit(f"not a commit: {type(staged).__name__}")
        stored.merge_staged_commit(staged)
    elif operation == "receive_event":
        stored.receive(
            Path(input_path).read_bytes(), also_write=lambda _: {EVENT_KEY: (EVENT_VALUE, None)}
        )
    else:
        raise SystemExit(f"unknown operation {operation}")


if __name__ == "__main__":
    main()
