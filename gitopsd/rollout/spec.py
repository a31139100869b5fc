"""RolloutSpec: everything the engine needs to run, or resume, one rollout. Stored as JSON in the
rollout row so that a restarted daemon needs neither Git nor the manifests to finish it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from gitopsd.rollout.judge import THRESHOLDS_ONLY, JudgeSettings
from gitopsd.rollout.steps import NodeTarget, PlanContext


@dataclass(frozen=True)
class TargetNode:
    """A node of the rollout with the address to reach it and its version before the rollout."""

    name: str
    region: str
    address: str
    old_version: str | None = None
    memory_free_mib: float | None = None
    # Served the new version alone before the rollout (a rollout re-run because another node
    # was unreachable): rolling back must leave such a node as it was, not remove the function.
    serving_new: bool = False
    # Its inventory could not be read when the rollout was planned: it was down already.
    unseen: bool = False
    # (memoryMiB, timeoutMs) when spec.overrides give this node other limits than the
    # rollout's; None: the rollout's.
    limits: tuple[float, int] | None = None


@dataclass(frozen=True)
class HealthSpec:
    """spec.healthCheck of the function."""

    function: str = "health_check"
    expect: str = "OK"
    timeout: float = 5.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class RolloutSpec:
    """One function version going to a set of nodes with one strategy."""

    function: str
    version: str
    commit: str
    sha256: str
    strategy: Mapping[str, Any]  # the strategy options as written in the manifest (by alias)
    nodes: tuple[TargetNode, ...]
    health: HealthSpec = field(default_factory=HealthSpec)
    memory_mib: float = 64.0
    timeout_ms: int = 100
    sticky_header: str | None = "X-User-Id"
    triggers: tuple[tuple[str, float], ...] = ()
    approval: str = "auto"
    analysis: JudgeSettings = field(default_factory=JudgeSettings)  # autoRollback.analysis
    # spec.deployWindows as written (JSON), journaled so a resumed rollout keeps its windows.
    deploy_windows: Mapping[str, Any] | None = None

    @property
    def strategy_name(self) -> str:
        return str(self.strategy.get("type", "rolling"))

    @cached_property
    def _by_name(self) -> dict[str, TargetNode]:
        # Steps ask for nodes one by one: a scan per question is quadratic at 1,000 nodes.
        # Built once per (frozen) spec; a name listed twice keeps its first node.
        index: dict[str, TargetNode] = {}
        for n in self.nodes:
            index.setdefault(n.name, n)
        return index

    def node(self, name: str) -> TargetNode:
        """The target node called `name` (KeyError for a node not in the rollout)."""
        return self._by_name[name]

    @property
    def addresses(self) -> dict[str, str]:
        return {n.name: n.address for n in self.nodes}

    def plan_context(self) -> PlanContext:
        return PlanContext(
            function=self.function,
            version=self.version,
            nodes=tuple(
                NodeTarget(
                    n.name,
                    n.region,
                    n.old_version,
                    n.memory_free_mib,
                    n.limits[0] if n.limits is not None else None,
                )
                for n in self.nodes
            ),
            memory_mib=self.memory_mib,
        )

    def limits_of(self, node: str) -> tuple[float, int]:
        """(memoryMiB, timeoutMs) of the version on `node`."""
        own = self.node(node).limits
        return own if own is not None else (self.memory_mib, self.timeout_ms)

    def load_body(self, node: str | None = None) -> dict[str, Any]:
        """The agent's `PUT /functions/{fn}/versions/{v}` body (for `node`: with its limits)."""
        memory_mib, timeout_ms = (
            self.limits_of(node) if node is not None else (self.memory_mib, self.timeout_ms)
        )
        return {
            "sha256": self.sha256,
            "limits": {"memoryMiB": memory_mib, "timeoutMs": timeout_ms},
            "healthCheck": {"function": self.health.function, "expect": self.health.expect},
            "stickyHeader": self.sticky_header,
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategy"] = dict(self.strategy)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutSpec:
        return cls(
            function=data["function"],
            version=data["version"],
            commit=data["commit"],
            sha256=data["sha256"],
            strategy=dict(data["strategy"]),
            nodes=tuple(_target_node(n) for n in data["nodes"]),
            health=HealthSpec(**data["health"]),
            memory_mib=data["memory_mib"],
            timeout_ms=data["timeout_ms"],
            sticky_header=data["sticky_header"],
            triggers=tuple((str(m), float(t)) for m, t in data["triggers"]),
            approval=data.get("approval", "auto"),
            # A rollout stored before autoRollback.analysis existed keeps the judge it began with.
            analysis=JudgeSettings(**data["analysis"]) if "analysis" in data else THRESHOLDS_ONLY,
            deploy_windows=data.get("deploy_windows"),
        )


def _target_node(data: Mapping[str, Any]) -> TargetNode:
    """A TargetNode from JSON, where the `limits` pair became a list."""
    limits = data.get("limits")
    fields = dict(data)
    fields["limits"] = (float(limits[0]), int(limits[1])) if limits is not None else None
    return TargetNode(**fields)
