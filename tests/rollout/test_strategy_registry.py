from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import structlog
from pydantic import BaseModel, ConfigDict

from gitopsd.manifest.strategy_options import BlueGreenOptions, CanaryOptions, RollingOptions
from gitopsd.rollout.steps import Finish, Plan, PlanContext, RolloutState
from gitopsd.rollout.strategies import (
    ENTRY_POINT_GROUP,
    AbTestStrategy,
    BlueGreenStrategy,
    CanaryStrategy,
    RollingStrategy,
    create_strategy,
    known_strategies,
    load_plugins,
    strategy_for,
)

# --- a third-party strategy, loaded through a real EntryPoint pointing at this module ---------


class ShadowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    mirror_percent: float = 5.0


class ShadowStrategy:
    name: ClassVar[str] = "shadow"
    options_model: ClassVar[type[ShadowOptions]] = ShadowOptions

    def __init__(self, options: ShadowOptions) -> None:
        self.options = options

    def plan(self, ctx: PlanContext) -> Plan:
        yield Finish(RolloutState.COMPLETED, f"mirrored {self.options.mirror_percent:g}%")


def make_noop(**options: Any) -> ShadowStrategy:
    """A plain callable plugin: any keyword options."""
    return ShadowStrategy(ShadowOptions(mirror_percent=float(options.get("percent", 0))))


class FakeRolling(ShadowStrategy):
    name: ClassVar[str] = "rolling"  # tries to take over a built-in


def _entry(name: str, target: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, f"{__name__}:{target}", ENTRY_POINT_GROUP)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    entries = [
        _entry("shadow", "ShadowStrategy"),
        _entry("noop", "make_noop"),
        _entry("rolling-plus", "FakeRolling"),
        _entry("broken", "DoesNotExist"),
    ]

    def fake_entry_points(**params: Any) -> list[importlib.metadata.EntryPoint]:
        return [e for e in entries if e.group == params.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    load_plugins(refresh=True)
    yield
    monkeypatch.undo()
    load_plugins(refresh=True)


# --- built-ins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "cls"),
    [
        ("rolling", RollingStrategy),
        ("blue-green", BlueGreenStrategy),
        ("blue_green", BlueGreenStrategy),
        ("BlueGreen", BlueGreenStrategy),
        ("Canary", CanaryStrategy),
        ("ABTesting", AbTestStrategy),
        ("ab_test", AbTestStrategy),
    ],
)
def test_manifest_and_seed_spellings(spelling, cls):
    assert isinstance(create_strategy(spelling), cls)


def test_options_by_alias_or_field_name():
    by_alias = create_strategy("rolling", batchSize=3, batchDelay="PT1M", pauseOnFailure=True)
    by_field = create_strategy("rolling", batch_size=3, batch_delay=60, pause_on_failure=True)
    assert isinstance(by_alias, RollingStrategy) and isinstance(by_field, RollingStrategy)
    assert (
        by_alias.options
        == by_field.options
        == RollingOptions(batchSize=3, batchDelay=60.0, pauseOnFailure=True)
    )


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown strategy 'big-bang'.*rolling, blue-green"):
        create_strategy("big-bang")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stages": [10, 50]}, r"options: the last stage must be 100"),
        ({"evaluationPeriod": "soon"}, r"evaluationPeriod: .*invalid duration 'soon'"),
        ({"speed": 11}, r"speed: Extra inputs are not permitted"),
    ],
)
def test_bad_options_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message) as info:
        create_strategy("canary", **options)
    assert type(info.value) is ValueError  # not pydantic's ValidationError subclass


def test_strategy_for_validated_manifest_options():
    assert isinstance(strategy_for(BlueGreenOptions()), BlueGreenStrategy)
    canary = strategy_for(CanaryOptions(stages=[50, 100]))
    assert isinstance(canary, CanaryStrategy)
    assert canary.options.stages == [50.0, 100.0]


# --- plugins --------------------------------------------------------------------------------


@pytest.mark.usefixtures("plugins")
def test_plugin_class_gets_validated_options():
    strategy = create_strategy("shadow", mirror_percent=12)
    assert isinstance(strategy, ShadowStrategy)
    assert strategy.options.mirror_percent == 12.0
    with pytest.raises(ValueError, match="invalid options for strategy 'shadow'"):
        create_strategy("shadow", mirror_percent="lots")


@pytest.mark.usefixtures("plugins")
def test_plain_callable_plugin():
    strategy = create_strategy("noop", percent=3)
    assert isinstance(strategy, ShadowStrategy)
    assert strategy.options.mirror_percent == 3.0


@pytest.mark.usefixtures("plugins")
def test_plugin_cannot_replace_a_built_in_and_broken_ones_are_skipped():
    with structlog.testing.capture_logs() as logs:
        load_plugins(refresh=True)
    events = {(entry["event"], entry.get("entry_point")) for entry in logs}
    assert (
        "strategy plugin tries to replace a built-in strategy: ignored",
        f"{__name__}:FakeRolling",
    ) in events
    assert ("strategy plugin failed to load", f"{__name__}:DoesNotExist") in events
    assert isinstance(create_strategy("rolling"), RollingStrategy)
    assert known_strategies() == [
        "rolling",
        "blue-green",
        "canary",
        "regional",
        "ab-test",
        "feature-flag",
        "noop",
        "shadow",
    ]


def test_without_plugins_only_built_ins():
    load_plugins(refresh=True)
    assert "shadow" not in known_strategies()
    with pytest.raises(ValueError, match="unknown strategy 'shadow'"):
        create_strategy("shadow")
