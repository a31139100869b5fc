"""The strategy registry: built-in strategies plus third-party ones from entry points.

A third-party package registers a strategy under the entry-point group `gitopsd.strategies`:

    [project.entry-points."gitopsd.strategies"]
    shadow = "acme_gitopsd:ShadowStrategy"

The object loaded is either a class with `name` and `options_model` (a pydantic model) class
attributes, built as `cls(options_model.model_validate(options))` like the built-ins, or any
callable taking the options as keyword arguments and returning a `Strategy`. Built-in names
cannot be taken over: such a plugin is logged and ignored.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from gitopsd.log import get_logger
from gitopsd.manifest.strategy_options import normalize_strategy_name
from gitopsd.manifest.strategy_plugins import (
    PluginStrategyOptions,
    StrategySpec,
    plugin_option_models,
)
from gitopsd.rollout.steps import Strategy
from gitopsd.rollout.strategies.ab_test import AbTestStrategy
from gitopsd.rollout.strategies.blue_green import BlueGreenStrategy
from gitopsd.rollout.strategies.canary import CanaryStrategy
from gitopsd.rollout.strategies.feature_flag import FeatureFlagStrategy
from gitopsd.rollout.strategies.regional import RegionalStrategy
from gitopsd.rollout.strategies.rolling import RollingStrategy

__all__ = [
    "BUILTIN_STRATEGIES",
    "ENTRY_POINT_GROUP",
    "AbTestStrategy",
    "BlueGreenStrategy",
    "CanaryStrategy",
    "FeatureFlagStrategy",
    "RegionalStrategy",
    "RollingStrategy",
    "StrategyFactory",
    "create_strategy",
    "known_strategies",
    "load_plugins",
    "strategy_for",
]

ENTRY_POINT_GROUP = "gitopsd.strategies"

StrategyFactory = Callable[..., Strategy]
"""Builds a strategy from options given as keyword arguments (camelCase or snake_case)."""

BUILTIN_STRATEGIES: Mapping[str, type[Any]] = {
    cls.name: cls
    for cls in (
        RollingStrategy,
        BlueGreenStrategy,
        CanaryStrategy,
        RegionalStrategy,
        AbTestStrategy,
        FeatureFlagStrategy,
    )
}

_plugins: dict[str, StrategyFactory] | None = None


def _class_factory(cls: type[Any]) -> StrategyFactory:
    """Options validated by the class's own model, as for the built-ins."""
    model: type[BaseModel] = cls.options_model

    def build(**options: Any) -> Strategy:
        strategy: Strategy = cls(model.model_validate(options))
        return strategy

    return build


def _factory(loaded: object) -> tuple[str | None, StrategyFactory] | None:
    """(declared name, factory) for an entry point's object, or None if it is unusable."""
    declared = getattr(loaded, "name", None)
    if isinstance(loaded, type) and isinstance(getattr(loaded, "options_model", None), type):
        return (declared if isinstance(declared, str) else None), _class_factory(loaded)
    if callable(loaded):
        return (declared if isinstance(declared, str) else None), loaded
    return None


def load_plugins(*, refresh: bool = False) -> dict[str, StrategyFactory]:
    """Third-party strategies by normalized name, loaded once per process (or on `refresh`)."""
    global _plugins
    if _plugins is not None and not refresh:
        return _plugins
    if refresh:  # the manifests' view of the same entry points
        plugin_option_models(refresh=True)
    log = get_logger(component="strategies")
    found: dict[str, StrategyFactory] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            made = _factory(entry.load())
        except Exception as exc:  # a broken plugin must not take the daemon down
            log.warning("strategy plugin failed to load", entry_point=entry.value, error=str(exc))
            continue
        if made is None:
            log.warning("strategy plugin is not callable: ignored", entry_point=entry.value)
            continue
        declared, factory = made
        name = normalize_strategy_name(declared or entry.name)
        if name in BUILTIN_STRATEGIES:
            log.error(
                "strategy plugin tries to replace a built-in strategy: ignored",
                strategy=name,
                entry_point=entry.value,
            )
            continue
        if name in found:
            log.error("two strategy plugins share a name: the first one is kept", strategy=name)
            continue
        found[name] = factory
    _plugins = found
    return found


def known_strategies() -> list[str]:
    """Every strategy name `create_strategy` accepts (normalized), built-ins first."""
    return [*BUILTIN_STRATEGIES, *sorted(load_plugins())]


def _explain(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "options"
        problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def create_strategy(name: str, **options: Any) -> Strategy:
    """The strategy called `name` (manifest or seed spelling: `blue-green`, `blue_green`...).

    Options may use the manifest's camelCase names or the snake_case field names. Raises
    ValueError for an unknown name (listing the known ones) or invalid options.
    """
    key = normalize_strategy_name(name)
    builtin = BUILTIN_STRATEGIES.get(key)
    factory = _class_factory(builtin) if builtin is not None else load_plugins().get(key)
    if factory is None:
        known = ", ".join(known_strategies())
        raise ValueError(f"unknown strategy {name!r}: known strategies are {known}")
    try:
        return factory(**options)
    except ValidationError as exc:
        raise ValueError(f"invalid options for strategy {key!r}: {_explain(exc)}") from exc


def strategy_for(options: StrategySpec) -> Strategy:
    """The strategy of a manifest's validated `spec.strategy`: a built-in from its options,
    a plugin from its options as written (its model validated them when the manifest loaded)."""
    if isinstance(options, PluginStrategyOptions):
        return create_strategy(options.type, **options.options())
    strategy: Strategy = BUILTIN_STRATEGIES[options.type](options)
    return strategy
