from __future__ import annotations

from gitopsd.manifest.strategy_options import RollingOptions
from gitopsd.rollout.steps import (
    Analyze,
    Deploy,
    Finish,
    HealthCheck,
    Retire,
    Rollback,
    RolloutState,
    SetTraffic,
    Wait,
)
from gitopsd.rollout.strategies.rolling import RollingStrategy


def rolling(**options: object) -> RollingStrategy:
    return RollingStrategy(RollingOptions.model_validate(options))


def batch(*nodes: str, timeout: float | None = None) -> list[object]:
    return [
        Deploy(nodes),
        HealthCheck(nodes, timeout=timeout),
        SetTraffic(nodes, 100.0),
        Analyze(nodes),
    ]


def test_all_healthy_goes_batch_by_batch_with_delays_between(drive, ctx):
    steps = drive(rolling(batchSize=2, batchDelay="PT30S", healthCheckTimeout="PT10S"), ctx(5))
    assert steps == [
        *batch("n1", "n2", timeout=10.0),
        Wait(30.0, "delay after batch 1 of 3"),
        *batch("n3", "n4", timeout=10.0),
        Wait(30.0, "delay after batch 2 of 3"),
        *batch("n5", timeout=10.0),
        Retire(("n1", "n2", "n3", "n4", "n5")),
        Finish(RolloutState.COMPLETED, "1.2.0 on 5 nodes in 3 batches"),
    ]


def test_first_failed_batch_stops_and_rolls_back_every_touched_node(drive, ctx):
    steps = drive(rolling(batchSize=2), ctx(5), fail={"health": {"n4"}})
    assert steps[:-1] == [
        *batch("n1", "n2"),
        Wait(5.0, "delay after batch 1 of 3"),
        Deploy(("n3", "n4")),
        HealthCheck(("n3", "n4")),
        Rollback(("n1", "n2", "n3", "n4")),
    ]
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.ROLLED_BACK
    assert "health check failed on n4" in final.message
    assert "batch 2 of 3" in final.message
    assert not any(isinstance(s, Deploy) and "n5" in s.nodes for s in steps)


def test_failed_analysis_counts_as_a_failed_batch(drive, ctx):
    steps = drive(rolling(batchSize=1, batchDelay=0), ctx(3), fail={"analyze": {"n2"}})
    assert steps[-2] == Rollback(("n1", "n2"))
    assert steps[-1].state is RolloutState.ROLLED_BACK  # type: ignore[union-attr]
    assert not any(isinstance(s, Wait) for s in steps)  # batchDelay 0: no wait steps


def test_pause_on_failure_rolls_back_only_the_failed_batch(drive, ctx):
    steps = drive(rolling(batchSize=2, pauseOnFailure=True), ctx(6), fail={"deploy": {"n3"}})
    assert steps[-3:-1] == [Deploy(("n3", "n4")), Rollback(("n3", "n4"))]
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.PAUSED
    assert final.message.startswith("partial success: 2 of 6 nodes on 1.2.0")
    assert not any(isinstance(s, Retire) for s in steps)


def test_failed_rollback_ends_failed(drive, ctx):
    steps = drive(rolling(), ctx(2), fail={"traffic": {"n2"}, "rollback": {"n1"}})
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.FAILED
    assert "rollback failed on n1" in final.message


def test_nodes_without_an_old_version_are_not_retired(drive, ctx):
    steps = drive(rolling(batchDelay=0), ctx(2, old=None))
    assert [s.kind for s in steps] == ["deploy", "health", "traffic", "analyze"] * 2 + ["finish"]
