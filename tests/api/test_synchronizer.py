"""GitOpsSynchronizer on a real bare repository and real agents."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import pytest

from gitopsd.api import Change, GitOpsSynchronizer, SyncResult
from tests.fleetfixture import TOKEN, Fleet
from tests.gitrepo import GitRemote
from tests.test_sync_story import push_function


def synchronizer(remote: GitRemote, tmp_path: Path) -> GitOpsSynchronizer:
    return GitOpsSynchronizer(str(remote.bare), state_dir=tmp_path / "state", token=TOKEN)


def test_sync_deploys_then_diff_is_empty(remote: GitRemote, fleet: Fleet, tmp_path: Path) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    sha = push_function(remote, "hello", "1.0.0")
    sync = synchronizer(remote, tmp_path)

    diff = sync.get_diff()
    assert [(c.function, str(c.action)) for c in diff] == [("hello", "deploy")]
    result = sync.sync()
    assert result.success, result.errors
    assert result.commit == sha
    assert [c.function for c in result.changes] == ["hello"]
    assert [(r.function, r.state) for r in result.results] == [("hello", "COMPLETED")]
    assert set(fleet.serving("hello").values()) == {"1.0.0"}
    assert sync.get_diff() == []
    assert json.loads(remote.note(sha))["status"] == "success"

    remote.write("functions/broken.yaml", "apiVersion: gitopsd/v1\nkind: Nope\n")
    bad = remote.commit_push("broken")
    result = sync.sync()
    assert (result.success, result.commit, result.results) == (False, bad, [])
    assert any("functions/broken.yaml:" in e for e in result.errors)
    assert json.loads(remote.note(bad))["status"] == "failure"


def test_watch_syncs_a_new_push(remote: GitRemote, fleet: Fleet, tmp_path: Path) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    first = push_function(remote, "hello", "1.0.0")
    sync = synchronizer(remote, tmp_path)
    assert sync.sync().success

    seen: queue.Queue[tuple[SyncResult, list[Change]]] = queue.Queue()

    def callback(result: SyncResult) -> None:  # may use the synchronous API itself
        seen.put((result, sync.get_diff()))

    stop = threading.Event()
    watcher = threading.Thread(
        target=sync.watch, args=(callback,), kwargs={"interval": 0.05, "stop": stop, "since": first}
    )
    watcher.start()
    try:
        second = push_function(remote, "hello", "2.0.0")
        result, diff_after = seen.get(timeout=20)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert not watcher.is_alive()
    assert (result.commit, result.success) == (second, True), result.errors
    assert diff_after == []
    assert set(fleet.serving("hello").values()) == {"2.0.0"}
    assert seen.empty()


def test_the_documented_signature_works_with_the_clis_defaults(
    remote: GitRemote, fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GitOpsSynchronizer(repo_url, branch, path)` as design.md writes it: the state dir
    and the agents' token come from the same environment as the CLI's."""
    monkeypatch.setenv("GITOPSD_STATE_DIR", str(tmp_path / "env-state"))
    monkeypatch.setenv("GITOPSD_AGENT_TOKEN_FILE", str(fleet.token_file))
    remote.write("nodes.yaml", fleet.manifests())
    push_function(remote, "hello", "1.0.0")
    sync = GitOpsSynchronizer(str(remote.bare), "main", "/")
    try:
        assert sync.sync().success
    finally:
        sync.close()
    assert set(fleet.serving("hello").values()) == {"1.0.0"}
    assert (tmp_path / "env-state" / "gitopsd.db").exists()
