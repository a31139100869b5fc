"""Issue 22 item 3: `status` text and JSON tell the same, current truth, and `pause` says what
it really did."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

BLUE_GREEN = "{type: blue-green}"


@pytest.fixture
def gitopsd(tmp_path: Path, fleet: Fleet, remote: GitRemote) -> Gitopsd:
    remote.write("nodes.yaml", fleet.manifests())
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{remote.bare}"\n')
    return Gitopsd(tmp_path / "state", fleet.token_file, config)


def test_after_resume_neither_text_nor_json_says_held(
    remote: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    for version in ("1.0.0", "2.0.0"):
        push(remote, "fn", version, BLUE_GREEN)
        assert gitopsd("sync", "--once").code == 0
    assert gitopsd("rollback", "fn").code == 0
    assert "HELD" in gitopsd("sync", "--once").out  # the pass records why it skipped fn
    held = gitopsd("status", "fn", "--output", "json").json()["functions"][0]
    assert held["held"] is True and "held" in held["waiting"].lower()

    assert gitopsd("resume", "fn").code == 0
    doc = gitopsd("status", "fn", "--output", "json").json()["functions"][0]
    text = gitopsd("status", "fn").out
    assert doc["held"] is False
    assert "held" not in (doc["waiting"] or "").lower(), doc["waiting"]
    assert "HELD" not in text and "held until" not in text, text
    assert "gitopsd resume" not in text, text


def test_pause_without_a_running_rollout_says_the_next_one_waits(
    remote: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    push(remote, "fn", "1.0.0", BLUE_GREEN)
    assert gitopsd("sync", "--once").code == 0
    paused = gitopsd("pause", "fn")
    assert paused.code == 0
    assert "stops before its next step" not in paused.out
    assert "no rollout of fn is running" in paused.out
    assert "next rollout of fn waits" in paused.out and "gitopsd resume fn" in paused.out
    push(remote, "fn", "2.0.0", BLUE_GREEN)  # and it does wait
    gitopsd("sync", "--once")
    doc = gitopsd("status", "fn", "--output", "json").json()["functions"][0]
    assert doc["paused"] is True and "paused by an operator" in doc["waiting"]
    assert "paused by an operator" in gitopsd("status", "fn").out


def test_pause_of_an_unknown_function_is_nothing_to_pause(gitopsd: Gitopsd) -> None:
    result = gitopsd("pause", "nosuchfn")
    assert result.code == 2
    assert "nothing to pause" in result.err and "nosuchfn" in result.err
    assert (
        gitopsd("status", "nosuchfn", "--output", "json").json()["functions"][0]["paused"] is False
    )
