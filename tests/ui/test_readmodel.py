"""The overview's reads give the same answers on SQLite's fast path and through the Store
protocol (what a PostgreSQL store gets), and the fast path sees every change."""

from __future__ import annotations

from pathlib import Path

from gitopsd.reconcile import waiting_key
from gitopsd.store.sqlite import RolloutRow, SqliteStore
from gitopsd.ui.readmodel import SqliteReads, StoreReads, reads_for


def rollout(rid: str, function: str, version: str, state: str, at: float) -> RolloutRow:
    return RolloutRow(
        rid, function, version, "c0", "canary", state, "", "", {}, at, at, None, False
    )


def test_sqlite_and_protocol_reads_agree(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    store.create_rollout(rollout("a1", "alpha", "1.0.0", "COMPLETED", 10.0))
    store.create_rollout(rollout("a2", "alpha", "2.0.0", "IN_PROGRESS", 20.0))
    store.create_rollout(rollout("b1", "beta", "1.0.0", "ROLLED_BACK", 15.0))
    store.begin_step("a2", 0, {"kind": "wait"}, 21.0)
    store.set_control("beta", 30.0, held=1, held_reason="rolled back by an operator")
    store.put(waiting_key("alpha"), "waiting for approval")
    store.put(waiting_key("beta"), "")
    fast, generic = reads_for(store), StoreReads(store)
    assert isinstance(fast, SqliteReads)
    names = ["alpha", "beta"]
    assert fast.latest_rollouts() == generic.latest_rollouts()
    assert {f: h.id for f, h in fast.latest_rollouts().items()} == {"alpha": "a2", "beta": "b1"}
    assert fast.step_counts(["a2", "b1"]) == {"a2": 1} and generic.step_counts(["a2"]) == {"a2": 1}
    assert fast.controls(names)["beta"] == generic.controls(names)["beta"]
    assert fast.controls(names)["beta"].held
    assert fast.waiting(names) == generic.waiting(names) == {"alpha": "waiting for approval"}
    # A change of state is seen by the next read (the heads are kept only while unchanged).
    store.update_rollout("a2", 40.0, state="COMPLETED")
    assert fast.latest_rollouts()["alpha"].state == "COMPLETED"
    store.create_rollout(rollout("g1", "gamma", "1.0.0", "PENDING", 5.0))
    assert set(fast.latest_rollouts()) == {"alpha", "beta", "gamma"}
    fast.close()
    store.close()
