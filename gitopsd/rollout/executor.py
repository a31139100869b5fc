"""How each step kind is carried out on the fleet. The engine decides *when*; this decides *how*.

Every action here is idempotent on the agents (loading a loaded version, setting the same
weights, deleting a deleted version), so a step interrupted by a crash is simply run again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from typing import Any

from gitopsd.errors import AgentError
from gitopsd.fleet.client import AgentClient, gather_nodes
from gitopsd.log import get_logger
from gitopsd.rollout import analysis, judge
from gitopsd.rollout.spec import RolloutSpec
from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Deploy,
    HealthCheck,
    NodeResult,
    Nodes,
    Retire,
    Rollback,
    SetTraffic,
    Step,
    StepOutcome,
)
from gitopsd.rollout.strategies._common import EXTENDING_STRATEGIES
from gitopsd.store.protocol import Store

SINCE = "since"  # prefix of the SetTraffic figures that snapshot a node's counters


class StepExecutor:
    """Carries out fleet steps of one rollout."""

    def __init__(
        self, spec: RolloutSpec, client: AgentClient, store: Store, now: Callable[[], float]
    ) -> None:
        self.spec = spec
        self.client = client
        self.store = store
        self.now = now
        self.log = get_logger(function=spec.function, version=spec.version, commit=spec.commit[:12])
        # Nodes that could not be reached when the new version was to be deployed: if they are
        # still unreachable at rollback, they never had the new version to roll back.
        self.unreached: set[str] = set()
        # The concurrent judge's bookkeeping, rebuilt from the journal on a restart: each
        # version's counters on a node when the new version began sharing its traffic there,
        # the new version's share per node, and the extension time spent.
        self.since: dict[str, dict[str, analysis.VersionFigures]] = {}
        self.new_percent: dict[str, float] = {}
        self.extensions = judge.ExtensionTally()

    def remember(self, step: Step, outcome: StepOutcome) -> None:
        """Learn from every outcome, live or replayed from the journal."""
        self.extensions.note(step, outcome)
        if isinstance(step, SetTraffic):
            ok = set(outcome.ok_nodes)
            for node, snapshot in _snapshots_from(outcome.figures).items():
                if node in ok:  # a node whose traffic did not move shares nothing yet
                    self.since.setdefault(node, snapshot)
            self.new_percent.update(dict.fromkeys(outcome.ok_nodes, step.new_percent))
        if isinstance(step, Deploy):
            for r in outcome.nodes:
                if not r.ok and r.detail.startswith("unreachable"):
                    self.unreached.add(r.node)
                elif r.ok:
                    self.unreached.discard(r.node)

    async def _per_node(self, nodes: Nodes, action: Callable[[str], Awaitable[str]]) -> StepOutcome:
        """Run `action` on every node; a node whose action raises AgentError has failed."""
        results = await gather_nodes(nodes, action)
        out: list[NodeResult] = []
        for node, result in results.items():
            if isinstance(result, AgentError):
                out.append(NodeResult(node, False, result.reason))
            elif isinstance(result, Exception):
                raise result
            else:
                out.append(NodeResult(node, True, result))
        ok = all(r.ok for r in out)
        failed = [f"{r.node}: {r.detail}" for r in out if not r.ok]
        return StepOutcome(ok=ok, nodes=tuple(out), message="; ".join(failed))

    def _untouched(self, node: str) -> bool:
        """Whether a node whose deploy got no answer surely serves what it served before.

        A load never moves traffic off an existing version, and a node that was down when
        the rollout was planned most likely never saw it. But a *first* version serves at
        once, so a lost answer from a node seen up may hide a load only reaching it can undo.
        """
        target = self.spec.node(node)
        return target.old_version is not None or target.unseen

    def _old(self, node: str) -> str | None:
        old = self.spec.node(node).old_version
        return old if old != self.spec.version else None

    # deploy / health / traffic ----------------------------------------------------------------

    async def deploy(self, step: Deploy) -> StepOutcome:
        wasm = self.store.module(self.spec.sha256)
        if wasm is None:
            return StepOutcome(ok=False, message=f"module {self.spec.sha256} missing from store")

        async def one(node: str) -> str:
            await self.client.ensure_module(node, self.spec.sha256, wasm)
            await self.client.load_version(
                node, self.spec.function, self.spec.version, self.spec.load_body(node)
            )
            return "loaded"

        return await self._per_node(step.nodes, one)

    async def health(self, step: HealthCheck) -> StepOutcome:
        h = self.spec.health
        need = step.success_threshold or h.success_threshold
        allowed = step.failure_threshold or h.failure_threshold
        timeout_ms = int((step.timeout or h.timeout) * 1000)

        async def one(node: str) -> str:
            successes = failures = 0
            last = ""
            while successes < need:
                try:
                    result = await self.client.health(
                        node, self.spec.function, self.spec.version, timeout_ms
                    )
                    ok, last = result.healthy, result.error or result.output
                except AgentError as exc:
                    ok, last = False, str(exc)
                if ok:
                    successes += 1
                    continue
                successes, failures = 0, failures + 1
                if failures >= allowed:
                    raise AgentError(node, f"health check failed {failures}x: {last!r}")
            return f"healthy ({successes}/{need})"

        return await self._per_node(step.nodes, one)

    def weights(self, node: str, new_percent: float) -> list[tuple[str, float]]:
        old = self._old(node)
        if old is None or new_percent >= 100:
            return [(self.spec.version, 100.0)]
        if new_percent <= 0:
            return [(old, 100.0)]
        return [(self.spec.version, new_percent), (old, 100.0 - new_percent)]

    async def traffic(self, step: SetTraffic) -> StepOutcome:
        snapshots: dict[str, Mapping[str, Any]] = {}

        async def one(node: str) -> str:
            weights = self.weights(node, step.new_percent)
            if self._shares(node, weights):
                # The old version's counters before it shares traffic with the new one: the
                # concurrent judge compares only what both served from now on.
                # A node whose metrics cannot be read now is left out of the comparison.
                with suppress(AgentError):
                    snapshots[node] = await self.client.metrics(node, self.spec.function)
            await self.client.set_traffic(
                node, self.spec.function, weights, self.spec.sticky_header
            )
            return ", ".join(f"{v}={p:g}%" for v, p in weights)

        outcome = await self._per_node(step.nodes, one)
        if not snapshots:
            return outcome
        return replace(outcome, figures=_snapshot_figures(snapshots))

    def _shares(self, node: str, weights: list[tuple[str, float]]) -> bool:
        """Whether the concurrent judge needs a snapshot of `node` before these weights."""
        return (
            self.spec.analysis.baseline == "concurrent"
            and len(weights) == 2
            and node not in self.since
        )

    # rollback / retire ------------------------------------------------------------------------

    async def rollback(self, step: Rollback) -> StepOutcome:
        """Every node back on its old version first, then the new version unloaded: users
        are back once the flips are done, and no flip waits behind another node's unload."""
        flipped: list[str] = []

        async def one(node: str) -> str:
            try:
                return await restore(node)
            except AgentError as exc:
                if node in self.unreached and exc.status is None and self._untouched(node):
                    return "unreachable; its traffic never moved to the new version"
                raise

        async def restore(node: str) -> str:
            if self.spec.node(node).serving_new:
                return f"left on {self.spec.version}, which it served before this rollout"
            old = self._old(node)
            if old is None:
                await self.client.delete_function(node, self.spec.function)
                return "removed"
            await self.client.set_traffic(
                node, self.spec.function, [(old, 100.0)], self.spec.sticky_header
            )
            flipped.append(node)
            return f"back on {old}"

        async def unload(node: str) -> str:
            await self.client.delete_version(node, self.spec.function, self.spec.version)
            return f"{self.spec.version} unloaded"

        flips = await self._per_node(step.nodes, one)
        unloads = {r.node: r for r in (await self._per_node(tuple(flipped), unload)).nodes}
        results = tuple(
            r
            if r.node not in unloads or unloads[r.node].ok
            else replace(r, ok=False, detail=f"{r.detail}, but {unloads[r.node].detail}")
            for r in flips.nodes
        )
        failed = [f"{r.node}: {r.detail}" for r in results if not r.ok]
        return StepOutcome(ok=not failed, nodes=results, message="; ".join(failed))

    async def retire(self, step: Retire) -> StepOutcome:
        async def one(node: str) -> str:
            old = self._old(node)
            if old is None:
                return "nothing to retire"
            if step.after > 0:
                self.store.schedule_retirement(
                    self.spec.function, node, old, self.now() + step.after
                )
                return f"{old} kept for {step.after:g}s"
            await self.client.delete_version(node, self.spec.function, old)
            return f"{old} unloaded"

        return await self._per_node(step.nodes, one)

    # analysis -----------------------------------------------------------------------------------

    async def _figures_and_baseline(
        self, nodes: Nodes
    ) -> tuple[
        dict[str, analysis.VersionFigures], dict[str, str], dict[str, analysis.VersionFigures]
    ]:
        """The new version's figures per node, who did not answer, and the old version's
        figures on the same nodes (from the same metrics answer: one call per node)."""
        results = await gather_nodes(nodes, lambda n: self.client.metrics(n, self.spec.function))
        new: dict[str, analysis.VersionFigures] = {}
        old: dict[str, analysis.VersionFigures] = {}
        silent: dict[str, str] = {}
        for node, result in results.items():
            if isinstance(result, Exception):
                silent[node] = str(result)
                continue
            if self.spec.version in result:
                new[node] = analysis.summarize(_as_mapping(result[self.spec.version]))
            previous = self._old(node)
            if previous is not None and previous in result:
                old[node] = analysis.summarize(_as_mapping(result[previous]))
        return new, silent, old

    async def analyze(self, step: Analyze) -> StepOutcome:
        """One look by the function's judge (gitopsd.rollout.judge): today's thresholds on
        every node's cumulative figures, or the concurrent comparison on what each version
        served since they shared a node, with the triggers as hard limits."""
        figures, silent, old = await self._figures_and_baseline(step.nodes)
        settings = self.spec.analysis
        new_since = {
            n: judge.since(f, self.since.get(n, {}).get(self.spec.version))
            for n, f in figures.items()
        }
        old_since: dict[str, analysis.VersionFigures] = {}
        for node, fig in old.items():
            before = self.since.get(node, {}).get(self._old(node) or "")
            # Only where the old version still shares the node's traffic with the new one.
            if before is not None and 0 < self.new_percent.get(node, 100.0) < 100:
                old_since[node] = judge.since(fig, before)
        return judge.look(
            figures,
            old,
            silent,
            self.spec.triggers,
            settings,
            new_since=new_since,
            old_since=old_since,
            # Only strategies that wait on an inconclusive analysis can use more time.
            extension_left=self.extensions.left(settings)
            if self.spec.strategy_name in EXTENDING_STRATEGIES
            else 0.0,
        )

    async def compare(self, step: Compare) -> StepOutcome:
        _, a_silent, a_figs = await self._figures_and_baseline(step.a_nodes)  # A: old version
        b_figs, b_silent, _ = await self._figures_and_baseline(step.b_nodes)  # B: new version
        if not a_figs or not b_figs:
            silent = "; ".join([*a_silent.values(), *b_silent.values()]) or "no metrics"
            return StepOutcome(ok=True, verdict="inconclusive", message=f"no data: {silent}")
        verdict, reason, figures = analysis.judge_ab(
            analysis.merge(*a_figs.values()),
            analysis.merge(*b_figs.values()),
            step.metric,
            step.threshold,
            step.comparison,
            step.minimum_sample_size,
        )
        return StepOutcome(ok=True, verdict=verdict, message=reason, figures=figures)


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _snapshot_figures(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Per node and version, the counters of a metrics answer as flat journal figures:
    `since|NODE|VERSION|requests`, ... `since|NODE|VERSION|le|25`."""
    out: dict[str, float] = {}
    for node, versions in metrics.items():
        for version, raw in versions.items():
            try:
                fig = analysis.summarize(_as_mapping(raw))
            except ValueError:  # unreadable figures: no snapshot, the node is not compared
                continue
            key = f"{SINCE}|{node}|{version}|"
            out[key + "requests"] = float(fig.requests)
            out[key + "errors"] = float(fig.errors)
            out[key + "traps"] = float(fig.traps)
            out[key + "timeouts"] = float(fig.timeouts)
            out[key + "sum"] = fig.latency_sum_ms
            out[key + "count"] = float(fig.latency_count)
            for bound, count in fig.buckets:
                out[f"{key}le|{bound:g}"] = float(count)
    return out


def _snapshots_from(figures: Mapping[str, float]) -> dict[str, dict[str, analysis.VersionFigures]]:
    """Inverse of _snapshot_figures."""
    raw: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in figures.items():
        parts = key.split("|")
        if len(parts) < 4 or parts[0] != SINCE:
            continue
        raw.setdefault((parts[1], parts[2]), {})["|".join(parts[3:])] = value
    out: dict[str, dict[str, analysis.VersionFigures]] = {}
    for (node, version), f in raw.items():
        buckets = sorted(
            (float(k.removeprefix("le|")), int(v)) for k, v in f.items() if k.startswith("le|")
        )
        out.setdefault(node, {})[version] = analysis.VersionFigures(
            requests=int(f.get("requests", 0)),
            errors=int(f.get("errors", 0)),
            traps=int(f.get("traps", 0)),
            timeouts=int(f.get("timeouts", 0)),
            latency_sum_ms=f.get("sum", 0.0),
            latency_count=int(f.get("count", 0)),
            buckets=tuple(buckets),
        )
    return out
