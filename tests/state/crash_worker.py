"""Subprocess for the crash tests: performs one state transition on a SQLite store and kills
itself with SIGKILL at a chosen write point ("begin", "written", "committed") or not at all.

    python crash_worker.py DB OPERATION POINT INPUT OUTPUT

OPERATION: merge (merge the stored pending commit), join (join from the Welcome in INPUT),
encrypt (encrypt a message, written to OUTPUT), decrypt (process the message in INPUT).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from mlspy.storage import GroupStore, SQLiteStore


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
    else:
        raise SystemExit(f"unknown operation {operation}")


if __name__ == "__main__":
    main()
