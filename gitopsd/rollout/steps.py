"""The vocabulary between strategies and the engine: steps a strategy yields, outcomes it receives.

A strategy never talks to the network or the clock. It speaks of two roles on each node: the
*new* version being rolled out and the *old* version (whatever served the function on that
node when the rollout started, possibly nothing). The engine resolves roles to versions.
Every step and outcome is a frozen dataclass that round-trips through JSON for the journal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol

Nodes = tuple[str, ...]


class RolloutState(StrEnum):
    """Lifecycle of a rollout (seed names kept)."""

    DRAFT = "DRAFT"  # approval: manual, waiting for `gitopsd approve`
    APPROVED = "APPROVED"
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (RolloutState.COMPLETED, RolloutState.ROLLED_BACK, RolloutState.FAILED)


@dataclass(frozen=True)
class Deploy:
    """Upload the new module and load the new version on `nodes`, with no traffic yet."""

    nodes: Nodes
    kind: ClassVar[str] = "deploy"


@dataclass(frozen=True)
class HealthCheck:
    """Run the new version's health export on `nodes` until it passes or fails its thresholds."""

    nodes: Nodes
    success_threshold: int | None = None  # None: the function's healthCheck.successThreshold
    failure_threshold: int | None = None
    timeout: float | None = None  # seconds for the whole check per node; None: the function's
    kind: ClassVar[str] = "health"


@dataclass(frozen=True)
class SetTraffic:
    """On `nodes`, send `new_percent` % of requests to the new version and the rest to the old.

    A node with no old version serves the new one at 100 % whatever `new_percent` says.
    """

    nodes: Nodes
    new_percent: float
    kind: ClassVar[str] = "traffic"


@dataclass(frozen=True)
class Wait:
    """Wait `seconds`; the engine journals an absolute deadline so a restart resumes the wait."""

    seconds: float
    reason: str
    kind: ClassVar[str] = "wait"


@dataclass(frozen=True)
class Analyze:
    """Judge the new version on `nodes` from the agents' metrics against autoRollback triggers."""

    nodes: Nodes
    kind: ClassVar[str] = "analyze"


@dataclass(frozen=True)
class Compare:
    """A/B verdict: B (new version on `b_nodes`) against A (old version on `a_nodes`).

    Outcome verdict is "B", "A" or "inconclusive".
    """

    a_nodes: Nodes
    b_nodes: Nodes
    metric: str
    threshold: float
    comparison: str  # lower_is_better | higher_is_better
    minimum_sample_size: int
    kind: ClassVar[str] = "compare"


@dataclass(frozen=True)
class Gate:
    """Stop until an operator runs `gitopsd promote` (outcome ok) or `gitopsd abort` (not ok)."""

    reason: str
    kind: ClassVar[str] = "gate"


@dataclass(frozen=True)
class Rollback:
    """On `nodes`: all traffic back to the old version, unload the new (remove if no old)."""

    nodes: Nodes
    kind: ClassVar[str] = "rollback"


@dataclass(frozen=True)
class Retire:
    """On `nodes`: unload the old version `after` seconds from now (blue kept for rollback)."""

    nodes: Nodes
    after: float = 0.0
    kind: ClassVar[str] = "retire"


@dataclass(frozen=True)
class Finish:
    """The last step: the rollout's final (or paused) state and a sentence saying why."""

    state: RolloutState
    message: str
    kind: ClassVar[str] = "finish"


Step = (
    Deploy | HealthCheck | SetTraffic | Wait | Analyze | Compare | Gate | Rollback | Retire | Finish
)
_ALL_STEPS = (Deploy, HealthCheck, SetTraffic, Wait, Analyze, Compare, Gate, Rollback, Retire)
STEP_TYPES: dict[str, type[Step]] = {t.kind: t for t in (*_ALL_STEPS, Finish)}


@dataclass(frozen=True)
class NodeResult:
    """What one step did on one node."""

    node: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class StepOutcome:
    """The engine's answer to a step. `verdict` carries Analyze ("pass"/"fail") and Compare
    ("A"/"B"/"inconclusive") results; `figures` the numbers behind them."""

    ok: bool
    nodes: tuple[NodeResult, ...] = ()
    verdict: str = ""
    message: str = ""
    figures: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok_nodes(self) -> Nodes:
        return tuple(r.node for r in self.nodes if r.ok)

    @property
    def failed_nodes(self) -> Nodes:
        return tuple(r.node for r in self.nodes if not r.ok)

    @classmethod
    def all_ok(cls, nodes: Nodes = (), verdict: str = "") -> StepOutcome:
        return cls(ok=True, nodes=tuple(NodeResult(n, True) for n in nodes), verdict=verdict)


@dataclass(frozen=True)
class NodeTarget:
    """A node the rollout targets, as the strategy sees it."""

    name: str
    region: str
    old_version: str | None = None  # what served the function here before; None: nothing
    memory_free_mib: float | None = None  # budget left for one more version; None: unknown
    # What one instance of the new version may use here when spec.overrides give this node
    # its own memoryMiB; None: PlanContext.memory_mib.
    memory_mib: float | None = None


@dataclass(frozen=True)
class PlanContext:
    """Everything a strategy may know: no clients, no clock."""

    function: str
    version: str
    nodes: tuple[NodeTarget, ...]  # stable order: by region, then name
    memory_mib: float = 64.0  # what one instance of the new version may use

    @property
    def node_names(self) -> Nodes:
        return tuple(n.name for n in self.nodes)


Plan = Generator[Step, StepOutcome, None]


class Strategy(Protocol):
    """A deterministic plan generator: same context and outcomes, same steps."""

    name: ClassVar[str]

    def plan(self, ctx: PlanContext) -> Plan: ...


def step_to_json(step: Step) -> dict[str, Any]:
    """A journal row's form of a step."""
    data = dataclasses.asdict(step)
    data["kind"] = step.kind
    return data


def step_from_json(data: Mapping[str, Any]) -> Step:
    """Inverse of step_to_json."""
    fields = dict(data)
    cls = STEP_TYPES[fields.pop("kind")]
    for key, value in fields.items():
        if isinstance(value, list):
            fields[key] = tuple(value)
    if cls is Finish:
        fields["state"] = RolloutState(fields["state"])
    return cls(**fields)


def outcome_to_json(outcome: StepOutcome) -> dict[str, Any]:
    """A journal row's form of an outcome."""
    return {
        "ok": outcome.ok,
        "nodes": [[r.node, r.ok, r.detail] for r in outcome.nodes],
        "verdict": outcome.verdict,
        "message": outcome.message,
        "figures": dict(outcome.figures),
    }


def outcome_from_json(data: Mapping[str, Any]) -> StepOutcome:
    """Inverse of outcome_to_json."""
    return StepOutcome(
        ok=bool(data["ok"]),
        nodes=tuple(NodeResult(str(n), bool(o), str(d)) for n, o, d in data["nodes"]),
        verdict=str(data.get("verdict", "")),
        message=str(data.get("message", "")),
        figures=dict(data.get("figures", {})),
    )
