"""A third-party strategy, as a plugin package would ship it (see docs/strategies.md).

"shadow": load the new version on every node next to the old one with no traffic, check
its health, wait, analyse, then flip all traffic to it at once; a failed check or analysis
unloads it again (users never saw it). Only gitopsd's public plugin API is used.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gitopsd.manifest.durations import Duration
from gitopsd.rollout.steps import (
    Analyze,
    Deploy,
    Finish,
    HealthCheck,
    Plan,
    PlanContext,
    Rollback,
    RolloutState,
    SetTraffic,
    Wait,
)


class ShadowOptions(BaseModel):
    """`spec.strategy` options of `type: shadow` (camelCase in manifests)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    observe_for: Duration = Field(60.0, alias="observeFor", description="Wait before analysis.")
    analyse: bool = Field(True, description="Judge the metrics before the flip.")


class ShadowStrategy:
    name: ClassVar[str] = "shadow"
    options_model: ClassVar[type[ShadowOptions]] = ShadowOptions

    def __init__(self, options: ShadowOptions) -> None:
        self.options = options

    def plan(self, ctx: PlanContext) -> Plan:
        nodes = tuple(n.name for n in ctx.nodes)
        if not nodes:
            yield Finish(RolloutState.COMPLETED, "no target nodes")
            return
        for step in (Deploy(nodes), HealthCheck(nodes)):
            outcome = yield step
            if not outcome.ok:
                yield Rollback(nodes)
                yield Finish(RolloutState.ROLLED_BACK, f"shadow {step.kind} failed")
                return
        yield SetTraffic(nodes, 0)
        yield Wait(self.options.observe_for, "shadow: observing the new version at 0 %")
        if self.options.analyse:
            verdict = yield Analyze(nodes)
            if not verdict.ok:
                yield Rollback(nodes)
                yield Finish(RolloutState.ROLLED_BACK, "shadow analysis failed")
                return
        yield SetTraffic(nodes, 100)
        yield Finish(RolloutState.COMPLETED, f"flipped {len(nodes)} node(s) after the shadow")
