from __future__ import annotations

import pytest

from gitopsd.manifest.strategy_options import AbTestOptions
from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Deploy,
    Finish,
    HealthCheck,
    Retire,
    Rollback,
    RolloutState,
    SetTraffic,
    Wait,
)
from gitopsd.rollout.strategies.ab_test import AbTestStrategy

A = ("n1", "n2", "n3", "n4")
B = ("n5",)


def ab(**options: object) -> AbTestStrategy:
    return AbTestStrategy(AbTestOptions.model_validate(options))


@pytest.mark.parametrize(
    ("n", "percent", "b_count"), [(5, 20, 1), (10, 25, 3), (3, 0, 1), (4, 50, 2)]
)
def test_variant_b_is_the_last_ceil_share_of_nodes(ctx, n, percent, b_count):
    a, b = ab(variantBPercentage=percent).variants(ctx(n))
    assert len(b) == b_count
    assert (*a, *b) == ctx(n).node_names  # B = Skip(A): the last nodes


def test_b_wins_and_is_promoted_to_a(drive, ctx):
    options = ab(
        experimentDuration="PT1H",
        winnerCriteria={"metric": "p95_latency_ms", "threshold": 5},
        minimumSampleSize=500,
    )
    steps = drive(options, ctx(5), verdict="B")
    assert steps == [
        Deploy(B),
        HealthCheck(B),
        SetTraffic(B, 100.0),
        Wait(3600.0, "experiment: 20% asked, 1.2.0 on 1 of 5 nodes"),
        Compare(A, B, "p95_latency_ms", 5.0, "lower_is_better", 500),
        Deploy(A),
        HealthCheck(A),
        SetTraffic(A, 100.0),
        Retire((*A, *B)),
        Finish(RolloutState.COMPLETED, "variant B won the comparison; 1.2.0 on all 5 nodes"),
    ]


def test_a_wins_rolls_b_back(drive, ctx):
    steps = drive(ab(), ctx(5), verdict="A")
    assert steps[-2] == Rollback(B)
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.ROLLED_BACK
    assert final.message.startswith("variant A won")


def test_inconclusive_keeps_a(drive, ctx):
    steps = drive(ab(), ctx(5), verdict="inconclusive")
    assert steps[-2] == Rollback(B)
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.ROLLED_BACK
    assert final.message.startswith("inconclusive: kept A")


def test_unhealthy_b_is_rolled_back_before_the_experiment(drive, ctx):
    steps = drive(ab(), ctx(5), fail={"health": {"n5"}})
    assert steps[:-1] == [Deploy(B), HealthCheck(B), Rollback(B)]
    assert steps[-1].state is RolloutState.ROLLED_BACK  # type: ignore[union-attr]


def test_single_node_uses_analysis_instead_of_a_comparison(drive, ctx):
    steps = drive(ab(), ctx(1))
    assert Analyze(("n1",)) in steps
    assert not any(isinstance(s, Compare) for s in steps)
    assert steps[-1].state is RolloutState.COMPLETED  # type: ignore[union-attr]
    failed = drive(ab(), ctx(1), fail={"analyze": {"n1"}})
    assert failed[-2:] == [
        Rollback(("n1",)),
        Finish(RolloutState.ROLLED_BACK, "variant A won, rolled back 1.2.0: analysis failed"),
    ]


def test_first_deployment_has_no_a_to_compare_with(drive, ctx):
    steps = drive(ab(), ctx(5, old=None))
    assert Analyze(B) in steps
    assert not any(isinstance(s, Compare) for s in steps)
    assert steps[-1] == Finish(
        RolloutState.COMPLETED,
        "variant B passed its analysis (no variant A serving to compare with); "
        "1.2.0 on all 5 nodes",
    )


def test_failed_promotion_rolls_back_everything(drive, ctx):
    steps = drive(ab(), ctx(5), fail={"health": {"n2"}}, verdict="B")
    assert steps[-2] == Rollback((*B, *A))
    assert steps[-1].state is RolloutState.ROLLED_BACK  # type: ignore[union-attr]
