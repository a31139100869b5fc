"""Issue 22 item 7: a repository whose branch is not `main` gets an error that lists its
branches and says how to choose one."""

from __future__ import annotations

from pathlib import Path

from tests.clirunner import Gitopsd
from tests.gitrepo import git


def test_ref_not_found_lists_the_branches_and_the_ways_to_choose(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    git("init", "-q", "-b", "master", str(work), cwd=tmp_path)
    (work / "nodes.yaml").write_text("")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("branch", "release", cwd=work)
    gitopsd = Gitopsd(tmp_path / "state")
    for source in (str(work), f"file://{work}"):  # the repository itself, and a mirror of it
        result = gitopsd("validate", source)
        assert result.code == 2
        assert "ref 'main' not found" in result.err
        assert "branches here: master, release" in result.err, result.err
        assert "--ref master" in result.err and "[source] branch" in result.err
    assert gitopsd("validate", str(work), "--ref", "master").code == 0
