from __future__ import annotations

from gitopsd.manifest.strategy_options import FeatureFlagOptions
from gitopsd.rollout.steps import (
    Analyze,
    Deploy,
    Finish,
    HealthCheck,
    Rollback,
    RolloutState,
    SetTraffic,
)
from gitopsd.rollout.strategies.feature_flag import FeatureFlagStrategy

ALL = ("n1", "n2", "n3")


def flag(**options: object) -> FeatureFlagStrategy:
    return FeatureFlagStrategy(FeatureFlagOptions.model_validate(options))


def test_default_flag_name_and_percentage_without_retiring_old(drive, ctx):
    steps = drive(flag(initialRollout=15), ctx(3))
    assert steps == [
        Deploy(ALL),
        HealthCheck(ALL),
        SetTraffic(ALL, 15.0),
        Analyze(ALL),
        Finish(
            RolloutState.COMPLETED,
            "flag ff_img_1.2.0 on for 15% of users: 1.2.0 loaded on 3 nodes beside the old version",
        ),
    ]


def test_named_flag_defaults_to_zero_percent(drive, ctx):
    steps = drive(flag(flagName="new-resizer"), ctx(3))
    assert SetTraffic(ALL, 0.0) in steps
    final = steps[-1]
    assert isinstance(final, Finish)
    assert "flag new-resizer on for 0% of users" in final.message


def test_failure_turns_the_flag_off(drive, ctx):
    steps = drive(flag(initialRollout=50), ctx(3), fail={"analyze": {"n2"}})
    assert steps[-2] == Rollback(ALL)
    final = steps[-1]
    assert isinstance(final, Finish)
    assert final.state is RolloutState.ROLLED_BACK
    assert final.message.startswith("flag ff_img_1.2.0 turned off (0%)")
