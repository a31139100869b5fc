"""The records of the deployment API: plans, results, status and history (seed names kept)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gitopsd.api.health import HealthStatus
from gitopsd.api.models import EdgeFunction
from gitopsd.rollout.steps import RolloutState

DeploymentState = RolloutState
"""The seed's name for a plan's lifecycle state (PENDING ... FAILED)."""


@dataclass
class DeploymentPlan:
    """One function version going to `target_nodes` with `strategy` (seed edge-deployment).

    `options` are the strategy's options (manifest camelCase or snake_case names).
    `canary_percent` sizes a canary's first stage when `options` has no `stages`;
    `rollback_on_error=False` makes rolling pause on a failed batch (`pauseOnFailure`) instead
    of rolling everything back. Every other strategy always rolls back on failure.

    After `DeploymentManager.execute`: `state` is the rollout's final (or paused) state,
    `deployed_nodes` the nodes left serving the new version (none once rolled back),
    `failed_nodes` those where a step failed, `message` the engine's sentence saying why.
    """

    function: EdgeFunction
    strategy: str
    target_nodes: list[str]
    canary_percent: int = 10
    rollback_on_error: bool = True
    state: RolloutState = RolloutState.PENDING
    deployed_nodes: list[str] = field(default_factory=list)
    failed_nodes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    rollout_id: str | None = None
    message: str = ""
    failed_step: str | None = None


@dataclass(frozen=True)
class DeploymentResult:
    """Outcome of `deploy` or `rollback` (seed deployment-api). `target` is the function."""

    success: bool
    version: str
    target: str
    strategy: str
    duration: float  # seconds, on the manager's clock
    errors: list[str] = field(default_factory=list)  # empty on success
    state: RolloutState = RolloutState.FAILED
    rollout_id: str | None = None
    plan: DeploymentPlan | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DeploymentStatus:
    """Where a function stands now (seed deployment-api).

    `status` is the latest rollout's: running, deployed, failed (rolled back or failed) or
    rolling_back; `current_version` the version most nodes serve; `instances` how many
    nodes serve it; `health` its health on the nodes that should run it.
    """

    target: str
    current_version: str | None
    status: str
    health: HealthStatus
    instances: int
    nodes: Mapping[str, str | None] = field(default_factory=dict)  # node → serving version
    message: str = ""


@dataclass(frozen=True)
class DeploymentRecord:
    """One entry of the history: a rollout from the store, or an attempt refused before one
    was created (`rollout_id` None; kept by the manager that refused it, in memory only)."""

    function: str
    version: str
    strategy: str
    state: RolloutState
    message: str
    started_at: float
    finished_at: float | None
    rollout_id: str | None = None
    commit: str = ""


class DeploymentHistory(list[DeploymentRecord]):
    """Every deployment, oldest first; call it with a function name to filter."""

    def __call__(self, function: str | None = None) -> list[DeploymentRecord]:
        return [r for r in self if function is None or r.function == function]
