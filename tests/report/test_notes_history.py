"""Issue 22 item 5: a commit's note keeps each outcome it had (latest first, bounded), so a
later pass that finds the function HELD does not erase that it COMPLETED."""

from __future__ import annotations

import json
from pathlib import Path

import pygit2

from gitopsd.report.notes import (
    NOTE_HISTORY,
    CommitOutcome,
    FunctionOutcome,
    merge_note_json,
    write_note,
)
from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push


def test_a_held_pass_keeps_the_completed_outcome_in_the_note(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file)
    source = str(remote.bare)
    push(remote, "fn", "1.0.0", "{type: blue-green}")
    assert gitopsd("sync", source, "--once").code == 0
    sha = push(remote, "fn", "1.0.1", "{type: blue-green}")
    assert gitopsd("sync", source, "--once").code == 0
    assert gitopsd("rollback", "fn").code == 0
    for _ in range(3):  # every pass finds it held: one HELD outcome, not three
        assert "HELD" in gitopsd("sync", source, "--once").out

    entry = json.loads(remote.note(sha))["functions"]["fn"]
    assert entry["state"] == "HELD"
    states = [h["state"] for h in entry["history"]]
    assert states[0] == "COMPLETED" and states.count("HELD") == 0, states
    completed = entry["history"][0]
    assert completed["version"] == "1.0.1" and sorted(completed["nodesOk"]) == sorted(fleet.nodes)
    assert "history" not in completed  # flat: one list per function


def _outcome(sha: str, state: str, message: str) -> CommitOutcome:
    status = "pending" if state == "IN_PROGRESS" else "success"
    fn = FunctionOutcome(status=status, version="1.0.0", state=state, message=message)
    return CommitOutcome(sha, status, message, {"fn": fn})


def test_history_is_latest_first_and_bounded(remote: GitRemote) -> None:
    sha = remote.commit_push("first")
    repo = pygit2.Repository(str(remote.bare))
    for i in range(NOTE_HISTORY + 5):
        write_note(repo, _outcome(sha, "COMPLETED", f"pass {i}"))
    entry = json.loads(remote.note(sha))["functions"]["fn"]
    assert entry["message"] == f"pass {NOTE_HISTORY + 4}"
    messages = [h["message"] for h in entry["history"]]
    assert messages == [f"pass {i}" for i in range(NOTE_HISTORY + 3, 3, -1)]


def test_two_writers_merge_keeps_the_older_entry_as_history() -> None:
    ours = {
        "updatedAt": "2026-01-01T10:00:00+00:00",
        "functions": {
            "fn": {"status": "success", "state": "HELD", "updatedAt": "2026-01-01T10:00:00+00:00"}
        },
    }
    theirs = {
        "updatedAt": "2026-01-01T09:00:00+00:00",
        "functions": {
            "fn": {
                "status": "success",
                "state": "COMPLETED",
                "updatedAt": "2026-01-01T09:00:00+00:00",
                "history": [
                    {"status": "pending", "state": "IN_PROGRESS", "updatedAt": "2026-01-01T08:00Z"}
                ],
            }
        },
    }
    fn = merge_note_json(ours, theirs)["functions"]["fn"]
    assert fn["state"] == "HELD"
    assert [h["state"] for h in fn["history"]] == ["COMPLETED", "IN_PROGRESS"]
