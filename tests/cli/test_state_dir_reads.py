"""Issue 22 item 2: the read-only commands (`status`, `history`, `diff`) create nothing, and
every "nothing recorded" message names the state dir it looked in and how it was chosen."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gitopsd.cli.main import cli
from tests.clirunner import Gitopsd, Result
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push


def run(*argv: str, env: dict[str, str] | None = None) -> Result:
    res = CliRunner().invoke(cli, list(argv), env=env, catch_exceptions=False)
    return Result(res.exit_code, res.stdout, res.stderr)


def test_reading_with_the_default_state_dir_creates_nothing_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("GITOPSD_STATE_DIR", "GITOPSD_CONFIG", "INVOCATION_ID", "GITOPSD_STATE__DIR"):
        monkeypatch.delenv(name, raising=False)
    default = tmp_path / ".local" / "state" / "gitopsd"
    where = f"the state dir {default} (the default; set --state-dir or $GITOPSD_STATE_DIR)"

    status = run("status")
    assert status.code == 0
    assert f"no rollout recorded in {where}" in status.out, status.out
    history = run("history")
    assert history.code == 0 and history.out.strip() == f"no rollout recorded in {where}"
    assert run("history", "--output", "json").json() == {"rollouts": []}
    assert run("status", "--output", "json").json()["note"] == f"no rollout recorded in {where}"
    rollback = run("rollback", "fn", "--agent-token-file", "/dev/null")
    assert rollback.code == 2 and f"nothing to roll back: no rollout recorded in {where}" in (
        rollback.err
    )
    for action in ("pause", "resume", "promote", "abort", "approve"):
        refused = run(action, "fn")
        assert refused.code == 2 and f"nothing to {action}" in refused.err and where in refused.err
    assert not (tmp_path / ".local").exists()  # nothing created, not even the directory


@pytest.mark.parametrize("how", ["flag", "environment", "config"])
def test_the_message_says_how_the_state_dir_was_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    state = tmp_path / "chosen"
    monkeypatch.delenv("GITOPSD_STATE_DIR", raising=False)
    argv = ["history"]
    if how == "flag":
        argv += ["--state-dir", str(state)]
        origin = "--state-dir"
    elif how == "environment":
        monkeypatch.setenv("GITOPSD_STATE_DIR", str(state))
        origin = "$GITOPSD_STATE_DIR"
    else:
        config = tmp_path / "gitopsd.toml"
        config.write_text(f'[state]\ndir = "{state}"\n')
        argv += ["--config", str(config)]
        origin = "[state] dir of the config"
    result = run(*argv)
    assert result.out.startswith(f"no rollout recorded in the state dir {state} ({origin}")
    assert not state.exists()


def test_diff_against_real_agents_creates_no_state_database(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "1.0.0", "{type: blue-green}")
    state = tmp_path / "state"
    gitopsd = Gitopsd(state, fleet.token_file)
    assert gitopsd("diff", str(remote.bare), "--plan").code == 1
    assert gitopsd("status", "fn").code == 0
    assert not state.exists()
    assert gitopsd("sync", str(remote.bare), "--once").code == 0  # a write creates it
    assert (state / "gitopsd.db").is_file()
    assert "no rollout recorded" not in gitopsd("history").out
