"""A/B test: the new version (B) on a share of nodes, compared with the old (A); the winner stays.

B gets the last `ceil(nodes * variantBPercentage / 100)` nodes in context order, at least one
(seed: A = Take(n - b), B = Skip(A)). After `experimentDuration` the engine compares both on
`winnerCriteria`: B wins → promote it to A's nodes; A wins or no clear answer → roll B back.
With no A to compare with (a single node, or no node serving an old version yet), B is kept
only if its analysis passes.
"""

from __future__ import annotations

from typing import ClassVar

from gitopsd.manifest.strategy_options import AbTestOptions
from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Deploy,
    Finish,
    HealthCheck,
    Nodes,
    Plan,
    PlanContext,
    RolloutState,
    SetTraffic,
    StepOutcome,
)
from gitopsd.rollout.strategies._common import (
    SubPlan,
    Touched,
    no_nodes,
    nodes_with_old,
    passed,
    pct,
    retire,
    rollback_and_finish,
    run,
    share,
    wait,
)


class AbTestStrategy:
    """Variant B on the last nodes for the experiment, then promote or roll back."""

    name: ClassVar[str] = "ab-test"
    options_model: ClassVar[type[AbTestOptions]] = AbTestOptions

    def __init__(self, options: AbTestOptions | None = None) -> None:
        self.options = options or AbTestOptions()

    def variants(self, ctx: PlanContext) -> tuple[Nodes, Nodes]:
        """(A nodes, B nodes): B is the last share of the context's nodes."""
        nodes = ctx.node_names
        split = len(nodes) - share(len(nodes), self.options.variant_b_percentage)
        return nodes[:split], nodes[split:]

    def plan(self, ctx: PlanContext) -> Plan:
        """Yield the rollout's steps; see the module docstring."""
        if not ctx.nodes:
            yield from no_nodes(ctx)
            return
        opts = self.options
        crit = opts.winner_criteria
        a, b = self.variants(ctx)
        touched = Touched()
        # The share asked for, then what it came to: 34 % of 4 nodes is 2 of 4, not "34 %".
        experiment = (
            f"experiment: {pct(opts.variant_b_percentage)} asked, {ctx.version} on {len(b)} of "
            f"{len(ctx.nodes)} nodes"
        )
        failure = yield from run(
            Deploy(b),
            HealthCheck(b),
            SetTraffic(b, 100.0),
            wait(opts.experiment_duration, experiment),
            touched=touched,
        )
        if failure is not None:
            yield from rollback_and_finish(b, f"rolled back variant B ({ctx.version}): {failure}")
            return
        serving_a = nodes_with_old(ctx, a)
        if serving_a:
            judged = yield Compare(
                serving_a, b, crit.metric, crit.threshold, crit.comparison, opts.minimum_sample_size
            )
        else:
            # One node, or a first deployment: no A serves anywhere to compare with, so B must
            # at least pass its own analysis.
            judged = _as_verdict((yield Analyze(b)))
        if judged.ok and judged.verdict == "B":
            # The verdict's own words (measured figures) are in that step's outcome; the
            # finish says what the preview can say too (`gitopsd diff --plan`).
            won = (
                "variant B won the comparison"
                if serving_a
                else "variant B passed its analysis (no variant A serving to compare with)"
            )
            yield from self._promote(ctx, a, touched, won)
        else:
            yield from rollback_and_finish(b, _losing_reason(ctx, judged))

    def _promote(self, ctx: PlanContext, a: Nodes, touched: Touched, won: str) -> SubPlan[None]:
        failure = yield from run(
            Deploy(a) if a else None,
            HealthCheck(a) if a else None,
            SetTraffic(a, 100.0) if a else None,
            touched=touched,
        )
        if failure is not None:
            reason = f"{won}, but promoting {ctx.version} failed: {failure}"
            yield from rollback_and_finish(touched.nodes, reason)
            return
        note = yield from retire(ctx)
        yield Finish(
            RolloutState.COMPLETED, f"{won}; {ctx.version} on all {len(ctx.nodes)} nodes{note}"
        )


def _as_verdict(analysis: StepOutcome) -> StepOutcome:
    """Read a single-node Analyze outcome as a Compare verdict: pass → B, fail → A."""
    won = passed(analysis)
    return StepOutcome(
        ok=True,
        nodes=analysis.nodes,
        verdict="B" if won else "A",
        message=analysis.message or ("analysis passed" if won else "analysis failed"),
        figures=analysis.figures,
    )


def _losing_reason(ctx: PlanContext, judged: StepOutcome) -> str:
    detail = f": {judged.message}" if judged.message else ""
    if not judged.ok:
        return f"comparison failed, rolled back variant B ({ctx.version}){detail}"
    if judged.verdict == "A":
        return f"variant A won, rolled back {ctx.version}{detail}"
    return f"inconclusive: kept A, rolled back {ctx.version}{detail}"
