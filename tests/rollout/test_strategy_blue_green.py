from __future__ import annotations

from gitopsd.manifest.strategy_options import BlueGreenOptions
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
from gitopsd.rollout.strategies.blue_green import BlueGreenStrategy

ALL = ("n1", "n2", "n3")


def blue_green(**options: object) -> BlueGreenStrategy:
    return BlueGreenStrategy(BlueGreenOptions.model_validate(options))


def test_healthy_flip_keeps_blue_for_the_retention_period(drive, ctx):
    steps = drive(blue_green(switchDelay="PT1M", blueRetentionPeriod="PT2H"), ctx(3))
    assert steps == [
        Deploy(ALL),
        HealthCheck(ALL, timeout=30.0),
        Wait(60.0, "switch delay before the traffic flip"),
        SetTraffic(ALL, 100.0),
        Analyze(ALL),
        Retire(ALL, after=7200.0),
        Finish(RolloutState.COMPLETED, "traffic flipped to 1.2.0 on all 3 nodes"),
    ]


def test_blue_is_retired_at_once_when_not_kept(drive, ctx):
    steps = drive(blue_green(keepBlueEnvironment=False), ctx(3))
    assert Retire(ALL, after=0.0) in steps
    assert not any(isinstance(s, Wait) for s in steps)  # switchDelay 0: no wait


def test_health_checks_every_node_before_deciding(drive, ctx):
    steps = drive(blue_green(), ctx(3), fail={"health": {"n1"}})
    assert steps[:-1] == [Deploy(ALL), HealthCheck(ALL, timeout=30.0), Rollback(ALL)]
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.ROLLED_BACK
    assert "health check failed on n1" in final.message


def test_deploy_failure_still_checks_the_nodes_that_loaded(drive, ctx):
    steps = drive(blue_green(), ctx(3), fail={"deploy": {"n2"}, "health": {"n3"}})
    assert steps[:-1] == [Deploy(ALL), HealthCheck(("n1", "n3"), timeout=30.0), Rollback(ALL)]
    final = steps[-1]
    assert isinstance(final, Finish)
    assert "deploy failed on n2" in final.message
    assert "health check failed on n3" in final.message


def test_capacity_refusal_comes_before_any_deploy(drive, ctx):
    context = ctx(3, free={"n1": 500.0, "n2": 32.0, "n3": 10.0}, memory_mib=64.0)
    steps = drive(blue_green(), context)
    assert len(steps) == 1
    final = steps[0]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.FAILED
    assert "n2, n3" in final.message and "n1" not in final.message


def test_unknown_free_memory_is_not_refused(drive, ctx):
    steps = drive(blue_green(), ctx(2, free={"n1": 64.0}))  # n2 unknown, n1 exactly enough
    assert steps[-1].state is RolloutState.COMPLETED  # type: ignore[union-attr]


def test_failed_analysis_after_the_flip_flips_back(drive, ctx):
    steps = drive(blue_green(), ctx(3), fail={"analyze": {"n2"}})
    assert steps[-3:-1] == [Analyze(ALL), Rollback(ALL)]
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.ROLLED_BACK
    assert final.message.startswith("flipped back to the old version")
