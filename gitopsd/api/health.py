"""HealthChecker: run a function version's health export on the agents and sum it up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from gitopsd.api._run import run_blocking
from gitopsd.api.cluster import EdgeCluster
from gitopsd.errors import AgentError
from gitopsd.fleet.client import AgentClient, gather_nodes
from gitopsd.fleet.wire import WireHealth


class HealthStatus(StrEnum):
    """Health of one function version over a set of nodes (the seeds' lowercase values)."""

    HEALTHY = "healthy"  # every node passed
    DEGRADED = "degraded"  # some nodes passed
    UNHEALTHY = "unhealthy"  # no node passed (or there was no node to ask)


@dataclass(frozen=True)
class NodeHealth:
    """One node's answer: healthy or not, and the agent's output or the error."""

    node: str
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class HealthReport:
    """The health of `function` `version` on each node asked."""

    function: str
    version: str
    status: HealthStatus
    nodes: Mapping[str, NodeHealth]

    @property
    def healthy_nodes(self) -> list[str]:
        return [n for n, h in self.nodes.items() if h.healthy]

    @property
    def unhealthy_nodes(self) -> list[str]:
        return [n for n, h in self.nodes.items() if not h.healthy]


def overall(healthy: int, total: int) -> HealthStatus:
    """HEALTHY if all of `total` are healthy, DEGRADED if some, UNHEALTHY if none."""
    if total and healthy == total:
        return HealthStatus.HEALTHY
    return HealthStatus.DEGRADED if healthy else HealthStatus.UNHEALTHY


class HealthChecker:
    """Asks each agent to run the version's health export (`POST .../health`) once."""

    def __init__(self, cluster: EdgeCluster, timeout: float = 5.0) -> None:
        self.cluster = cluster
        self.timeout = timeout

    def check(
        self, function_name: str, version: str, nodes: Iterable[str] | None = None
    ) -> HealthReport:
        """Health of `version` on `nodes` (default: every node of the cluster).

        A node that does not answer, or does not run that version, counts as unhealthy.
        """
        names = [n.name for n in self.cluster.nodes] if nodes is None else list(nodes)

        async def run() -> HealthReport:
            async with self.cluster.client(names) as client:
                return await self.check_with(client, function_name, version, names)

        return run_blocking("HealthChecker.check", run)

    async def check_with(
        self, client: AgentClient, function: str, version: str, nodes: Iterable[str]
    ) -> HealthReport:
        """`check` on an open client (for callers already inside an event loop)."""
        timeout_ms = int(self.timeout * 1000)

        async def one(node: str) -> WireHealth:
            return await client.health(node, function, version, timeout_ms)

        results = await gather_nodes(list(nodes), one)
        report: dict[str, NodeHealth] = {}
        for node, result in results.items():
            if isinstance(result, WireHealth):
                detail = result.error or result.output
                report[node] = NodeHealth(node, result.healthy, detail)
            elif isinstance(result, AgentError):
                report[node] = NodeHealth(node, False, result.reason)
            else:
                raise result
        healthy = sum(1 for h in report.values() if h.healthy)
        return HealthReport(function, version, overall(healthy, len(report)), report)
