"""Finding 1 (issue 14): a tag named like the branch must not pick the deployed commit.

A plain name is the branch `refs/heads/<name>`, for every kind of source (bare and non-bare
local repositories, `file://` mirrors, http mirrors); a tag or a commit only when named in
full (`refs/tags/v1`, a 40-hex id). With `[source.verify] mode = "head"` an older signed
commit tagged `main` would otherwise be a silent downgrade.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gitopsd.errors import SourceError
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import current_commit, take_snapshot
from gitopsd.source.verify import VerifyPolicy
from tests.gitrepo import GitRemote, git
from tests.signing import Keys, _git, _ssh
from tests.source.httpgit import git_http_server

KINDS = ["bare", "worktree", "file-url", "http"]


@pytest.fixture
def history(remote: GitRemote) -> tuple[GitRemote, str, str]:
    """Two commits on main; a tag `main` (and a branch-looking tag path) on the older one,
    made where gitopsd reads: in the bare remote and in the operator's clone."""
    remote.write("deploy/fn.yaml", "version: old\n")
    old = remote.commit_push("old")
    remote.write("deploy/fn.yaml", "version: new\n")
    new = remote.commit_push("new")
    for where in (remote.bare, remote.work):
        git("tag", "main", old, cwd=where)
    return remote, old, new


@pytest.fixture
def source_url(
    request: pytest.FixtureRequest, history: tuple[GitRemote, str, str]
) -> Iterator[str]:
    remote = history[0]
    kind = request.param
    if kind == "http":
        with git_http_server(remote.bare.parent, "bot", "pw") as server:
            yield server.url("remote.git", "bot:pw")
        return
    yield {
        "bare": str(remote.bare),
        "worktree": str(remote.work),
        "file-url": f"file://{remote.bare}",
    }[kind]


@pytest.mark.parametrize("source_url", KINDS, indirect=True)
def test_a_tag_named_like_the_branch_is_not_the_branch(
    source_url: str, history: tuple[GitRemote, str, str], tmp_path: Path
) -> None:
    _, old, new = history
    state = tmp_path / "state"
    snap = take_snapshot(SourceSpec(source_url, "main", "deploy"), state)
    assert snap.commit == new and snap.files["fn.yaml"].data == b"version: new\n"
    assert current_commit(SourceSpec(source_url, "main"), state) == new
    # What is named in full is what is read: the tag, the branch, a commit.
    assert current_commit(SourceSpec(source_url, "refs/tags/main"), state) == old
    assert current_commit(SourceSpec(source_url, "refs/heads/main"), state) == new
    assert current_commit(SourceSpec(source_url, old), state) == old


def test_only_full_names_reach_tags_and_commits(
    history: tuple[GitRemote, str, str], tmp_path: Path
) -> None:
    remote, old, _ = history
    git("tag", "v1", old, cwd=remote.bare)
    url = str(remote.bare)
    with pytest.raises(SourceError, match=r"no branch refs/heads/v1.*refs/tags/v1"):
        current_commit(SourceSpec(url, "v1"), tmp_path)
    assert current_commit(SourceSpec(url, "refs/tags/v1"), tmp_path) == old
    with pytest.raises(SourceError, match="no branch"):
        current_commit(SourceSpec(url, old[:12]), tmp_path)  # an abbreviation is not a commit
    with pytest.raises(SourceError, match=f"commit {'0' * 40} not found"):
        current_commit(SourceSpec(url, "0" * 40), tmp_path)


def test_signed_head_cannot_be_downgraded_through_a_tag(
    remote: GitRemote, keys: Keys, tmp_path: Path
) -> None:
    """Both commits are signed by an allowed key; the tag `main` (anyone who can push tags
    can make one, no key needed) points at the older. mode = "head" must read the branch."""
    sign = _ssh(keys.ssh_key)
    shas = []
    for version in ("1.0.0-vulnerable", "1.0.1-fixed"):
        remote.write("deploy/fn.yaml", f"version: {version}\n")
        _git(remote, keys, "add", "-A")
        _git(remote, keys, *sign, "commit", "-q", "-S", "-m", version)
        shas.append(_git(remote, keys, "rev-parse", "HEAD"))
    remote.push()
    git("tag", "main", shas[0], cwd=remote.bare)
    policy = VerifyPolicy("head", allowed_signers=keys.allowed_signers)
    spec = SourceSpec(f"file://{remote.bare}", "main", "deploy", verify=policy)
    snap = take_snapshot(spec, tmp_path / "state")
    assert snap.commit == shas[1]
    assert snap.files["fn.yaml"].data == b"version: 1.0.1-fixed\n"
