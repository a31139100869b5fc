"""Canary: grow the share of nodes on the new version stage by stage, judging every stage.

Stage i covers `ceil(nodes * stages[i] / 100)` nodes, at least one (design.md), the first ones
in context order; each stage deploys only the nodes it adds. Inside a canary node the new
version takes `trafficWeights[i]` % of requests (default 100). Every stage but the last waits
`evaluationPeriod` before its analysis; an inconclusive analysis waits longer and looks again
(`judged`, up to autoRollback.analysis.maxExtension in all); without `autoPromote` an operator
gate opens each stage after the first. Any failure rolls back every node touched so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gitopsd.manifest.strategy_options import CanaryOptions
from gitopsd.rollout.steps import (
    Deploy,
    Finish,
    Gate,
    HealthCheck,
    Nodes,
    Plan,
    PlanContext,
    RolloutState,
    SetTraffic,
)
from gitopsd.rollout.strategies._common import (
    Touched,
    judged,
    no_nodes,
    passed,
    pct,
    retire,
    rollback_and_finish,
    run,
    share,
    wait,
)


@dataclass(frozen=True)
class CanaryStage:
    """One stage as planned: its number in the manifest, its share and its nodes."""

    number: int  # 1-based, as the operator counts stages in the manifest
    percent: float
    nodes: Nodes  # every canary node so far
    new_nodes: Nodes  # the ones this stage adds
    weight: float  # the new version's share of traffic on `nodes`

    @property
    def label(self) -> str:
        return f"stage {self.number} ({pct(self.percent)})"


class CanaryStrategy:
    """Stages of a growing node share (default 10, 25, 50, 100 %), each evaluated in turn."""

    name: ClassVar[str] = "canary"
    options_model: ClassVar[type[CanaryOptions]] = CanaryOptions

    def __init__(self, options: CanaryOptions | None = None) -> None:
        self.options = options or CanaryOptions()

    def stages(self, ctx: PlanContext) -> list[CanaryStage]:
        """The stages that change something on this fleet.

        On a small fleet several stages round to the same node count (10 % and 25 % of 4
        nodes are both 1 node); such a stage would only repeat the previous evaluation, so
        it is dropped unless it changes the traffic weight.
        """
        all_nodes = ctx.node_names
        weights = self.options.traffic_weights or [100.0] * len(self.options.stages)
        planned: list[CanaryStage] = []
        for number, (percent, weight) in enumerate(
            zip(self.options.stages, weights, strict=True), start=1
        ):
            count = share(len(all_nodes), percent)
            done = len(planned[-1].nodes) if planned else 0
            if planned and count == done and weight == planned[-1].weight:
                continue
            planned.append(
                CanaryStage(number, percent, all_nodes[:count], all_nodes[done:count], weight)
            )
        return planned

    def plan(self, ctx: PlanContext) -> Plan:
        """Yield the rollout's steps; see the module docstring."""
        if not ctx.nodes:
            yield from no_nodes(ctx)
            return
        opts = self.options
        stages = self.stages(ctx)
        touched = Touched()
        compared = ""
        for index, stage in enumerate(stages):
            if index > 0 and not opts.auto_promote:
                gate = yield Gate(
                    f"promote {ctx.version} to {stage.label}: "
                    f"{len(stage.nodes)} of {len(ctx.nodes)} nodes"
                )
                if not passed(gate):
                    reason = f"aborted before {stage.label}: rolled back {ctx.version}"
                    yield from rollback_and_finish(touched.nodes, reason)
                    return
            last = index == len(stages) - 1
            new = stage.new_nodes
            failure = yield from run(
                Deploy(new) if new else None,
                HealthCheck(new, opts.success_threshold, opts.failure_threshold) if new else None,
                SetTraffic(stage.nodes, stage.weight),
                None if last else wait(opts.evaluation_period, f"evaluation of {stage.label}"),
                touched=touched,
            )
            if failure is None:
                failure, outcome = yield from judged(stage.nodes, stage.label)
                if failure is None and outcome.figures.get("old_requests", 0) > 0:
                    compared = outcome.message  # the last verdict against the old version
            if failure is not None:
                reason = f"rolled back {ctx.version}: {failure} ({stage.label})"
                yield from rollback_and_finish(touched.nodes, reason)
                return
        if stages[-1].weight < 100:
            failure = yield from run(SetTraffic(ctx.node_names, 100.0))
            if failure is not None:
                reason = f"rolled back {ctx.version}: {failure} (final switch to 100%)"
                yield from rollback_and_finish(touched.nodes, reason)
                return
        note = yield from retire(ctx)
        judged_by = f"; judged: {compared}" if compared else ""
        yield Finish(
            RolloutState.COMPLETED,
            f"{ctx.version} on all {len(ctx.nodes)} nodes after {len(stages)} stages"
            f"{note}{judged_by}",
        )
