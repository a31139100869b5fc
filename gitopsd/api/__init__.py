"""The Python API under the seeds' names: a thin synchronous face over the engine.

    cluster = EdgeCluster([EdgeNode("edge-a", "http://10.0.0.5:9101", "us-east")], token)
    manager = DeploymentManager(cluster, state_dir)
    result = manager.deploy(EdgeFunction.from_file("hello", "1.0.0", "hello.wat"), "canary")
    manager.rollback("hello")

    GitOpsSynchronizer("/srv/git/edge.git", state_dir=state_dir, token=token).sync()

Rollouts run through the same engine, store and strategies as the daemon and the CLI (give
the daemon's state dir to share history and operator controls). Every method runs its own
event loop with asyncio.run: call them from ordinary code or a worker thread, never from
inside a running event loop (they raise RuntimeError there).
Logs go to stderr (never stdout) unless the host program configured structlog itself.
"""

from gitopsd import log as _log
from gitopsd.api.cluster import EdgeCluster, Invocation
from gitopsd.api.deployment import (
    DeploymentHistory,
    DeploymentPlan,
    DeploymentRecord,
    DeploymentResult,
    DeploymentState,
    DeploymentStatus,
)
from gitopsd.api.health import HealthChecker, HealthReport, HealthStatus, NodeHealth
from gitopsd.api.manager import DeploymentManager
from gitopsd.api.models import EdgeFunction, EdgeNode, EdgeNodeStatus
from gitopsd.api.sync import GitOpsSynchronizer, SyncResult
from gitopsd.diff import Change
from gitopsd.rollout.steps import RolloutState
from gitopsd.rollout.strategies import create_strategy

_log.configure_for_library()

__all__ = [
    "Change",
    "DeploymentHistory",
    "DeploymentManager",
    "DeploymentPlan",
    "DeploymentRecord",
    "DeploymentResult",
    "DeploymentState",
    "DeploymentStatus",
    "EdgeCluster",
    "EdgeFunction",
    "EdgeNode",
    "EdgeNodeStatus",
    "GitOpsSynchronizer",
    "HealthChecker",
    "HealthReport",
    "HealthStatus",
    "Invocation",
    "NodeHealth",
    "RolloutState",
    "SyncResult",
    "create_strategy",
]
