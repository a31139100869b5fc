"""The one rule of gitopsd/source/ancestry.py, on a real repository: a head is applied only if
it descends from the last applied commit (issue 14 finding 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gitopsd.source.ancestry import NonFastForward, check_fast_forward
from gitopsd.source.git import SourceSpec
from tests.gitrepo import GitRemote, git


def test_descendants_pass_and_everything_else_is_refused(remote: GitRemote, tmp_path: Path) -> None:
    first = remote.commit_push("first")
    second = remote.commit_push("second")
    git("checkout", "-q", "-b", "side", first, cwd=remote.work)
    side = remote.commit("a sibling of second")
    spec = SourceSpec(str(remote.work))
    check_fast_forward(spec, tmp_path, second, first)  # a fast-forward
    check_fast_forward(spec, tmp_path, second, second)  # the same commit
    check_fast_forward(spec, tmp_path, second, None)  # nothing applied yet
    check_fast_forward(spec, tmp_path, "", first)  # a plain directory has no commit
    with pytest.raises(NonFastForward, match="does not descend from the last applied") as back:
        check_fast_forward(spec, tmp_path, first, second)  # back to an ancestor
    assert back.value.exit_code == 1 and back.value.commit == first
    assert "allow_non_fast_forward" in str(back.value)
    with pytest.raises(NonFastForward, match="does not descend"):
        check_fast_forward(spec, tmp_path, side, second)  # a sibling: rewritten history
    with pytest.raises(NonFastForward, match="not in the repository any more"):
        check_fast_forward(spec, tmp_path, second, "f" * 40)  # gc'd, or another repository


def test_allowed_non_fast_forward_is_applied_and_logged(remote: GitRemote, tmp_path: Path) -> None:
    first = remote.commit_push("first")
    second = remote.commit_push("second")
    spec = SourceSpec(str(remote.bare), allow_non_fast_forward=True)
    with capture_logs() as logs:
        check_fast_forward(spec, tmp_path, first, second)
    assert [e["log_level"] for e in logs] == ["warning"]
    assert "not a fast-forward" in logs[0]["event"]
