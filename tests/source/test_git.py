"""Reading snapshots from real Git repositories: bare, non-bare, file:// mirrors, force-pushes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitopsd.errors import SourceError
from gitopsd.source.git import SourceSpec, mirror_dir
from gitopsd.source.reader import current_commit, take_snapshot
from tests.gitrepo import GitRemote


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    repo = GitRemote(tmp_path / "git")
    repo.write("deploy/a.yaml", "a: 1\n")
    repo.write("deploy/sub/b.yml", "b: 2\n")
    repo.write("README.md", "not synced\n")
    repo.commit_push("first")
    return repo


def test_reads_bare_repo_without_checkout(remote: GitRemote, tmp_path: Path) -> None:
    snap = take_snapshot(SourceSpec(str(remote.bare), "main", "/deploy"), tmp_path / "state")
    assert set(snap.files) == {"a.yaml", "sub/b.yml"}
    assert snap.files["a.yaml"].data == b"a: 1\n"
    assert snap.commit == current_commit(SourceSpec(str(remote.bare)), tmp_path / "state")
    assert not (tmp_path / "state" / "repos").exists()  # a local repo is read in place


def test_reads_non_bare_repo_by_ref_not_worktree(remote: GitRemote, tmp_path: Path) -> None:
    remote.write("deploy/a.yaml", "uncommitted\n")
    snap = take_snapshot(SourceSpec(str(remote.work), "main", "deploy"), tmp_path / "s")
    assert snap.files["a.yaml"].data == b"a: 1\n"


def test_file_url_is_mirrored_and_follows_force_push(remote: GitRemote, tmp_path: Path) -> None:
    state = tmp_path / "state"
    spec = SourceSpec(f"file://{remote.bare}", "main", "/")
    first = take_snapshot(spec, state)
    assert (mirror_dir(state, spec.url) / "HEAD").exists()
    remote.write("deploy/a.yaml", "a: 2\n")
    remote.commit("amended")
    from tests.gitrepo import git

    git("reset", "-q", "--hard", "HEAD~1", cwd=remote.work)
    remote.write("deploy/a.yaml", "a: 3\n")
    forced = remote.commit("rewritten history")
    remote.push(force=True)
    second = take_snapshot(spec, state)
    assert second.commit == forced != first.commit
    assert second.files["deploy/a.yaml"].data == b"a: 3\n"


def test_symlinks_are_kept_as_links(remote: GitRemote, tmp_path: Path) -> None:
    (remote.work / "deploy" / "link.yaml").symlink_to("/etc/passwd")
    remote.commit_push("link")
    snap = take_snapshot(SourceSpec(str(remote.bare), "main", "deploy"), tmp_path / "s")
    assert snap.files["link.yaml"].is_symlink
    assert snap.files["link.yaml"].data == b"/etc/passwd"


def test_missing_ref_and_path_and_repo_are_clear_errors(remote: GitRemote, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="ref 'nope' not found"):
        take_snapshot(SourceSpec(str(remote.bare), "nope"), tmp_path)
    with pytest.raises(SourceError, match="path /missing not found"):
        take_snapshot(SourceSpec(str(remote.bare), "main", "missing"), tmp_path)
    with pytest.raises(SourceError, match="no such"):
        take_snapshot(SourceSpec(str(tmp_path / "nowhere.git")), tmp_path)
    with pytest.raises(SourceError, match="no such repository"):
        take_snapshot(SourceSpec(f"file://{tmp_path}/nowhere.git"), tmp_path)


def test_plain_directory_is_read_from_disk(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.yaml").write_text("x: 1\n")
    snap = take_snapshot(SourceSpec(str(tmp_path / "m")), tmp_path / "state")
    assert snap.commit == ""
    assert snap.files["x.yaml"].data == b"x: 1\n"
