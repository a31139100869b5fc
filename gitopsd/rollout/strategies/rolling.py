"""Rolling: update the nodes batch by batch, in context order, stopping at the first bad batch.

On a failed batch the remaining batches are skipped and, by default, every node touched so
far goes back to the old version (seed "rollback_on_error"). With `pauseOnFailure` only the
failed batch is rolled back and the rollout stops PAUSED, earlier batches staying on the new
version (seed "PartialSuccess").
"""

from __future__ import annotations

from typing import ClassVar

from gitopsd.manifest.strategy_options import RollingOptions
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
    Touched,
    no_nodes,
    retire,
    rollback_and_finish,
    run,
    wait,
)


class RollingStrategy:
    """Batches of `batchSize` nodes: deploy, health check, full traffic, analysis, delay."""

    name: ClassVar[str] = "rolling"
    options_model: ClassVar[type[RollingOptions]] = RollingOptions

    def __init__(self, options: RollingOptions | None = None) -> None:
        self.options = options or RollingOptions()

    def batches(self, ctx: PlanContext) -> list[Nodes]:
        """The context's nodes cut into batches of `batchSize`, in order."""
        size = self.options.batch_size
        nodes = ctx.node_names
        return [nodes[i : i + size] for i in range(0, len(nodes), size)]

    def plan(self, ctx: PlanContext) -> Plan:
        """Yield the rollout's steps; see the module docstring."""
        if not ctx.nodes:
            yield from no_nodes(ctx)
            return
        opts = self.options
        batches = self.batches(ctx)
        touched = Touched()
        for index, batch in enumerate(batches, start=1):
            last = index == len(batches)
            failure = yield from run(
                Deploy(batch),
                HealthCheck(batch, timeout=opts.health_check_timeout),
                SetTraffic(batch, 100.0),
                Analyze(batch),
                None
                if last
                else wait(opts.batch_delay, f"delay after batch {index} of {len(batches)}"),
                touched=touched,
            )
            if failure is None:
                continue
            where = f"batch {index} of {len(batches)}"
            if opts.pause_on_failure:
                done = len(touched.nodes) - len(batch)
                reason = (
                    f"partial success: {done} of {len(ctx.nodes)} nodes on {ctx.version}; "
                    f"{failure} ({where}), that batch rolled back"
                )
                yield from rollback_and_finish(batch, reason, RolloutState.PAUSED)
            else:
                reason = f"rolled back {ctx.version}: {failure} ({where})"
                yield from rollback_and_finish(touched.nodes, reason)
            return
        note = yield from retire(ctx)
        yield Finish(
            RolloutState.COMPLETED,
            f"{ctx.version} on {len(ctx.nodes)} nodes in {len(batches)} batches{note}",
        )
