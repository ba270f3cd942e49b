"""``mlspy bench-ds --db-stats``: what each message costs the PostgreSQL database, so the
throughput of N stateless DS nodes on a bigger database server can be worked out on paper
(docs/performance.md, "Delivery Service: what one message costs the database").

Theory of operation. PostgreSQL keeps cumulative counters; a snapshot is taken before the
first point and after each point has drained — every delivery made and acknowledged: the
monitor watches the point's queue rows go, since a saturated DS is still writing acks when
the receivers have everything — and a point's cost is the difference, divided by the
messages the DS accepted in the whole point (warm-up, measured window and drain) and by the
deliveries made. Whole points rather than the measured window alone, because most
counters are not live: each backend accumulates its own and flushes them to the shared
statistics at most once a second while busy, and within ``PGSTAT_IDLE_INTERVAL`` (10 s) of
going idle — so a snapshot taken at the window's edge would miss up to a second of every
connection's work, where one taken after the point has drained and ``settle`` seconds have
passed misses nothing. What each figure is:

- transactions: ``xact_commit`` + ``xact_rollback`` of ``pg_stat_database`` (reads too: a
  WebSocket's fetch is a read-only transaction, which writes no WAL and waits for no sync);
- write transactions: transaction ids assigned (``pg_current_snapshot()``'s xmax), the
  transactions that wrote something and so wrote a commit record and waited for its sync;
- rows inserted, updated and deleted, in all and per table (``pg_stat_user_tables``);
- WAL: bytes from the WAL position itself (exact and live), records and full-page images
  from ``pg_stat_wal``, writes and syncs from ``pg_stat_io`` (object ``wal``) on PostgreSQL
  18, which moved them there, or ``pg_stat_wal`` on 14 to 17;
- statements, if ``pg_stat_statements`` is loaded (it needs ``shared_preload_libraries``;
  ``benchmarks/pg_embedded_server.py`` starts a server with it): every statement the DS sent
  but ``BEGIN`` and ``COMMIT`` (two more per transaction, see ``TRANSACTION_CONTROL``), and
  the most frequent ones.

The WAL and I/O counters are the whole server's, not the database's: run the benchmark on a
server nothing else uses. The monitor's own queries add one transaction per snapshot.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mlspy.ds.config import mask_url

# A backend that went idle flushes its pending counters after ``PGSTAT_IDLE_INTERVAL``
# (10 s, src/backend/utils/activity/pgstat.c): wait that long and a bit.
SETTLE_S = 11.0
# Marks the monitor's own queries, so pg_stat_statements' count leaves them out.
MARK = "/* mlspy bench-ds --db-stats */"
DATABASE_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "tup_returned",
    "tup_fetched",
    "blks_read",
    "blks_hit",
)
TABLE_COUNTERS = ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del", "seq_scan", "idx_scan")
TOP_STATEMENTS = 12  # statements listed per point in the JSON
# How long the queue of a point's messages may stay the same size before the acks are taken
# to be done (some deliveries were lost, or a receiver never acknowledges), and at most.
ACKS_QUIET_S = 3.0
ACKS_TIMEOUT_S = 300.0
# Left out of the statement count: pg_stat_statements undercounts them (measured: 51 BEGINs
# for 600 transactions, about the first five on each connection — psycopg prepares a
# statement on its fifth use, and the prepared ones went uncounted). Every transaction of
# the DS is one explicit BEGIN and one COMMIT or ROLLBACK: two more round trips per
# transaction.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters at one moment (see the module docstring for each)."""

    database: dict[str, int]
    next_xid: int
    wal_position: int  # bytes since the start of the WAL
    wal: dict[str, int]  # records, fpi, writes, syncs: those the server has
    tables: dict[str, dict[str, int]]
    statements: dict[str, int] | None  # query text -> calls; None without the extension
    size: int  # pg_database_size, bytes
    # The monitor's own transactions before this snapshot's, which the counters include
    # (each ended more than ``settle`` seconds before, so its statistics were flushed).
    own_transactions: int
    last_seq: int  # the highest message sequence number yet (the next point's are above)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--db-stats`` and ``--db-settle`` of ``mlspy bench-ds``."""
    parser.add_argument(
        "--db-stats",
        action="store_true",
        help="with --postgres: per point, what each accepted message and each delivery cost "
        "the database (transactions, rows per table, WAL bytes and syncs, statements if "
        "pg_stat_statements is loaded); counts include the warm-up and the drain, and each "
        "point then waits --db-settle seconds for PostgreSQL's statistics. A server for it: "
        "benchmarks/pg_embedded_server.py prints a URL",
    )
    parser.add_argument(
        "--db-settle",
        type=float,
        default=SETTLE_S,
        metavar="S",
        help=f"seconds for PostgreSQL's backends to flush their statistics (default {SETTLE_S:g})",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.db_stats and not args.postgres:
        # SQLite has no statistics views, and a DS at --url has a database we cannot see.
        parser.error("--db-stats reads PostgreSQL's statistics: it needs --postgres URL")
    if args.db_settle < 0:
        parser.error("--db-settle must not be negative")


class Monitor:
    """One connection to the benchmark's database that takes :class:`Snapshot` s."""

    def __init__(self, url: str, settle: float) -> None:
        import psycopg

        self.url = mask_url(url)
        self.settle = settle
        self.own_transactions = 0  # the monitor's autocommitted statements and snapshots
        self._idle = psycopg.pq.TransactionStatus.IDLE
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            # psycopg's message may quote the connection string: name the masked URL only.
            why = type(exc).__name__
            raise RuntimeError(f"--db-stats cannot connect to {self.url}: {why}") from None
        self.version = int(self._value("SHOW server_version_num"))
        self.server = str(self._value("SHOW server_version"))
        wal = self._columns("pg_stat_wal")
        # PostgreSQL 18 moved WAL writes and syncs from pg_stat_wal to pg_stat_io.
        self._io_wal = bool(
            self._columns("pg_stat_io")
            and self._value(f"SELECT count(*) {MARK} FROM pg_stat_io WHERE object = 'wal'")
        )
        self._wal = [
            (name, column)
            for name, column in (
                ("records", "wal_records"),
                ("fpi", "wal_fpi"),
                ("writes", "wal_write"),
                ("syncs", "wal_sync"),
            )
            if column in wal
        ]
        self.statements = self._has_statements()
        self.durable = self._value("SHOW fsync") == "on"

    def close(self) -> None:
        self._conn.close()

    def wait_for_acks(self, after_seq: int) -> int:
        """Wait until the DS has written the acks of the messages numbered above ``after_seq``
        (a saturated DS is still writing them when the receivers have everything), or their
        queue entries stop going for ``ACKS_QUIET_S``; returns the entries left."""
        deadline = time.monotonic() + ACKS_TIMEOUT_S
        last, since = -1, time.monotonic()
        while True:
            # An index range scan (``queue_by_seq``) over what is left of this point only.
            left = int(self._value(f"SELECT count(*) {MARK} FROM queue WHERE seq > %s", after_seq))
            now = time.monotonic()
            if left != last:
                last, since = left, now
            if left == 0 or now - since >= ACKS_QUIET_S or now > deadline:
                return left
            time.sleep(0.25)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = list(self._conn.execute(sql, params).fetchall())
        if self._conn.info.transaction_status == self._idle:  # it was autocommitted
            self.own_transactions += 1
        return rows

    def _value(self, sql: str, *params: Any) -> Any:
        return self._rows(sql, params)[0][0]

    def _columns(self, view: str) -> list[str]:
        """The columns of a statistics view, or none if this server lacks it."""
        if self._value(f"SELECT to_regclass('pg_catalog.{view}') IS NULL {MARK}"):
            return []
        cursor = self._conn.execute(f"SELECT * {MARK} FROM pg_catalog.{view} LIMIT 0")
        return [d.name for d in cursor.description or ()]

    def _has_statements(self) -> bool:
        import psycopg

        if not self._value(f"SELECT to_regclass('pg_stat_statements') IS NOT NULL {MARK}"):
            return False
        try:  # the view exists but errors when the library was not preloaded
            self._value(f"SELECT count(*) {MARK} FROM pg_stat_statements LIMIT 1")
        except psycopg.Error:
            return False
        return True

    def snapshot(self) -> Snapshot:
        """The counters now (after ``settle`` seconds, so they include what just happened)."""
        time.sleep(self.settle)
        # One transaction: one consistent read, as the default stats_fetch_consistency
        # caches the statistics on first use in a transaction — cleared first, so they are
        # fresh from shared memory. It is the monitor's own, counted in ``own_transactions``
        # and taken off in :func:`cost`.
        own = self.own_transactions
        with self._conn.transaction():
            self._conn.execute(f"SELECT pg_stat_clear_snapshot() {MARK}")
            columns = ", ".join(DATABASE_COUNTERS)
            row = self._rows(
                f"SELECT {columns} {MARK} FROM pg_stat_database WHERE datname = current_database()"
            )[0]
            database = {k: int(v or 0) for k, v in zip(DATABASE_COUNTERS, row, strict=True)}
            position, next_xid, size, last_seq = self._rows(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
                "pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
                "pg_database_size(current_database()), "
                f"(SELECT coalesce(max(seq), 0) FROM messages) {MARK}"
            )[0]
            wal: dict[str, int] = {}
            if self._wal:
                values = self._rows(
                    f"SELECT {', '.join(c for _, c in self._wal)} {MARK} FROM pg_stat_wal"
                )[0]
                wal = {name: int(v) for (name, _), v in zip(self._wal, values, strict=True)}
            if self._io_wal:
                writes, syncs = self._rows(
                    f"SELECT sum(writes), sum(fsyncs) {MARK} FROM pg_stat_io WHERE object = 'wal'"
                )[0]
                wal.update(writes=int(writes or 0), syncs=int(syncs or 0))
            tables = {
                str(r[0]): {k: int(v or 0) for k, v in zip(TABLE_COUNTERS, r[1:], strict=True)}
                for r in self._rows(
                    f"SELECT relname, {', '.join(TABLE_COUNTERS)} {MARK} FROM pg_stat_user_tables"
                )
            }
            statements = None
            if self.statements:
                statements = {}
                for query, calls in self._rows(
                    f"SELECT query, sum(calls)::bigint {MARK} FROM pg_stat_statements "
                    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "GROUP BY query"
                ):
                    if MARK not in query:
                        statements[str(query)] = int(calls)
        self.own_transactions = own + 1
        return Snapshot(
            database,
            int(next_xid),
            int(position),
            wal,
            tables,
            statements,
            int(size),
            own,
            int(last_seq),
        )


def cost(before: Snapshot, after: Snapshot, messages: int, deliveries: int) -> dict[str, Any]:
    """A point's database work: totals, per accepted message and per delivery."""
    d = {k: after.database[k] - before.database.get(k, 0) for k in DATABASE_COUNTERS}
    totals: dict[str, int | None] = {
        "transactions": d["xact_commit"]
        + d["xact_rollback"]
        - (after.own_transactions - before.own_transactions),
        "rollbacks": d["xact_rollback"],
        "write_transactions": after.next_xid - before.next_xid,
        "statements": None,
        "rows_inserted": d["tup_inserted"],
        "rows_updated": d["tup_updated"],
        "rows_deleted": d["tup_deleted"],
        "rows_read": d["tup_returned"] + d["tup_fetched"],
        "blocks_hit": d["blks_hit"],
        "blocks_read": d["blks_read"],
        "wal_bytes": after.wal_position - before.wal_position,
        "wal_records": None,
        "wal_fpi": None,
        "wal_writes": None,
        "wal_syncs": None,
        "database_growth_bytes": after.size - before.size,
    }
    for name in ("records", "fpi", "writes", "syncs"):
        if name in after.wal:
            totals[f"wal_{name}"] = after.wal[name] - before.wal.get(name, 0)
    top: list[dict[str, Any]] = []
    if after.statements is not None:
        old = before.statements or {}
        calls = {
            q: n - old.get(q, 0)
            for q, n in after.statements.items()
            if q.strip().upper() not in TRANSACTION_CONTROL
        }
        totals["statements"] = sum(calls.values())
        for query, n in sorted(calls.items(), key=lambda c: -c[1])[:TOP_STATEMENTS]:
            if n > 0:
                top.append({"query": " ".join(query.split()), "calls": n, **_per(n, messages)})
    tables = {}
    for name, now in sorted(after.tables.items()):
        was = before.tables.get(name, {})
        delta = {k: now[k] - was.get(k, 0) for k in TABLE_COUNTERS}
        if any(delta[k] for k in ("n_tup_ins", "n_tup_upd", "n_tup_del")):
            tables[name] = {
                "inserted": delta["n_tup_ins"],
                "updated": delta["n_tup_upd"],
                "hot_updated": delta["n_tup_hot_upd"],
                "deleted": delta["n_tup_del"],
                "seq_scans": delta["seq_scan"],
                "index_scans": delta["idx_scan"],
            }

    def divide(by: int) -> dict[str, float | None]:
        return {k: None if v is None or by <= 0 else v / by for k, v in totals.items()}

    return {
        "messages": messages,
        "deliveries": deliveries,
        "totals": totals,
        "per_message": divide(messages),
        "per_delivery": divide(deliveries),
        "tables": tables,
        "statements": top,
    }


def _per(n: int, messages: int) -> dict[str, float | None]:
    return {"per_message": n / messages if messages else None}


# The per-message table: (heading, width, key, format).
COLUMNS = (
    ("rate/s", 8, "rate", "g"),
    ("msgs", 7, "messages", "d"),
    ("deliv", 7, "deliveries", "d"),
    ("stmts", 7, "statements", ".1f"),  # but BEGIN/COMMIT: two per transaction
    ("xacts", 6, "transactions", ".2f"),
    ("wr-xact", 8, "write_transactions", ".2f"),
    ("ins", 6, "rows_inserted", ".2f"),
    ("upd", 6, "rows_updated", ".2f"),
    ("del", 6, "rows_deleted", ".2f"),
    ("WAL B", 7, "wal_bytes", ".0f"),
    ("WAL rec", 8, "wal_records", ".1f"),
    ("FPI", 6, "wal_fpi", ".2f"),
    ("writes", 7, "wal_writes", ".2f"),
    ("syncs", 6, "wal_syncs", ".2f"),
)


def report(rows: Sequence[dict[str, Any]], monitor: Monitor) -> list[str]:
    """The "database cost per message" block: one line per point, then rows per table."""
    points = [r for r in rows if "db" in r]
    if not points:
        return []
    durability = "" if monitor.durable else " — fsync is off on this server: syncs count 0"
    out = [
        "",
        f"database cost per accepted message (PostgreSQL {monitor.server}; each point from its "
        f"start to drained, counters settled {monitor.settle:g}s){durability}",
        " ".join(f"{h:>{w}}" for h, w, _, _ in COLUMNS),
    ]
    for r in points:
        db = r["db"]
        cells = []
        for _, width, key, spec in COLUMNS:
            if key == "rate":
                value = r["rate"]
            elif key in ("messages", "deliveries"):
                value = db[key]
            else:
                value = db["per_message"][key]
            cells.append(f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}")
        out.append(" ".join(cells))
    out.append(
        "(stmts: statements but BEGIN/COMMIT, 2 per transaction; xacts: transactions, reads "
        "included; wr-xact: those that wrote, each a commit record and a WAL flush; ins/upd/del: "
        "rows, catalogs included; WAL B: WAL bytes; FPI: full-page images; writes/syncs: WAL "
        "writes and fsyncs; divide by deliv/msgs for per-delivery figures)"
    )
    out.append("rows per accepted message, by table (inserted/updated/deleted; per point):")
    names = sorted({t for r in points for t in r["db"]["tables"]})
    for name in names:
        cells = []
        for r in points:
            t = r["db"]["tables"].get(name)
            m = r["db"]["messages"]
            if t is None or not m:
                cells.append(f"{'-':>20}")
            else:
                cells.append(
                    f"{t['inserted'] / m:6.2f}/{t['updated'] / m:5.2f}/{t['deleted'] / m:6.2f}"
                )
        out.append(f"  {name:<16}" + " ".join(f"{c:>20}" for c in cells))
    last = points[-1]["db"]
    if last["statements"]:
        out.append(f"most frequent statements at {points[-1]['rate']:g}/s, per accepted message:")
        for s in last["statements"][:8]:
            out.append(f"  {s['per_message']:7.2f}  {_short(s['query'])}")
    return out


def _short(query: str, width: int = 100) -> str:
    return query if len(query) <= width else query[: width - 3] + "..."


class Tracker:
    """The snapshots of one benchmark run: a baseline once the setup is done, then one after
    each point, whose difference from the previous one is the point's cost (``row["db"]``)."""

    def __init__(self, monitor: Monitor, progress: Callable[[str], None]) -> None:
        self.monitor = monitor
        self.progress = progress
        progress(
            f"--db-stats: PostgreSQL {monitor.server} at {monitor.url}; "
            f"fsync {'on' if monitor.durable else 'OFF'}; pg_stat_statements "
            f"{'loaded' if monitor.statements else 'not loaded (no statement counts)'}; "
            f"waiting {monitor.settle:g}s for the setup's statistics"
        )
        self.last = monitor.snapshot()

    def measure(self, row: dict[str, Any]) -> None:
        """Add the cost of the point just run (and drained) to its row."""
        left = self.monitor.wait_for_acks(self.last.last_seq)
        if left:
            self.progress(f"  {left} deliveries of this point were never acknowledged")
        self.progress(f"  waiting {self.monitor.settle:g}s for PostgreSQL's statistics")
        now = self.monitor.snapshot()
        deliveries = int(row["deliveries_owed"]) - int(row["lost"])
        row["db"] = cost(self.last, now, int(row["acknowledged"]), deliveries)
        row["db"].update(server=self.monitor.server, fsync=self.monitor.durable)
        self.last = now


def tracker(
    args: argparse.Namespace, stack: contextlib.ExitStack, progress: Callable[[str], None]
) -> Tracker | None:
    """A :class:`Tracker` on ``--postgres`` with ``--db-stats`` (closed with ``stack``)."""
    if not args.db_stats:
        return None
    monitor = Monitor(args.postgres, args.db_settle)
    stack.callback(monitor.close)
    return Tracker(monitor, progress)
