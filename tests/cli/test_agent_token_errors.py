"""Issue 22 item 1: no fleet secret at all is one clear error before any request (exit 2);
a secret the agents refuse is said once per node as "refused our token", never
"unreachable", and nothing is planned for those nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "1.0.0", "{type: blue-green}")
    return remote


def test_no_token_at_all_stops_every_agent_command_with_one_line(
    tmp_path: Path, repo: GitRemote, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITOPSD_AGENT_TOKEN_FILE", raising=False)
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{repo.bare}"\n')
    gitopsd = Gitopsd(tmp_path / "state", config=config)
    for argv in (
        ("diff",),
        ("diff", "--plan", "--output", "json"),
        ("sync", "--once"),
        ("status",),
    ):
        result = gitopsd(*argv)
        assert result.code == 2, (argv, result.out, result.err)
        assert result.out == "", argv
        (line,) = result.err.splitlines()
        assert line.startswith("error: no agent token:"), line
        for way in ("--agent-token-file", "GITOPSD_AGENT_TOKEN_FILE", "[fleet] token_file"):
            assert way in line
        assert "401" not in line and "unreachable" not in line
    assert set(fleet.serving("fn").values()) == {None}  # nothing was deployed anywhere


def test_a_refused_token_is_said_once_per_node_and_plans_nothing(
    tmp_path: Path, repo: GitRemote, fleet: Fleet
) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-fleet-secret\n")
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{repo.bare}"\n')
    gitopsd = Gitopsd(tmp_path / "state", wrong, config)

    diff = gitopsd("diff", "--plan")
    assert diff.code == 1
    for name in fleet.nodes:
        lines = [line for line in diff.out.splitlines() if name in line]
        assert len(lines) == 1, diff.out  # named once, with why
        assert f"! {name} agent {name}: refused our token" in diff.out
    assert "unreachable" not in diff.out and "401" not in diff.out
    assert "? unknown fn (no target node answered) -> 1.0.0" in diff.out
    assert "no rollout: only nodes that did not answer differ" in diff.out
    assert "deploy the new version" not in diff.out  # no plan for those nodes
    assert "Plan: 0 to deploy, 0 to update, 0 to prune, 1 unknown" in diff.out
    assert gitopsd("diff", "--plan", "--output", "json").json()["plans"] == {}

    status = gitopsd("status")
    assert status.code == 0
    for name in fleet.nodes:
        assert status.out.count(f"! {name} agent {name}: refused our token") == 1, status.out
    assert "unreachable" not in status.out
