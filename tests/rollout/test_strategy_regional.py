from __future__ import annotations

from gitopsd.manifest.strategy_options import RegionalOptions
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
from gitopsd.rollout.strategies.regional import RegionalStrategy

FLEET = {"us-east": 2, "eu-central": 1, "apac": 1, "dev": 1}


def regional(**options: object) -> RegionalStrategy:
    return RegionalStrategy(RegionalOptions.model_validate(options))


def region_order(steps: list[object]) -> list[str]:
    return [s.nodes[0].rsplit("-", 1)[0] for s in steps if isinstance(s, Deploy)]


def test_default_order_is_alphabetical(drive, ctx):
    steps = drive(regional(), ctx(regions=FLEET))
    assert region_order(steps) == ["apac", "dev", "eu-central", "us-east"]


def test_explicit_order_first_then_unlisted_regions_alphabetically(drive, ctx):
    options = regional(regionOrder=["us-east", "mars", "eu-central"])  # mars has no nodes
    steps = drive(options, ctx(regions=FLEET))
    assert region_order(steps) == ["us-east", "eu-central", "apac", "dev"]


def test_region_steps_wait_between_regions_not_after_the_last(drive, ctx):
    steps = drive(regional(interRegionDelay="PT10M"), ctx(regions={"a": 1, "b": 2}))
    b = ("b-1", "b-2")
    assert steps == [
        Deploy(("a-1",)),
        HealthCheck(("a-1",)),
        SetTraffic(("a-1",), 100.0),
        Wait(600.0, "watching region a (1 of 2)"),
        Analyze(("a-1",)),
        Deploy(b),
        HealthCheck(b),
        SetTraffic(b, 100.0),
        Analyze(b),
        Retire(("a-1", "b-1", "b-2")),
        Finish(RolloutState.COMPLETED, "1.2.0 on 3 nodes in 2 regions (a, b)"),
    ]


def test_failed_region_is_rolled_back_and_the_rollout_continues(drive, ctx):
    steps = drive(regional(), ctx(regions={"a": 1, "b": 1, "c": 1}), fail={"health": {"b-1"}})
    assert region_order(steps) == ["a", "b", "c"]
    assert Rollback(("b-1",)) in steps
    assert Retire(("a-1", "c-1")) in steps  # b keeps its old version
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.FAILED
    assert final.message.startswith("partial: regions ok [a, c], failed [b]")


def test_abort_after_a_success_ends_failed_with_partial_regions(drive, ctx):
    options = regional(abortOnRegionFailure=True)
    steps = drive(options, ctx(regions={"a": 1, "b": 1, "c": 1}), fail={"analyze": {"b-1"}})
    assert region_order(steps) == ["a", "b"]
    assert steps[-3:-1] == [Rollback(("b-1",)), Retire(("a-1",))]
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.FAILED
    assert final.message.startswith("partial: regions ok [a], failed [b], not attempted [c]")


def test_abort_on_the_first_region_is_a_plain_rollback(drive, ctx):
    options = regional(abortOnRegionFailure=True)
    steps = drive(options, ctx(regions={"a": 2, "b": 1}), fail={"deploy": {"a-2"}})
    assert steps[:-1] == [Deploy(("a-1", "a-2")), Rollback(("a-1", "a-2"))]
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.ROLLED_BACK
