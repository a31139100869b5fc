"""Tokens and passwords never reach a log line, a note or an error message, even when the
other side echoes them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pygit2
import pytest
from structlog.testing import capture_logs

from gitopsd.errors import SourceError
from gitopsd.report.forges import ForgeReporter, ForgeTarget
from gitopsd.report.notes import CommitOutcome, FunctionOutcome, push_notes, write_note
from gitopsd.source.git import mirror_dir, open_repository
from gitopsd.source.hostkeys import fetch_with_git_cli
from tests.gitrepo import GitRemote, git
from tests.report.test_forges import SHA, FakeSleep, forge_server

TOKEN = "ghp_S3cr3tTok3nValue"
PASSWORD = "hunter2-remote-password"


def _scan(*things: Any) -> str:
    return json.dumps([repr(t) for t in things])


async def test_forge_401_that_echoes_the_token_keeps_it_out_of_logs() -> None:
    echo = f'{{"message": "Bad credentials: {TOKEN}"}}'
    async with forge_server((401, {}, echo)) as srv:
        targets = [
            ForgeTarget("github", srv.url, "acme/edge", TOKEN),
            ForgeTarget("gitea", srv.url, "acme/edge", TOKEN),
            ForgeTarget("gitlab", srv.url, "acme/edge", TOKEN),
        ]
        with capture_logs() as logs:
            async with ForgeReporter(targets, sleep=FakeSleep()) as rep:
                results = await rep.post_all(SHA, "fn", "failure", "rolled back")
            # A transport failure too: exception text goes through the same scrubbing.
            dead = ForgeTarget("gitlab", "http://127.0.0.1:9", "g/p", TOKEN)
            async with ForgeReporter([dead], sleep=FakeSleep(), attempts=2) as rep:
                assert not await rep.post(dead, SHA, "fn", "success", "ok")
    assert results == dict.fromkeys(results, False) and len(results) == 3
    assert len(srv.seen) == 3  # the token was sent, to the forge only
    assert logs, "expected warnings"
    text = _scan(logs, targets, dead)
    assert TOKEN not in text
    assert "***" in text  # the echoed token was replaced, not the whole message dropped


def test_push_notes_failure_keeps_the_remote_password_out(
    remote: GitRemote, tmp_path: Path
) -> None:
    sha = remote.commit_push("first")
    url = f"file://{remote.bare}"
    open_repository(url, tmp_path / "state")
    mirror = mirror_dir(tmp_path / "state", url)
    outcome = CommitOutcome(
        sha, "success", "ok", {"fn": FunctionOutcome(status="success", version="1")}
    )
    body = write_note(pygit2.Repository(str(mirror)), outcome)
    secret_url = f"https://gitopsd-bot:{PASSWORD}@127.0.0.1:9/acme/edge.git"
    git("remote", "set-url", "origin", secret_url, cwd=mirror)
    with capture_logs() as logs:
        assert push_notes(mirror) is False
    assert any(e["log_level"] == "warning" for e in logs)
    with pytest.raises(SourceError) as err:
        fetch_with_git_cli(tmp_path / "other", secret_url, {})
    assert "127.0.0.1" in str(err.value)
    text = _scan(logs, body, str(err.value), repr(err.value))
    assert PASSWORD not in text
    assert PASSWORD not in git("notes", "--ref=gitopsd", "show", sha, cwd=mirror)
