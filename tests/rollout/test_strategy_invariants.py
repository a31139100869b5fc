"""Properties every strategy keeps, whatever fails where."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitopsd.rollout.steps import Deploy, Finish, Retire, Rollback, RolloutState, Step, Wait
from gitopsd.rollout.strategies import create_strategy
from gitopsd.rollout.strategies._common import share, step_nodes

OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("rolling", {"batchSize": 2}),
    ("rolling", {"batchSize": 3, "pauseOnFailure": True}),
    ("blue-green", {"switchDelay": "PT5S"}),
    ("canary", {}),
    ("canary", {"autoPromote": False, "stages": [30, 60, 100], "trafficWeights": [5, 50, 90]}),
    ("regional", {"regionOrder": ["b"]}),
    ("regional", {"abortOnRegionFailure": True}),
    ("ab-test", {"variantBPercentage": 30}),
    ("feature-flag", {"initialRollout": 10}),
]
KINDS = ("deploy", "health", "traffic", "analyze", "rollback", "retire")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, int], dict[str, Any]]:
    name, options = draw(st.sampled_from(OPTIONS))
    counts = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    regions = {region: c for region, c in zip("abc", counts, strict=False)}
    nodes = [f"{r}-{i}" for r, c in regions.items() for i in range(1, c + 1)]
    fail = draw(st.dictionaries(st.sampled_from(KINDS), st.sets(st.sampled_from(nodes))))
    script = {
        "fail": fail,
        "verdict": draw(st.sampled_from(["A", "B", "inconclusive"])),
        "gate_ok": draw(st.booleans()),
        "fail_steps": draw(st.sets(st.integers(0, 30), max_size=2)),
    }
    return name, options, regions, script


def drive_twice(drive, name, options, context, script) -> list[Step]:
    first = drive(create_strategy(name, **options), context, **script)
    second = drive(create_strategy(name, **options), context, **script)
    assert first == second  # deterministic: same outcomes, same steps
    return first


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios())
def test_plans_are_deterministic_and_well_formed(drive, ctx, scenario):
    name, options, regions, script = scenario
    context = ctx(regions=regions)
    steps = drive_twice(drive, name, options, context, script)
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.message
    assert not any(isinstance(s, Finish) for s in steps[:-1])
    for step in steps:
        if isinstance(step, Wait):
            assert step.seconds > 0
        elif step.kind not in ("gate", "finish"):
            assert step_nodes(step), step
    deployed = {n for s in steps if isinstance(s, Deploy) for n in s.nodes}
    rolled_back = {n for s in steps if isinstance(s, Rollback) for n in s.nodes}
    retired = {n for s in steps if isinstance(s, Retire) for n in s.nodes}
    assert not retired & rolled_back  # never unload the old version where it serves again
    if final.state is RolloutState.COMPLETED:
        assert deployed == set(context.node_names)
        assert not rolled_back
    if final.state is RolloutState.ROLLED_BACK:
        assert deployed <= rolled_back


def test_same_outcomes_give_identical_steps_for_every_strategy(drive, ctx):
    context = ctx(regions={"a": 3, "b": 2})
    for name, options in OPTIONS:
        for script in ({}, {"fail": {"health": {"b-1"}}}, {"verdict": "A", "gate_ok": False}):
            assert drive_twice(drive, name, options, context, script)


@pytest.mark.parametrize(
    ("total", "percent", "expected"),
    [
        (5, 10, 1),
        (15, 10, 2),
        (30, 10, 3),  # 30 * 0.1 is 3.0000000000000004 in floats: must stay 3
        (10, 30, 3),
        (7, 100, 7),
        (4, 0, 1),
        (3, 33.3, 1),
        (3, 33.4, 2),
        (0, 50, 0),
    ],
)
def test_share_is_ceil_at_least_one(total, percent, expected):
    assert share(total, percent) == expected


@pytest.mark.parametrize(
    "name", ["rolling", "blue-green", "canary", "regional", "ab-test", "feature-flag"]
)
def test_no_nodes_is_a_failure(drive, ctx, name):
    steps = drive(create_strategy(name), ctx(0))
    assert len(steps) == 1
    assert steps[0] == Finish(
        RolloutState.FAILED,
        "no target nodes for img: check spec.targets and the EdgeNode manifests",
    )
