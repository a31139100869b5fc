"""What an operator sees and does: status (and why a rollout waits), history, rollback and
the hold that follows, schema and shell completion — each against real agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import HookClock, Syncer, push

BLUE_GREEN = "{type: blue-green}"


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    return remote


@pytest.fixture
def gitopsd(tmp_path: Path, fleet: Fleet, repo: GitRemote) -> Gitopsd:
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{repo.bare}"\n')
    return Gitopsd(tmp_path / "state", fleet.token_file, config)


def status(gitopsd: Gitopsd, fn: str) -> dict[str, object]:
    result = gitopsd("status", fn, "--output", "json")
    assert result.code == 0, result.err
    doc: dict[str, object] = result.json()["functions"][0]
    return doc


def test_status_during_a_canary_wait_says_until_when(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd, tmp_path: Path
) -> None:
    clock = HookClock()
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", BLUE_GREEN)
    assert sync().ok
    push(repo, "fn", "2.0.0", "{type: canary, stages: [34, 100], evaluationPeriod: PT10M}")
    seen: dict[str, object] = {}

    def look(_now: float) -> None:
        if not seen:
            seen["json"] = status(gitopsd, "fn")
            seen["text"] = gitopsd("status", "fn").out
            gitopsd("promote", "fn")

    clock.hook = look
    assert sync().ok
    doc = seen["json"]
    assert isinstance(doc, dict)
    assert doc["desiredVersion"] == "2.0.0"
    assert doc["rollout"]["state"] == "IN_PROGRESS"  # type: ignore[index]
    assert "evaluation of stage 1" in str(doc["waiting"]) and "until" in str(doc["waiting"])
    versions = {t["version"] for n in doc["nodes"] for t in n["traffic"]}  # type: ignore[attr-defined]
    assert versions == {"1.0.0", "2.0.0"}
    assert "until" in str(seen["text"]) and "edge-a" in str(seen["text"])


def test_status_reasons_paused_approval_failed_health_and_blocked(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd, tmp_path: Path
) -> None:
    sync = Syncer(tmp_path / "state", repo, HookClock())
    push(repo, "fn", "1.0.0", BLUE_GREEN, extra="  approval: manual\n")
    sync()
    assert "waiting for approval" in str(status(gitopsd, "fn")["waiting"])
    assert gitopsd("approve", "fn").code == 0
    assert sync().ok
    push(repo, "fn", "2.0.0", BLUE_GREEN, health="SICK")
    push(repo, "child", "1.0.0", BLUE_GREEN, extra="  dependsOn: [fn]\n")
    report = sync()
    assert {r.function: r.state for r in report.results} == {
        "fn": "ROLLED_BACK",
        "child": "BLOCKED",
    }
    fn_status = status(gitopsd, "fn")
    assert "health" in str(fn_status["waiting"]) and "SICK" in str(fn_status["waiting"])
    assert "blocked by dependsOn fn" in str(status(gitopsd, "child")["waiting"])
    assert gitopsd("pause", "fn").code == 0
    push(repo, "fn", "3.0.0", "{type: canary, stages: [50, 100], evaluationPeriod: PT1M}")
    sync()
    assert "paused by an operator" in str(status(gitopsd, "fn")["waiting"])


def test_rollback_returns_every_node_and_holds_until_git_changes(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    push(repo, "fn", "1.0.0", BLUE_GREEN)
    assert gitopsd("sync", "--once").code == 0
    push(repo, "fn", "2.0.0", BLUE_GREEN)
    assert gitopsd("sync", "--once").code == 0
    assert set(fleet.serving("fn").values()) == {"2.0.0"}

    result = gitopsd("rollback", "fn")
    assert result.code == 0, result.out + result.err
    assert set(fleet.serving("fn").values()) == {"1.0.0"}
    doc = status(gitopsd, "fn")
    assert doc["held"] is True and "held" in str(doc["waiting"])
    sync = gitopsd("sync", "--once")
    assert sync.code == 0 and "HELD" in sync.out
    assert set(fleet.serving("fn").values()) == {"1.0.0"}  # the sync did not undo it

    push(repo, "fn", "3.0.0", BLUE_GREEN)  # Git changed the function: the hold lifts
    assert gitopsd("sync", "--once").code == 0
    assert set(fleet.serving("fn").values()) == {"3.0.0"}

    assert gitopsd("rollback", "fn", "--to", "1.0.0").code == 0
    assert set(fleet.serving("fn").values()) == {"1.0.0"}
    assert gitopsd("resume", "fn").code == 0  # an operator lifts the hold by hand
    assert gitopsd("sync", "--once").code == 0
    assert set(fleet.serving("fn").values()) == {"3.0.0"}
    assert gitopsd("rollback", "fn", "--to", "9.9.9").code == 2

    rows = gitopsd("history", "fn", "--output", "json").json()["rollouts"]
    assert [r["version"] for r in rows][:3] == ["3.0.0", "1.0.0", "3.0.0"]
    assert all(r["durationSeconds"] is not None for r in rows)


def test_a_second_rollback_while_held_keeps_the_hold(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        push(repo, "fn", version, BLUE_GREEN)
        assert gitopsd("sync", "--once").code == 0
    assert gitopsd("rollback", "fn").code == 0
    assert gitopsd("rollback", "fn", "--to", "1.0.0").code == 0
    assert set(fleet.serving("fn").values()) == {"1.0.0"}
    sync = gitopsd("sync", "--once")  # Git still asks for 3.0.0, as when the hold was set
    assert sync.code == 0 and "HELD" in sync.out, sync.out
    assert set(fleet.serving("fn").values()) == {"1.0.0"}
    assert status(gitopsd, "fn")["held"] is True


def test_schema_and_shell_completion(gitopsd: Gitopsd) -> None:
    schema = json.loads(gitopsd("schema").out)
    assert {"EdgeNode", "EdgeFunction"} <= set(json.dumps(schema).split('"'))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gitopsd")],
        capture_output=True,
        text=True,
        env={**os.environ, "_GITOPSD_COMPLETE": "bash_source"},
        check=False,
    )
    assert "_gitopsd_completion" in done.stdout and "COMPREPLY" in done.stdout


def test_sync_marks_the_commit_pending_while_its_rollout_runs(
    repo: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    """A `sync --once` whose canary waits an hour: meanwhile the commit's note says pending."""
    push(repo, "fn", "1.0.0", BLUE_GREEN)
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{repo.bare}"\n')
    assert Gitopsd(tmp_path / "state", fleet.token_file, config)("sync", "--once").code == 0
    sha = push(repo, "fn", "2.0.0", "{type: canary, stages: [34, 100], evaluationPeriod: PT1H}")
    argv = [sys.executable, "-m", "gitopsd.cli.main", "sync", "--once", "--config", str(config)]
    argv += ["--state-dir", str(tmp_path / "state"), "--agent-token-file", str(fleet.token_file)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        note: dict[str, object] = {}
        while time.monotonic() < deadline and note.get("status") != "pending":
            try:
                note = json.loads(repo.note(sha))
            except RuntimeError:
                time.sleep(0.1)
        assert note.get("status") == "pending", note
        functions = note["functions"]
        assert isinstance(functions, dict)
        assert functions["fn"]["version"] == "2.0.0"
        assert functions["fn"]["state"] == "IN_PROGRESS"
    finally:
        proc.kill()
        proc.wait(10)
