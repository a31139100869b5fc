"""Notes pushed by several writers at once: every function's entry reaches the remote, the
newer entry wins per function, and notes on force-pushed-away commits survive."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pygit2
import pytest

from gitopsd.report.notes import (
    NOTES_REF,
    CommitOutcome,
    FunctionOutcome,
    merge_note_json,
    push_notes,
    write_note,
)
from gitopsd.source.git import mirror_dir, open_repository
from tests.gitrepo import GitRemote, git


def _outcome(sha: str, fn: str, status: str, version: str = "1.0.0") -> CommitOutcome:
    return CommitOutcome(
        commit=sha,
        status=status,
        message=f"{fn} {status}",
        functions={fn: FunctionOutcome(status=status, version=version, strategy="canary")},
    )


def _mirror(remote: GitRemote, state: Path) -> Path:
    """A daemon's mirror of the remote (one per daemon: its own state dir)."""
    url = f"file://{remote.bare}"
    open_repository(url, state)
    return mirror_dir(state, url)


def _write(mirror: Path, outcome: CommitOutcome) -> None:
    write_note(pygit2.Repository(str(mirror)), outcome)


def _remote_note(remote: GitRemote, sha: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(remote.note(sha))
    return body


def _no_sleep(_: float) -> None:
    pass


def test_second_pusher_merges_the_json_of_the_same_commit(
    remote: GitRemote, tmp_path: Path
) -> None:
    sha = remote.commit_push("first")
    one, two = _mirror(remote, tmp_path / "d1"), _mirror(remote, tmp_path / "d2")
    _write(one, _outcome(sha, "fn-a", "success"))
    _write(two, _outcome(sha, "fn-b", "failure"))
    assert push_notes(one, sleep=_no_sleep)
    assert push_notes(two, sleep=_no_sleep)  # rejected once, fetched, merged, pushed
    body = _remote_note(remote, sha)
    assert set(body["functions"]) == {"fn-a", "fn-b"}
    assert body["status"] == "failure"
    # The remote's notes history keeps both writers' commits (a merge, not an overwrite).
    tip = pygit2.Repository(str(remote.bare)).references[NOTES_REF].peel(pygit2.Commit)
    assert len(tip.parents) == 2
    # The first writer catches up by merging in turn, without losing anything.
    _write(one, _outcome(sha, "fn-c", "success"))
    assert push_notes(one, sleep=_no_sleep)
    assert set(_remote_note(remote, sha)["functions"]) == {"fn-a", "fn-b", "fn-c"}


def test_two_writers_at_the_same_time_both_land(remote: GitRemote, tmp_path: Path) -> None:
    sha = remote.commit_push("first")
    mirrors = [_mirror(remote, tmp_path / f"d{i}") for i in range(4)]
    for i, mirror in enumerate(mirrors):
        _write(mirror, _outcome(sha, f"fn-{i}", "success"))
    start = threading.Barrier(len(mirrors))
    results: dict[int, bool] = {}

    def push(i: int) -> None:
        start.wait()
        results[i] = push_notes(mirrors[i], attempts=10)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(mirrors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == dict.fromkeys(range(len(mirrors)), True)
    body = _remote_note(remote, sha)
    assert set(body["functions"]) == {f"fn-{i}" for i in range(len(mirrors))}
    assert body["status"] == "success"


def test_notes_on_other_commits_from_both_sides_are_kept(remote: GitRemote, tmp_path: Path) -> None:
    first = remote.commit_push("first")
    second = remote.commit_push("second")
    one, two = _mirror(remote, tmp_path / "d1"), _mirror(remote, tmp_path / "d2")
    _write(one, _outcome(first, "fn-a", "success"))
    _write(two, _outcome(second, "fn-a", "pending"))
    assert push_notes(one, sleep=_no_sleep) and push_notes(two, sleep=_no_sleep)
    assert _remote_note(remote, first)["status"] == "success"
    assert _remote_note(remote, second)["status"] == "pending"
    # Readable by the git CLI of any clone, and further CLI notes stack on top.
    listed = git("notes", "--ref=gitopsd", "list", cwd=remote.bare)
    assert first in listed and second in listed


def test_a_force_pushed_away_commit_keeps_its_note(remote: GitRemote, tmp_path: Path) -> None:
    base = remote.commit_push("base")
    doomed = remote.commit_push("doomed")
    one, two = _mirror(remote, tmp_path / "d1"), _mirror(remote, tmp_path / "d2")
    _write(one, _outcome(doomed, "fn-a", "failure"))
    assert push_notes(one, sleep=_no_sleep)
    git("reset", "-q", "--hard", base, cwd=remote.work)
    replacement = remote.commit("replacement")
    remote.push(force=True)
    git("gc", "-q", "--prune=now", cwd=remote.bare)  # the doomed commit is gone for good
    with pytest.raises(RuntimeError):
        git("cat-file", "-e", doomed, cwd=remote.bare)
    open_repository(f"file://{remote.bare}", tmp_path / "d2")  # fetch: the branch moved back
    _write(two, _outcome(replacement, "fn-a", "success"))
    assert push_notes(two, sleep=_no_sleep)
    assert _remote_note(remote, doomed)["status"] == "failure"
    assert _remote_note(remote, replacement)["status"] == "success"


def test_refused_push_gives_up_at_once(remote: GitRemote, tmp_path: Path) -> None:
    sha = remote.commit_push("first")
    one = _mirror(remote, tmp_path / "d1")
    _write(one, _outcome(sha, "fn-a", "success"))
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'notes are not welcome here' >&2\nexit 1\n")
    hook.chmod(0o755)
    sleeps: list[float] = []
    assert push_notes(one, sleep=sleeps.append) is False
    assert sleeps == []  # a hook's "no" is final: no retry loop


def test_nothing_written_is_nothing_to_push(remote: GitRemote, tmp_path: Path) -> None:
    remote.commit_push("first")
    assert push_notes(_mirror(remote, tmp_path / "d1"), sleep=_no_sleep) is True


def test_merge_json_newer_entry_wins_per_function() -> None:
    ours = {
        "status": "pending",
        "message": "ours",
        "updatedAt": "2026-01-01T10:00:00.000+00:00",
        "problems": [],
        "functions": {
            "a": {"status": "pending", "updatedAt": "2026-01-01T10:00:00.000+00:00"},
            "b": {"status": "success", "updatedAt": "2026-01-01T09:00:00.000+00:00"},
        },
    }
    theirs = {
        "status": "failure",
        "message": "theirs",
        "updatedAt": "2026-01-01T09:30:00+00:00",
        "problems": [],
        "functions": {
            "a": {"status": "success", "updatedAt": "2026-01-01T09:59:59.999+00:00"},
            "b": {"status": "failure", "updatedAt": "2026-01-01T09:30:00+00:00"},
            "c": {"status": "success"},  # no per-function time: the note's time counts
        },
    }
    merged = merge_note_json(ours, theirs)
    assert merged["functions"]["a"]["status"] == "pending"  # ours is newer
    assert merged["functions"]["b"]["status"] == "failure"  # theirs is newer
    assert merged["functions"]["c"]["status"] == "success"  # only theirs knows it
    assert merged["status"] == "failure"  # recomputed, not taken from either note
    assert merged["message"] == "ours"
    assert merged["updatedAt"] == "2026-01-01T10:00:00.000+00:00"
    tie = merge_note_json(
        {"updatedAt": "2026-01-01T10:00:00+00:00", "functions": {"a": {"status": "success"}}},
        {"updatedAt": "2026-01-01T10:00:00+00:00", "functions": {"a": {"status": "failure"}}},
    )
    assert tie["functions"]["a"]["status"] == "success"  # a tie keeps ours
