"""``DeliveryService.fetch_many``: the queues of many clients read at once (what a node's
woken sockets share on PostgreSQL) give exactly what one ``fetch`` per client gives."""

from __future__ import annotations

from ds_helpers import Cluster, Member

from mlspy.ds.client_info import ClientInfo


def _client(ds: Cluster, member: Member) -> ClientInfo:
    token = member.client.token
    assert token is not None
    return ds.services[0].authenticate(token)


def test_many_queues_at_once_match_one_read_each(ds: Cluster) -> None:
    alice, bob, carol = (Member.new(ds.url, n) for n in ("alice", "bob", "carol"))
    alice.create()
    alice.add(bob, carol)
    sent = [alice.send(b"m%d" % i) for i in range(5)]
    service = ds.services[-1]
    clients = [_client(ds, m) for m in (alice, bob, carol)]
    one_each = {c.id: service.fetch(c, 0, 500) for c in clients}
    assert [m.seq for m in one_each[clients[1].id]][-5:] == sent

    afters = {c.id: 0 for c in clients} | {"nobody": 0}
    together = service.fetch_many(afters, 500)
    assert together == {**one_each, "nobody": []}

    # A cursor and a limit per client, as each socket reads after what it sent.
    cursor = sent[1]
    few = service.fetch_many({clients[1].id: cursor, clients[2].id: 0}, 2)
    assert [m.seq for m in few[clients[1].id]] == sent[2:4]
    assert few[clients[2].id] == one_each[clients[2].id][:2]
    assert service.fetch_many({}, 10) == {}
