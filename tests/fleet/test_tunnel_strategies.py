"""A fleet mixing addressed and dial-out nodes runs every strategy through real agents: the
dial-out agents take the same requests over their tunnels (fleet/tunnel.py, agent/dialout.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.tunnelsupport import mixed_fleet, tunnel_syncer
from tests.fleetfixture import Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import HookClock, push, traffic_before_judging

STRATEGIES = {
    "rolling": "{type: rolling, batchSize: 1, batchDelay: PT30S}",
    "blue-green": "{type: blue-green, blueRetentionPeriod: PT0S, keepBlueEnvironment: false}",
    "canary": "{type: canary, stages: [25, 50, 100], evaluationPeriod: PT5M}",
}


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path / "fleet") as fleet:
        mixed_fleet(fleet)
        yield fleet


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_good_version_completes_on_both_kinds_of_node(
    strategy: str, remote: GitRemote, mixed: Fleet, tmp_path: Path
) -> None:
    remote.write("nodes.yaml", mixed.manifests())
    clock = HookClock()
    sync = tunnel_syncer(tmp_path / "state", remote, mixed, clock)
    sync.reconciler.on_event = traffic_before_judging(mixed, "fn", 5)
    push(remote, "fn", "1.0.0", STRATEGIES[strategy])
    assert [r.state for r in sync().results] == ["COMPLETED"]
    push(remote, "fn", "2.0.0", STRATEGIES[strategy])
    report = sync()
    assert [r.state for r in report.results] == ["COMPLETED"], report.results
    assert mixed.serving("fn") == {n: "2.0.0" for n in mixed.nodes}
    # The dial-out agents were reached only through their tunnels: Git gives them no address.
    assert mixed.registry.relayed > 0


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_failing_health_check_rolls_back_on_both_kinds_of_node(
    strategy: str, remote: GitRemote, mixed: Fleet, tmp_path: Path
) -> None:
    remote.write("nodes.yaml", mixed.manifests())
    sync = tunnel_syncer(tmp_path / "state", remote, mixed, HookClock())
    push(remote, "fn", "1.0.0", STRATEGIES[strategy])
    assert sync().ok
    push(remote, "fn", "2.0.0", STRATEGIES[strategy], health="SICK")
    report = sync()
    assert [r.state for r in report.results] == ["ROLLED_BACK"]
    assert mixed.serving("fn") == {n: "1.0.0" for n in mixed.nodes}
    for name in mixed.nodes:
        assert list(mixed.inventory(name)["functions"]["fn"]["versions"]) == ["1.0.0"]
