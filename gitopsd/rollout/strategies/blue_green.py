"""Blue-green: load the new version (green) beside the old (blue) on every node, then flip.

Both versions run side by side on each node (design.md), so the capacity check is per node:
each must have memory for one more instance. Every node is deployed and health-checked
before deciding (seed: "attempts all nodes before deciding"). The flip is one SetTraffic to
100 % on all nodes; rolling back flips back while blue is still loaded, which is instant.
"""

from __future__ import annotations

from typing import ClassVar

from gitopsd.manifest.strategy_options import BlueGreenOptions
from gitopsd.rollout.steps import (
    Analyze,
    Deploy,
    Finish,
    HealthCheck,
    Plan,
    PlanContext,
    RolloutState,
    SetTraffic,
)
from gitopsd.rollout.strategies._common import (
    Failure,
    names,
    no_nodes,
    passed,
    retire,
    rollback_and_finish,
    run,
    wait,
)


class BlueGreenStrategy:
    """Deploy everywhere, check everywhere, flip all traffic at once, keep blue for a while."""

    name: ClassVar[str] = "blue-green"
    options_model: ClassVar[type[BlueGreenOptions]] = BlueGreenOptions

    def __init__(self, options: BlueGreenOptions | None = None) -> None:
        self.options = options or BlueGreenOptions()

    def plan(self, ctx: PlanContext) -> Plan:
        """Yield the rollout's steps; see the module docstring."""
        if not ctx.nodes:
            yield from no_nodes(ctx)
            return
        opts = self.options
        need = {n.name: n.memory_mib or ctx.memory_mib for n in ctx.nodes}
        short = [
            n.name
            for n in ctx.nodes
            if n.memory_free_mib is not None and n.memory_free_mib < need[n.name]
        ]
        if short:
            wanted = sorted({need[n] for n in short})
            each = " or ".join(f"{m:g}" for m in wanted)
            yield Finish(
                RolloutState.FAILED,
                f"not enough memory for blue and green side by side on {names(short)}: "
                f"{each} MiB needed per node",
            )
            return

        nodes = ctx.node_names
        deploy = Deploy(nodes)
        outcome = yield deploy
        problems = [] if passed(outcome) else [Failure.of(deploy, outcome)]
        # Check every node that loaded green, even after a deploy failure elsewhere: one
        # attempt gives the operator the whole picture.
        unloaded = set(problems[0].nodes) if problems else set()
        loaded = tuple(n for n in nodes if n not in unloaded)
        if loaded:
            check = HealthCheck(loaded, timeout=opts.health_check_timeout)
            checked = yield check
            if not passed(checked):
                problems.append(Failure.of(check, checked))
        if problems:
            reason = "; ".join(str(p) for p in problems)
            yield from rollback_and_finish(nodes, f"rolled back {ctx.version}: {reason}")
            return

        failure = yield from run(
            wait(opts.switch_delay, "switch delay before the traffic flip"),
            SetTraffic(nodes, 100.0),
            Analyze(nodes),
        )
        if failure is not None:
            reason = f"flipped back to the old version: {failure}"
            yield from rollback_and_finish(nodes, reason)
            return
        after = opts.blue_retention_period if opts.keep_blue_environment else 0.0
        note = yield from retire(ctx, after=after)
        yield Finish(
            RolloutState.COMPLETED,
            f"traffic flipped to {ctx.version} on all {len(nodes)} nodes{note}",
        )
