"""EdgeCluster and HealthChecker against real agents."""

from __future__ import annotations

import pytest

from gitopsd.api import (
    DeploymentManager,
    EdgeCluster,
    EdgeNodeStatus,
    HealthChecker,
    HealthStatus,
)
from tests.api.conftest import cluster_of, edge_function
from tests.fleetfixture import Fleet


def test_refresh_marks_a_stopped_node_offline(cluster: EdgeCluster, fleet: Fleet) -> None:
    assert [n.status for n in cluster.refresh()] == [EdgeNodeStatus.ONLINE] * 3
    assert cluster.inventory("edge-c").region == "eu-central"
    fleet.stop("edge-c")
    cluster.refresh()
    assert cluster.node("edge-c").status is EdgeNodeStatus.OFFLINE
    assert [n.name for n in cluster.online_nodes()] == ["edge-a", "edge-b"]
    assert set(cluster.inventories) == {"edge-a", "edge-b"}


def test_an_agent_refusing_the_token_is_degraded(fleet: Fleet) -> None:
    cluster = cluster_of(fleet, token="wrong-token")
    cluster.refresh()
    assert {n.status for n in cluster.nodes} == {EdgeNodeStatus.DEGRADED}
    assert cluster.online_nodes() == []


def test_health_checker_healthy_degraded_unhealthy(
    manager: DeploymentManager, cluster: EdgeCluster, fleet: Fleet
) -> None:
    assert manager.deploy(edge_function("1.0.0"), "blue-green").success
    checker = HealthChecker(cluster)
    report = checker.check("fn", "1.0.0")
    assert report.status is HealthStatus.HEALTHY
    assert report.nodes["edge-a"].detail == "OK"

    fleet.stop("edge-b")
    report = checker.check("fn", "1.0.0")
    assert report.status is HealthStatus.DEGRADED
    assert report.unhealthy_nodes == ["edge-b"]
    assert checker.check("fn", "1.0.0", ["edge-b"]).status is HealthStatus.UNHEALTHY
    assert checker.check("fn", "9.9.9", ["edge-a"]).status is HealthStatus.UNHEALTHY
    assert manager.get_status("fn").health is HealthStatus.DEGRADED


async def test_sync_methods_refuse_a_running_event_loop(
    manager: DeploymentManager, cluster: EdgeCluster
) -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        cluster.refresh()
    with pytest.raises(RuntimeError, match="running event loop"):
        manager.deploy(edge_function("1.0.0"))
    assert manager.history == []
