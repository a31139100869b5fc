"""DeploymentManager against real agents: deploy, canary, automatic and manual rollback."""

from __future__ import annotations

import pytest

from gitopsd.api import (
    DeploymentManager,
    EdgeCluster,
    HealthStatus,
    RolloutState,
    create_strategy,
)
from tests.api.conftest import edge_function
from tests.fleetfixture import Fleet

NODES = ("edge-a", "edge-b", "edge-c")


def serving(cluster: EdgeCluster, function: str = "fn") -> dict[str, str | None]:
    """Per node, the version that answers a real invocation (None: not served)."""
    out: dict[str, str | None] = {}
    for name in NODES:
        status, version, _ = cluster.invoke(name, function)
        out[name] = version if status == 200 else None
    return out


def test_deploy_canary_auto_rollback_manual_rollback_and_summary(
    manager: DeploymentManager, cluster: EdgeCluster, fleet: Fleet
) -> None:
    v1 = manager.deploy(edge_function("1.0.0"), "rolling")
    assert v1.success, v1.errors
    assert (v1.state, v1.strategy, v1.target, v1.errors) == (
        RolloutState.COMPLETED,
        "rolling",
        "fn",
        [],
    )
    assert v1.duration >= 10.0  # two 5 s batch delays, on the fake clock
    assert serving(cluster) == dict.fromkeys(NODES, "1.0.0")
    assert cluster.invoke("edge-a", "fn").body == b"fn 1.0.0"

    v2 = manager.deploy(edge_function("2.0.0"), "canary", evaluationPeriod="PT1M")
    assert v2.success, v2.errors
    assert v2.plan is not None
    assert v2.rollout_id is not None
    row = manager.store.rollout(v2.rollout_id)
    assert row is not None
    assert row.context["strategy"]["stages"] == [10, 100]  # canary_percent 10, then the rest
    assert row.context["strategy"]["evaluationPeriod"] == "PT1M"
    assert sorted(v2.plan.deployed_nodes) == sorted(NODES)
    assert serving(cluster) == dict.fromkeys(NODES, "2.0.0")

    v3 = manager.deploy(edge_function("3.0.0", health="BROKEN"))
    assert not v3.success
    assert v3.state is RolloutState.ROLLED_BACK
    assert v3.errors and "health" in " ".join(v3.errors)
    assert v3.plan is not None and v3.plan.deployed_nodes == []
    assert serving(cluster) == dict.fromkeys(NODES, "2.0.0")
    status = manager.get_status("fn")
    assert (status.current_version, status.status, status.instances) == ("2.0.0", "failed", 3)
    assert status.health is HealthStatus.HEALTHY

    back = manager.rollback("fn")
    assert back.success, back.errors
    assert (back.version, back.strategy) == ("1.0.0", "blue-green")
    assert serving(cluster) == dict.fromkeys(NODES, "1.0.0")
    for node in NODES:  # keepBlueEnvironment false: 2.0.0 is unloaded at once
        assert list(cluster.inventory(node).functions["fn"].versions) == ["1.0.0"]
    status = manager.get_status("fn")
    assert (status.current_version, status.status, status.health) == (
        "1.0.0",
        "deployed",
        "healthy",
    )

    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        create_strategy("nope")
    refused = manager.deploy(edge_function("4.0.0"), "nope")
    assert not refused.success
    assert refused.errors and "unknown strategy 'nope'" in refused.errors[0]
    assert serving(cluster) == dict.fromkeys(NODES, "1.0.0")

    assert manager.summary() == {
        "total_deployments": 5,
        "active_services": 1,
        "completed": 3,
        "failed": 1,
        "rolled_back": 1,
    }
    assert [(r.version, r.state) for r in manager.history("fn")] == [
        ("1.0.0", "COMPLETED"),
        ("2.0.0", "COMPLETED"),
        ("3.0.0", "ROLLED_BACK"),
        ("1.0.0", "COMPLETED"),
        ("4.0.0", "FAILED"),
    ]
    assert manager.history == manager.history()
    assert manager.history("other") == []
    assert [p.function.version for p in manager.list_deployments()] == [
        "1.0.0",
        "2.0.0",
        "3.0.0",
        "1.0.0",
    ]


def test_plan_targets_online_nodes_and_runs_once(
    manager: DeploymentManager, cluster: EdgeCluster, fleet: Fleet
) -> None:
    fleet.stop("edge-c")
    plan = manager.create_plan(edge_function("1.0.0"), "canary", canary_percent=50)
    assert plan.target_nodes == ["edge-a", "edge-b"]
    assert plan.state is RolloutState.PENDING
    done = manager.execute(plan)
    assert done is plan
    assert done.state is RolloutState.COMPLETED, done.message
    assert sorted(done.deployed_nodes) == ["edge-a", "edge-b"]
    assert done.failed_nodes == []
    assert cluster.invoke("edge-b", "fn")[:2] == (200, "1.0.0")
    with pytest.raises(RuntimeError, match="not PENDING"):
        manager.execute(plan)
    with pytest.raises(ValueError, match="unknown target nodes: edge-z"):
        manager.create_plan(edge_function("1.0.0"), target_nodes=["edge-z"])


def test_rollback_without_history_is_a_failed_result(manager: DeploymentManager) -> None:
    result = manager.rollback("fn")
    assert not result.success
    assert result.errors and "nothing to roll back to" in result.errors[0]
