"""Feature flag: load the new version everywhere, then send `initialRollout` % of users to it.

The flag is the traffic weight on every node, with sticky bucketing on the function's
`stickyHeader`, so a user keeps one version while the percentage grows. The old version is
not retired: it still serves everyone outside the flag. Turning the flag off (0 %) is the
rollback (seed). Flag name: `flagName`, else `ff_{function}_{version}` (seed).
"""

from __future__ import annotations

from typing import ClassVar

from gitopsd.manifest.strategy_options import FeatureFlagOptions
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
from gitopsd.rollout.strategies._common import no_nodes, pct, rollback_and_finish, run


class FeatureFlagStrategy:
    """Everywhere at once, behind a percentage of users."""

    name: ClassVar[str] = "feature-flag"
    options_model: ClassVar[type[FeatureFlagOptions]] = FeatureFlagOptions

    def __init__(self, options: FeatureFlagOptions | None = None) -> None:
        self.options = options or FeatureFlagOptions()

    def flag_name(self, ctx: PlanContext) -> str:
        """The configured flag name, or the seed's `ff_{function}_{version}`."""
        return self.options.flag_name or f"ff_{ctx.function}_{ctx.version}"

    def plan(self, ctx: PlanContext) -> Plan:
        """Yield the rollout's steps; see the module docstring."""
        if not ctx.nodes:
            yield from no_nodes(ctx)
            return
        nodes = ctx.node_names
        flag = self.flag_name(ctx)
        share = self.options.initial_rollout
        failure = yield from run(
            Deploy(nodes), HealthCheck(nodes), SetTraffic(nodes, share), Analyze(nodes)
        )
        if failure is not None:
            reason = f"flag {flag} turned off (0%), rolled back {ctx.version}: {failure}"
            yield from rollback_and_finish(nodes, reason)
            return
        yield Finish(
            RolloutState.COMPLETED,
            f"flag {flag} on for {pct(share)} of users: {ctx.version} loaded on "
            f"{len(nodes)} nodes beside the old version",
        )
