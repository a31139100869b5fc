"""Git notes on manifest commits, read back with the git CLI as an operator would."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pygit2

from gitopsd.report.notes import CommitOutcome, FunctionOutcome, push_notes, write_note
from gitopsd.report.publisher import publish_now
from gitopsd.source.git import SourceSpec, mirror_dir
from gitopsd.source.reader import take_snapshot
from tests.gitrepo import GitRemote, git


def _outcome(sha: str, fn: str, status: str) -> CommitOutcome:
    return CommitOutcome(
        commit=sha,
        status=status,
        message=f"{fn} {status}",
        functions={
            fn: FunctionOutcome(
                status=status, version="1.0.0", strategy="canary", nodes_ok=("a",), nodes_failed=()
            )
        },
    )


def test_note_is_json_readable_by_git_cli(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    sha = remote.commit_push("first")
    write_note(pygit2.Repository(str(remote.bare)), _outcome(sha, "fn-a", "success"))
    body = json.loads(remote.note(sha))
    assert body["status"] == "success"
    assert body["functions"]["fn-a"]["nodesOk"] == ["a"]


def test_later_note_merges_functions_and_failure_wins(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    sha = remote.commit_push("first")
    repo = pygit2.Repository(str(remote.bare))
    write_note(repo, _outcome(sha, "fn-a", "success"))
    write_note(repo, _outcome(sha, "fn-b", "failure"))
    body = json.loads(remote.note(sha))
    assert set(body["functions"]) == {"fn-a", "fn-b"}
    assert body["status"] == "failure"


def test_notes_from_a_mirror_reach_the_remote_despite_a_concurrent_writer(
    tmp_path: Path,
) -> None:
    remote = GitRemote(tmp_path / "g")
    sha = remote.commit_push("first")
    other = remote.commit_push("second")
    spec = SourceSpec(f"file://{remote.bare}")
    take_snapshot(spec, tmp_path / "state")
    # Someone else writes a note on the remote after our mirror was made.
    write_note(pygit2.Repository(str(remote.bare)), _outcome(other, "fn-x", "success"))
    asyncio.run(publish_now(spec, tmp_path / "state", _outcome(sha, "fn-a", "success")))
    assert json.loads(remote.note(sha))["functions"]["fn-a"]["status"] == "success"
    assert json.loads(remote.note(other))["functions"]["fn-x"]["status"] == "success"


def test_push_to_a_remote_that_refuses_returns_false(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path / "g")
    sha = remote.commit_push("first")
    spec = SourceSpec(f"file://{remote.bare}")
    take_snapshot(spec, tmp_path / "state")
    mirror = mirror_dir(tmp_path / "state", spec.url)
    write_note(pygit2.Repository(str(mirror)), _outcome(sha, "fn-a", "success"))
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=mirror)
    assert push_notes(mirror) is False
