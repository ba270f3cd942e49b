"""Does the Delivery Service's database stop growing under a steady load? (issue 18, item 3)

    .venv/bin/python benchmarks/ds_growth.py [--rounds 72] [--retention-hours 12]
        [--postgres postgresql://…]

A real DS (SQLite in a temporary directory, or PostgreSQL) on loopback, on a simulated clock
that advances one hour per round, so days of retention pass in a minute. Every round:

- in each long-lived group of three, one member sends messages and one fetches and
  acknowledges them; the third never fetches (what it is sent waits for retention);
- every user uploads KeyPackages that live a day, and claims one of another user's;
- a user makes a group, talks in it alone and leaves it;
- every client logs in again (tokens last an hour: a challenge consumed, a token made);
- the DS's ``sweep()`` runs (the operator's server runs it periodically).

Prints, every few rounds, the database's size and its row counts. Run against a DS without
retention (no ``sweep``, nothing deleted at ack) the same load grows without bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from mlspy.ds.app import create_app
from mlspy.ds.client import DSClient
from mlspy.ds.db import PostgresDatabase, SQLiteDatabase
from mlspy.ds.limits import Limits
from mlspy.ds.server import InProcessServer
from mlspy.ds.service import DeliveryService
from mlspy.group import Group, SigningIdentity, create_key_package
from mlspy.messages import Add, MLSMessage, Proposal

HOUR = 3600.0
TABLES = ("messages", "queue", "key_packages", "groups", "tokens", "challenges")


class Clock:
    """The DS's clock: real time plus the simulated hours that passed."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclasses.dataclass
class User:
    name: str
    identity: SigningIdentity
    client: DSClient
    group: Group | None = None
    last_seq: int = 0


def _user(url: str, name: str) -> User:
    identity = SigningIdentity.generate(name.encode())
    client = DSClient(url, identity)
    client.register()
    client.login()
    return User(name, identity, client)


def _trio(url: str, users: list[User]) -> None:
    """users[0] makes a group and adds the two others (real KeyPackages, Welcomes)."""
    owner, *others = users
    bundles = {}
    for u in others:
        bundles[u.name] = create_key_package(u.identity)
        u.client.upload_key_packages([bundles[u.name]])
    owner.group = Group.create(owner.identity)
    owner.client.create_group(owner.group.group_info())
    kps = [
        MLSMessage.decode(owner.client.claim_key_package(u.name.encode())).key_package
        for u in others
    ]
    out = owner.group.commit([Proposal(Add(kp)) for kp in kps if kp is not None])
    owner.client.submit(owner.group.group_id, out.commit, welcome=out.welcome)
    owner.group.merge_pending_commit()
    for u in others:
        items = u.client.fetch(0)
        welcome = next(i for i in items if i["kind"] == "welcome")
        u.group = Group.join(welcome["data"], [bundles[u.name]])
        u.client.ack([i["seq"] for i in items])
        u.last_seq = items[-1]["seq"]


def _stats(service: DeliveryService, path: Path | None) -> dict[str, int]:
    with service.db.transaction() as tx:
        out = {t: int(tx.execute(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in TABLES}
        if path is None:
            size = tx.execute("SELECT pg_database_size(current_database())")
            out["size"] = int(size[0][0])
    if path is not None:
        out["size"] = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return out


def _options(retention: float) -> dict[str, Any]:
    """Retention options, where the DS under test has them (the "before" run has none)."""
    names = {f.name for f in dataclasses.fields(DeliveryService)}
    wanted = {"retention": retention, "group_retention": 2 * retention}
    return {k: v for k, v in wanted.items() if k in names}


def run(
    rounds: int, retention_hours: float, postgres: str | None, every: int, autovacuum: bool
) -> None:
    clock = Clock()
    tmp = Path(tempfile.mkdtemp(prefix="ds-growth-"))
    path = None if postgres else tmp / "ds.sqlite"
    db = PostgresDatabase(postgres) if postgres else SQLiteDatabase(tmp / "ds.sqlite")
    service = DeliveryService(db, clock=clock, **_options(retention_hours * HOUR))
    sweep = getattr(service, "sweep", None)
    # One round stands for an hour, so every client logs in again each round (well inside
    # seconds): the per-address limit on anonymous requests is for real time, not ours.
    limits = Limits(anonymous_per_second=10_000.0, anonymous_burst=10_000)
    with InProcessServer(create_app(service, limits=limits)) as server:
        users = [_user(server.url, f"user{i}") for i in range(9)]
        for i in range(0, 9, 3):
            _trio(server.url, users[i : i + 3])
        print(
            f"{'round':>5} {'hours':>5} "
            + " ".join(f"{t:>12}" for t in TABLES)
            + f" {'db bytes':>12} {'swept':>8} {'s/round':>8}"
        )
        started = time.perf_counter()
        swept = 0
        for r in range(1, rounds + 1):
            clock.offset += HOUR
            for i in range(0, 9, 3):
                sender, reader = users[i], users[i + 1]  # users[i + 2] never fetches
                assert sender.group is not None and reader.group is not None
                for n in range(5):
                    data = sender.group.encrypt_application(f"r{r} m{n} ".encode() * 64)
                    sender.client.submit(sender.group.group_id, data)
                items = reader.client.fetch(reader.last_seq)
                for item in items:
                    reader.group.process(item["data"])
                if items:
                    reader.client.ack([i["seq"] for i in items])
                    reader.last_seq = items[-1]["seq"]
            now = int(clock())
            for u in users:
                kps = [
                    create_key_package(u.identity, lifetime=24 * 3600, now=now) for _ in range(2)
                ]
                u.client.upload_key_packages(kps)
            for k, u in enumerate(users):
                u.client.claim_key_package(users[(k + 1) % len(users)].name.encode())
            # A group made, used alone and left.
            owner = users[r % len(users)]
            short = Group.create(owner.identity)
            owner.client.create_group(short.group_info())
            owner.client.submit(short.group_id, short.encrypt_application(b"notes to self"))
            owner.client.leave_group(short.group_id)
            if sweep is not None:
                swept += sum(sweep().values())
            if postgres and autovacuum:
                # PostgreSQL reuses the space of deleted rows once VACUUM has marked it free.
                # Its autovacuum does that about every minute of real time; a round here
                # stands for an hour yet lasts a fraction of a second, so autovacuum would
                # never run inside the benchmark. A plain VACUUM per round stands in for it
                # (not VACUUM FULL: nothing is given back to the OS, as in production).
                db.vacuum()  # type: ignore[union-attr]
            if r % every == 0 or r == rounds:
                s = _stats(service, path)
                per_round = (time.perf_counter() - started) / r
                print(
                    f"{r:>5} {r:>5} "
                    + " ".join(f"{s[t]:>12}" for t in TABLES)
                    + f" {s['size']:>12} {swept:>8} {per_round:>8.2f}"
                )
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=72)
    parser.add_argument(
        "--no-vacuum",
        action="store_true",
        help="PostgreSQL: no VACUUM per round (autovacuum never runs in a compressed day)",
    )
    parser.add_argument("--retention-hours", type=float, default=12.0)
    parser.add_argument("--every", type=int, default=6, help="print a line every N rounds")
    parser.add_argument("--postgres", help="a PostgreSQL database URL (its tables are used)")
    args = parser.parse_args()
    run(args.rounds, args.retention_hours, args.postgres, args.every, not args.no_vacuum)


if __name__ == "__main__":
    main()
