"""Strategy test helpers: a context builder and a scripted plan driver (no network, no clock)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from gitopsd.rollout.preview import run_plan
from gitopsd.rollout.steps import (
    NodeResult,
    NodeTarget,
    PlanContext,
    Step,
    StepOutcome,
    Strategy,
)
from gitopsd.rollout.strategies._common import step_nodes


def build_ctx(
    n: int = 5,
    *,
    regions: Mapping[str, int] | None = None,
    old: str | None = "1.1.0",
    free: Mapping[str, float] | None = None,
    memory_mib: float = 64.0,
    version: str = "1.2.0",
) -> PlanContext:
    """Nodes n1..nN in one region `r`, or `regions` {region: count} with names `<region>-<i>`."""
    if regions is None:
        names = [(f"n{i}", "r") for i in range(1, n + 1)]
    else:
        names = [(f"{r}-{i}", r) for r, count in regions.items() for i in range(1, count + 1)]
    free = free or {}
    nodes = tuple(NodeTarget(name, region, old, free.get(name)) for name, region in names)
    return PlanContext("img", version, nodes, memory_mib)


@dataclass
class Script:
    """Answers every step "all ok" except what the test asks to fail.

    `fail` maps a step kind ("deploy", "health", "traffic", "analyze", "rollback", "retire")
    to the nodes that fail in any step of that kind; `fail_steps` makes the steps at those
    indexes fail as a whole (no per-node results). `verdict` answers Compare, `gate_ok` Gate.
    """

    fail: Mapping[str, Collection[str]] = field(default_factory=dict)
    fail_steps: Collection[int] = ()
    verdict: str = "B"
    gate_ok: bool = True
    seen: int = 0

    def __call__(self, step: Step) -> StepOutcome:
        index, self.seen = self.seen, self.seen + 1
        if index in self.fail_steps:
            return StepOutcome(ok=False, message=f"step {index} failed")
        if step.kind == "gate":
            return StepOutcome(ok=self.gate_ok)
        if step.kind == "compare":
            return StepOutcome(ok=True, verdict=self.verdict, message=f"verdict {self.verdict}")
        bad = set(self.fail.get(step.kind, ()))
        results = tuple(
            NodeResult(n, n not in bad, "" if n not in bad else "boom") for n in step_nodes(step)
        )
        ok = all(r.ok for r in results)
        verdict = ("pass" if ok else "fail") if step.kind == "analyze" else ""
        return StepOutcome(ok=ok, nodes=results, verdict=verdict)


class Drive(Protocol):
    def __call__(self, strategy: Strategy, ctx: PlanContext, **script: Any) -> list[Step]: ...


def _drive(strategy: Strategy, ctx: PlanContext, **script: Any) -> list[Step]:
    return run_plan(strategy.plan(ctx), Script(**script))


@pytest.fixture(scope="session")
def drive() -> Drive:
    """drive(strategy, ctx, fail={...}, fail_steps=..., verdict=..., gate_ok=...) → steps."""
    return _drive


@pytest.fixture(scope="session")
def ctx() -> Callable[..., PlanContext]:
    """build_ctx(n, regions=..., old=..., free=..., memory_mib=...)."""
    return build_ctx
