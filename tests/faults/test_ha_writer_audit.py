"""The HA sweep's "never two writers in one term" check (tests/faults/ha_sweep.py) on a real
PostgreSQL: quiet while the fencing works, and it reports each way a broken fencing shows,
which the sweep's daemons cannot be made to produce on demand (their database refuses it):
here the fencing triggers are dropped to let such writes through."""

from __future__ import annotations

from gitopsd.ha.lease import PgLeases
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import Fence, PostgresStore
from tests.faults.ha_sweep import AUDITED, SharedState, writer_violations
from tests.store.contract import rollout
from tests.store.pgserver import PgServer

A, B, STRANGER = "ctl-a:111:aa", "ctl-b:222:bb", "ctl-x:333:xx"
PIDS = {111, 222}


def test_the_writer_audit_passes_fenced_terms_and_names_every_breach(pg_server: PgServer) -> None:
    name = pg_server.create_database()
    url = pg_server.url(name, with_password=True)
    a, b, operator = (PostgresStore(pg_target(url)) for _ in range(3))
    leases_a = PgLeases(pg_target(url), A, "ctl-a", lease=5.0)
    leases_b = PgLeases(pg_target(url), B, "ctl-b", lease=5.0)
    state = SharedState(pg_server.admin_conninfo(name))
    try:
        state.install_audit()
        first = leases_a.acquire(0)
        assert first is not None
        a.set_fence(Fence(A, 1, {0: first.term}))
        a.create_rollout(rollout("r1", "fn"))
        a.put("last_applied_commit", "c1")
        pg_server.sql(name, "UPDATE leases SET expires = now() - interval '1 second'")
        second = leases_b.acquire(0)
        assert second is not None and second.term == first.term + 1
        b.set_fence(Fence(B, 1, {0: second.term}))
        b.update_rollout("r1", 2.0, state="COMPLETED")
        b.put("last_applied_commit", "c2")
        assert writer_violations(state.audit(), 1, PIDS) == ([], 2)

        # Fencing broken: A's deposed term, a stranger claiming B's term, no fence at all.
        for table in AUDITED:
            pg_server.sql(name, f"DROP TRIGGER {table}_fence ON {table}")
        a.put("last_applied_commit", "c1-late")
        stranger = PostgresStore(pg_target(url))
        stranger.set_fence(Fence(STRANGER, 1, {0: second.term}))
        stranger.update_rollout("r1", 3.0, message="mine too")
        stranger.close()
        operator.put("note", "unfenced")
        bad, terms = writer_violations(state.audit(), 1, PIDS)
    finally:
        for handle in (a, b, operator, leases_a, leases_b, state):
            handle.close()
    assert terms == 2
    assert len(bad) == 4, bad
    assert f"term {first.term} of shard 0 wrote after term {second.term}" in bad[0]
    assert f"holder {STRANGER} is none of the daemons started" in bad[1]
    assert "written without a fence" in bad[2]
    assert bad[3] == f"shard 0 term {second.term} written by 2 holders: {sorted([B, STRANGER])}"
