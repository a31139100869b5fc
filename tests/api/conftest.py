"""Fixtures for the Python API: an EdgeCluster over the real agents of the `fleet` fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitopsd.api import DeploymentManager, EdgeCluster, EdgeFunction, EdgeNode
from gitopsd.clock import FakeClock
from tests.fleetfixture import TOKEN, Fleet
from tests.wasm_modules import handler_wat


def edge_function(version: str, health: str = "OK", name: str = "fn") -> EdgeFunction:
    """A real module answering `<name> <version>` whose health export writes `health`."""
    return EdgeFunction.from_wat(name, version, handler_wat(f"{name} {version}", health))


def cluster_of(fleet: Fleet, token: str | None = TOKEN) -> EdgeCluster:
    return EdgeCluster(
        [EdgeNode(n.name, n.url, n.region, dict(n.labels)) for n in fleet.nodes.values()],
        token,
    )


@pytest.fixture
def cluster(fleet: Fleet) -> EdgeCluster:
    return cluster_of(fleet)


@pytest.fixture
def manager(cluster: EdgeCluster, tmp_path: Path) -> DeploymentManager:
    """A manager on a fake clock: batch delays and canary evaluations take no time."""
    return DeploymentManager(cluster, tmp_path / "state", clock=FakeClock())
