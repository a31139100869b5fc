from __future__ import annotations

import pytest

from gitopsd.manifest.strategy_options import CanaryOptions
from gitopsd.rollout.steps import (
    Analyze,
    Deploy,
    Finish,
    Gate,
    HealthCheck,
    Retire,
    Rollback,
    RolloutState,
    SetTraffic,
    Wait,
)
from gitopsd.rollout.strategies.canary import CanaryStrategy


def canary(**options: object) -> CanaryStrategy:
    return CanaryStrategy(CanaryOptions.model_validate(options))


def deploys(steps: list[object]) -> list[tuple[str, ...]]:
    return [s.nodes for s in steps if isinstance(s, Deploy)]


@pytest.mark.parametrize(
    ("n", "first"),
    [(5, 1), (15, 2), (10, 1), (30, 3), (1, 1)],
)
def test_first_stage_is_ceil_of_ten_percent_and_at_least_one(drive, ctx, n, first):
    steps = drive(canary(), ctx(n))
    assert len(deploys(steps)[0]) == first


def test_stage_sizes_are_ceil_per_stage_and_cover_every_node_once(drive, ctx):
    steps = drive(canary(), ctx(15))
    sizes = [len(d) for d in deploys(steps)]
    assert sizes == [2, 2, 4, 7]  # ceil(1.5)=2, ceil(3.75)=4, ceil(7.5)=8, 15
    assert sum(deploys(steps), ()) == tuple(f"n{i}" for i in range(1, 16))


def test_full_sequence_waits_carry_the_evaluation_period(drive, ctx):
    steps = drive(canary(stages=[20, 100], evaluationPeriod="PT5M", failureThreshold=2), ctx(5))
    rest = ("n2", "n3", "n4", "n5")
    everyone = ("n1", *rest)
    assert steps == [
        Deploy(("n1",)),
        HealthCheck(("n1",), success_threshold=1, failure_threshold=2),
        SetTraffic(("n1",), 100.0),
        Wait(300.0, "evaluation of stage 1 (20%)"),
        Analyze(("n1",)),
        Deploy(rest),
        HealthCheck(rest, success_threshold=1, failure_threshold=2),
        SetTraffic(everyone, 100.0),
        Analyze(everyone),
        Retire(everyone),
        Finish(RolloutState.COMPLETED, "1.2.0 on all 5 nodes after 2 stages"),
    ]


def test_stages_that_add_no_node_are_skipped(drive, ctx):
    steps = drive(canary(), ctx(2))  # 10, 25, 50 % of 2 nodes are all 1 node
    waits = [s for s in steps if isinstance(s, Wait)]
    assert waits == [Wait(300.0, "evaluation of stage 1 (10%)")]
    assert deploys(steps) == [("n1",), ("n2",)]


def test_gate_before_each_stage_after_the_first_without_auto_promote(drive, ctx):
    steps = drive(canary(autoPromote=False), ctx(10))
    gates = [s for s in steps if isinstance(s, Gate)]
    assert [g.reason for g in gates] == [
        "promote 1.2.0 to stage 2 (25%): 3 of 10 nodes",
        "promote 1.2.0 to stage 3 (50%): 5 of 10 nodes",
        "promote 1.2.0 to stage 4 (100%): 10 of 10 nodes",
    ]
    assert isinstance(steps[steps.index(gates[0]) - 1], Analyze)


def test_abort_at_a_gate_rolls_back_the_canaries(drive, ctx):
    steps = drive(canary(autoPromote=False), ctx(10), gate_ok=False)
    assert steps[-3:-1] == [
        Gate("promote 1.2.0 to stage 2 (25%): 3 of 10 nodes"),
        Rollback(("n1",)),
    ]
    assert steps[-1].state is RolloutState.ROLLED_BACK  # type: ignore[union-attr]


def test_failed_stage_rolls_back_every_touched_node(drive, ctx):
    steps = drive(canary(), ctx(10), fail={"analyze": {"n3"}})  # n3 joins at stage 2
    assert steps[-2] == Rollback(("n1", "n2", "n3"))
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.ROLLED_BACK
    assert "stage 2 (25%)" in final.message


def test_traffic_weights_inside_nodes_and_final_switch_to_100(drive, ctx):
    steps = drive(canary(stages=[50, 100], trafficWeights=[10, 50]), ctx(4))
    traffic = [s for s in steps if isinstance(s, SetTraffic)]
    assert traffic == [
        SetTraffic(("n1", "n2"), 10.0),
        SetTraffic(("n1", "n2", "n3", "n4"), 50.0),
        SetTraffic(("n1", "n2", "n3", "n4"), 100.0),
    ]
    assert steps[-1].state is RolloutState.COMPLETED  # type: ignore[union-attr]
