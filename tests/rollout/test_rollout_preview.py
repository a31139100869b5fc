from __future__ import annotations

import pytest

from gitopsd.rollout.preview import describe_step, format_seconds, preview, run_plan
from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Deploy,
    Finish,
    Gate,
    HealthCheck,
    Plan,
    Retire,
    Rollback,
    RolloutState,
    SetTraffic,
    Step,
    StepOutcome,
    Wait,
)
from gitopsd.rollout.strategies import create_strategy


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("rolling", {}),
        ("rolling", {"pauseOnFailure": True, "batchSize": 2}),
        ("blue-green", {}),
        ("canary", {}),
        ("canary", {"autoPromote": False, "trafficWeights": [5, 10, 50, 90]}),
        ("regional", {"regionOrder": ["us"], "abortOnRegionFailure": True}),
        ("ab-test", {}),
        ("feature-flag", {"initialRollout": 25}),
    ],
)
def test_preview_of_every_strategy_ends_completed(ctx, name, options):
    steps = preview(create_strategy(name, **options), ctx(regions={"eu": 3, "us": 4}))
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.COMPLETED
    assert not any(isinstance(s, Rollback) for s in steps)
    assert all(describe_step(s, "1.2.0") for s in steps)


def test_canary_preview_passes_its_gates(ctx):
    steps = preview(create_strategy("canary", autoPromote=False), ctx(10))
    assert sum(isinstance(s, Gate) for s in steps) == 3


@pytest.mark.parametrize(
    ("step", "text"),
    [
        (Deploy(("edge-a", "edge-b")), "deploy 1.2.0 to edge-a, edge-b"),
        (HealthCheck(("edge-a",), timeout=30.0), "health-check 1.2.0 on edge-a (timeout 30s)"),
        (SetTraffic(("edge-a", "edge-b"), 25.0), "traffic 25% → 1.2.0 on edge-a, edge-b"),
        (Wait(300.0, "evaluation of stage 1 (10%)"), "wait 5m0s (evaluation of stage 1 (10%))"),
        (Analyze(("edge-a",)), "analyze 1.2.0 on edge-a"),
        (Rollback(("edge-a",)), "roll back edge-a to the old version"),
        (Retire(("edge-a",), after=3600.0), "retire the old version on edge-a after 1h0m0s"),
        (Retire(("edge-a",)), "retire the old version on edge-a"),
        (Finish(RolloutState.PAUSED, "partial"), "finish PAUSED: partial"),
        (
            Gate("promote 1.2.0 to stage 2 (25%)"),
            "wait for `gitopsd promote` or `gitopsd abort`: promote 1.2.0 to stage 2 (25%)",
        ),
        (
            Compare(("a",), ("b",), "avg_latency_ms", 10.0, "lower_is_better", 1000),
            "compare 1.2.0 on b (B) with the old version on a (A): B wins if avg_latency_ms "
            "is at least 10% lower, with at least 1000 requests on each side",
        ),
    ],
)
def test_describe_step(step, text):
    assert describe_step(step, "1.2.0") == text


def test_describe_step_shortens_long_node_lists():
    nodes = tuple(f"edge-{i}" for i in range(10))
    assert describe_step(Deploy(nodes)) == (
        "deploy the new version to edge-0, edge-1, edge-2, edge-3, edge-4, edge-5 and 4 more"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (1.5, "1.5s"), (30, "30s"), (60, "1m0s"), (330, "5m30s"), (5400, "1h30m0s")],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def _no_finish() -> Plan:
    yield Deploy(("a",))


def _endless() -> Plan:
    while True:
        yield Wait(1.0, "forever")


def _ok(step: Step) -> StepOutcome:
    return StepOutcome.all_ok()


def test_run_plan_refuses_plans_without_finish_or_end():
    with pytest.raises(RuntimeError, match="without a Finish"):
        run_plan(_no_finish(), _ok)
    with pytest.raises(RuntimeError, match="after 50 steps"):
        run_plan(_endless(), _ok, max_steps=50)
