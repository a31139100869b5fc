"""The status page's overview reads on a real PostgreSQL (`PgReads`, the light columns over a
connection of the page's own) give the Store protocol's answers and see every change,
including those another connection (the leader's) commits."""

from __future__ import annotations

from gitopsd.reconcile.keys import waiting_key
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.rows import RolloutRow
from gitopsd.ui.readmodel import PgReads, StoreReads, reads_for
from tests.store.pgserver import PgServer


def rollout(rid: str, function: str, version: str, state: str, at: float) -> RolloutRow:
    return RolloutRow(
        rid, function, version, "c0", "canary", state, "", "", {}, at, at, None, False
    )


def test_postgres_and_protocol_reads_agree(pg_server: PgServer) -> None:
    url = pg_server.url(pg_server.create_database(), with_password=True)
    store = PostgresStore(pg_target(url))
    store.create_rollout(rollout("a1", "alpha", "1.0.0", "COMPLETED", 10.0))
    store.create_rollout(rollout("a2", "alpha", "2.0.0", "IN_PROGRESS", 20.0))
    store.create_rollout(rollout("b1", "beta", "1.0.0", "ROLLED_BACK", 15.0))
    store.begin_step("a2", 0, {"kind": "wait"}, 21.0)
    store.set_control("beta", 30.0, held=True, held_reason="rolled back by an operator")
    store.put(waiting_key("alpha"), "waiting for approval")
    store.put(waiting_key("beta"), "")
    store.put("waiting;", "a key just past the waiting reasons' range")
    fast, generic = reads_for(store), StoreReads(store)
    assert isinstance(fast, PgReads)
    names = ["alpha", "beta"]
    try:
        assert fast.latest_rollouts() == generic.latest_rollouts()
        assert {f: h.id for f, h in fast.latest_rollouts().items()} == {
            "alpha": "a2",
            "beta": "b1",
        }
        assert fast.step_counts(["a2", "b1"]) == {"a2": 1} == generic.step_counts(["a2"])
        assert fast.step_counts([]) == {}
        assert fast.controls(names)["beta"] == generic.controls(names)["beta"]
        assert fast.controls(names)["beta"].held
        assert fast.waiting(names) == generic.waiting(names) == {"alpha": "waiting for approval"}
        # Changes committed by another connection are seen by the next read (the heads are
        # kept only while the rollouts table is unchanged).
        store.update_rollout("a2", 40.0, state="COMPLETED")
        assert fast.latest_rollouts()["alpha"].state == "COMPLETED"
        store.create_rollout(rollout("g1", "gamma", "1.0.0", "PENDING", 5.0))
        assert set(fast.latest_rollouts()) == {"alpha", "beta", "gamma"}
        store.set_control("alpha", 50.0, paused=True)
        assert fast.controls(names)["alpha"].paused
        # A controller whose clock is behind (another host, after a failover) stamps its
        # update below the newest row: count and newest stamp stay the same, still seen.
        store.update_rollout("b1", 12.0, state="FAILED")
        assert fast.latest_rollouts()["beta"].state == "FAILED"
    finally:
        fast.close()
        store.close()
