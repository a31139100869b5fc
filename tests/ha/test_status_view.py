"""What `gitopsd status` says of leadership, read from the real leases table."""

from __future__ import annotations

import re

from gitopsd.ha.lease import PgLeases
from gitopsd.ha.status import leadership_view
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from tests.store.pgserver import PgServer

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_the_leader_and_the_shards_with_holder_host_since_and_term(pg_server: PgServer) -> None:
    target = pg_target(pg_server.url(pg_server.create_database(), with_password=True))
    store = PostgresStore(target)
    leases = PgLeases(target, "ctl-1:42:abc", "ctl-1", lease=30.0)
    try:
        assert leadership_view(store, 1).json_fields() == {"leader": None}
        assert leadership_view(store, 1).lines()[0].startswith("leader: none")
        taken = leases.acquire(0)
        assert taken is not None
        view = leadership_view(store, 1)
        fields = view.json_fields()
        assert set(fields) == {"leader"}
        leader = fields["leader"]
        assert {k: leader[k] for k in ("shard", "holder", "host", "term")} == {
            "shard": 0,
            "holder": "ctl-1:42:abc",
            "host": "ctl-1",
            "term": taken.term,
        }
        assert ISO.match(leader["since"])
        assert view.lines() == [f"leader: ctl-1:42:abc on ctl-1 since {leader['since']} (term 1)"]
        assert leases.acquire(2) is not None
        sharded = leadership_view(store, 3).json_fields()
        assert [s and s["shard"] for s in sharded["shards"]] == [0, None, 2]
        assert sharded["leader"] == leader
        leases.release(taken)
        assert leadership_view(store, 1).json_fields() == {"leader": None}
    finally:
        leases.close()
        store.close()
