"""Regional: one region at a time, in `regionOrder`, with a delay to watch each region.

Regions named in `regionOrder` come first, in that order (named regions without nodes are
skipped); the fleet's other regions follow alphabetically, so no targeted node is left out.
A failing region is rolled back on its own. With `abortOnRegionFailure` the rollout stops
there; otherwise it carries on and ends FAILED, naming the regions that kept the old version.
"""

from __future__ import annotations

from typing import ClassVar

from gitopsd.manifest.strategy_options import RegionalOptions
from gitopsd.rollout.steps import (
    Analyze,
    Deploy,
    Finish,
    HealthCheck,
    Nodes,
    Plan,
    PlanContext,
    RolloutState,
    SetTraffic,
)
from gitopsd.rollout.strategies._common import (
    SubPlan,
    names,
    no_nodes,
    retire,
    rollback,
    run,
    wait,
)


class RegionalStrategy:
    """Deploy, check, switch and watch region by region."""

    name: ClassVar[str] = "regional"
    options_model: ClassVar[type[RegionalOptions]] = RegionalOptions

    def __init__(self, options: RegionalOptions | None = None) -> None:
        self.options = options or RegionalOptions()

    def regions(self, ctx: PlanContext) -> list[tuple[str, Nodes]]:
        """(region, its nodes in context order) in rollout order; regions without nodes omitted."""
        by_region: dict[str, list[str]] = {}
        for node in ctx.nodes:
            by_region.setdefault(node.region, []).append(node.name)
        listed = [r for r in dict.fromkeys(self.options.region_order or []) if r in by_region]
        rest = sorted(r for r in by_region if r not in listed)
        return [(r, tuple(by_region[r])) for r in (*listed, *rest)]

    def plan(self, ctx: PlanContext) -> Plan:
        """Yield the rollout's steps; see the module docstring."""
        if not ctx.nodes:
            yield from no_nodes(ctx)
            return
        opts = self.options
        regions = self.regions(ctx)
        ok: list[str] = []
        failed: list[str] = []
        problems: list[str] = []
        stuck: list[str] = []  # nodes whose rollback failed
        for index, (region, nodes) in enumerate(regions, start=1):
            last = index == len(regions)
            delay = f"watching region {region} ({index} of {len(regions)})"
            failure = yield from run(
                Deploy(nodes),
                HealthCheck(nodes),
                SetTraffic(nodes, 100.0),
                None if last else wait(opts.inter_region_delay, delay),
                Analyze(nodes),
            )
            if failure is None:
                ok.append(region)
                continue
            failed.append(region)
            missed = yield from rollback(nodes)
            stuck.extend(missed)
            problem = f"{region}: {failure}"
            problems.append(f"{problem}; rollback failed on {names(missed)}" if missed else problem)
            if opts.abort_on_region_failure:
                break
        yield from self._finish(ctx, regions, ok, failed, problems, bool(stuck))

    @staticmethod
    def _finish(
        ctx: PlanContext,
        regions: list[tuple[str, Nodes]],
        ok: list[str],
        failed: list[str],
        problems: list[str],
        stuck: bool,
    ) -> SubPlan[None]:
        region_nodes = dict(regions)
        note = yield from retire(ctx, [n for r in ok for n in region_nodes[r]])
        if not failed:
            yield Finish(
                RolloutState.COMPLETED,
                f"{ctx.version} on {len(ctx.nodes)} nodes in {len(ok)} regions "
                f"({', '.join(ok)}){note}",
            )
            return
        why = "; ".join(problems)
        if not ok:
            # Every region tried is back on the old version (unless a rollback failed too).
            state = RolloutState.FAILED if stuck else RolloutState.ROLLED_BACK
            yield Finish(state, f"rolled back {ctx.version}: {why}")
            return
        skipped = [r for r, _ in regions if r not in ok and r not in failed]
        summary = f"partial: regions ok [{', '.join(ok)}], failed [{', '.join(failed)}]"
        if skipped:
            summary += f", not attempted [{', '.join(skipped)}]"
        yield Finish(RolloutState.FAILED, f"{summary}: {why}{note}")
