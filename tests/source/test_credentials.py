"""Finding 7 (issue 14): the password of an http(s) source never surfaces.

The source is served by real `git http-backend` behind HTTP Basic auth on 127.0.0.1
(tests/source/httpgit.py): libgit2 must log in to fetch, the git CLI to push notes. Each
leak surface is checked by searching what it produced for the password: every byte under
the state dir (mirror config, FETCH_HEAD, logs of refs), CLI stderr, `gitopsd status`,
daemon logs, the sd_notify STATUS line and the notes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
import structlog

from gitopsd import log
from gitopsd.daemon.service import LAST_ERROR_KEY, Daemon
from gitopsd.errors import ConfigError, SourceError
from gitopsd.report.notes import CommitOutcome, FunctionOutcome, read_note, write_note
from gitopsd.report.publisher import publish_now
from gitopsd.source.git import SourceSpec, mirror_dir, open_repository
from gitopsd.source.reader import open_source, take_snapshot
from tests.clirunner import Gitopsd
from tests.gitrepo import GitRemote, git
from tests.source.httpgit import GitHttpServer, git_http_server

USER = "deploy-bot"
PASSWORD = "Pa55-w0rd-that-must-not-leak"
WRONG = "wr0ng-pa55-that-must-not-leak"


def leaks(root: Path, *secrets: str) -> list[str]:
    """Files under `root` whose bytes contain one of `secrets`."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets):
            found.append(str(path.relative_to(root)))
    return found


@pytest.fixture
def served(remote: GitRemote) -> Iterator[tuple[GitRemote, GitHttpServer]]:
    remote.write("deploy/a.yaml", "a: 1\n")
    remote.commit_push("first")
    with git_http_server(remote.bare.parent, USER, PASSWORD) as server:
        yield remote, server


def test_redact_hides_passwords_and_tokens_in_any_text() -> None:
    from gitopsd.source.redact import redact, split_userinfo

    cases = {
        "https://bot:s3cret@host/r.git": "https://bot:***@host/r.git",
        "https://bot:p%40ss@host/r.git": "https://bot:***@host/r.git",
        "https://bot:p@ss@host/r.git?x=1": "https://bot:***@host/r.git?x=1",  # raw @ in it
        "https://ghp_token@host/r": "https://***@host/r",  # a bare token
        "ssh://git@host/r.git": "ssh://git@host/r.git",  # an SSH user is no secret
        "error: a HTTP://u:x@h/1 and http://v:y@h/2.": "error: a HTTP://u:***@h/1 and http://v:***@h/2.",
        "https://host/path@v1 mail me@example.com": "https://host/path@v1 mail me@example.com",
        # Credentials forges put in the query (red-team: shown in CLI errors before).
        "https://host/r.git?access_token=ghp_x&ref=1": "https://host/r.git?access_token=***&ref=1",
        "fetch https://h/r?private_token=glpat-1#top": "fetch https://h/r?private_token=***#top",
        "https://h/r?page=2&key=abc": "https://h/r?page=2&key=***",
    }
    for text, shown in cases.items():
        assert redact(text) == shown
    parts = split_userinfo("https://bot:p%40ss@host/r.git")
    assert (parts.url, parts.username, parts.password) == ("https://bot@host/r.git", "bot", "p@ss")
    assert "p@ss" not in repr(parts)


def test_mirror_of_a_url_with_a_password_keeps_it_out_of_every_file(
    served: tuple[GitRemote, GitHttpServer], tmp_path: Path
) -> None:
    remote, server = served
    state = tmp_path / "state"
    url = server.url("remote.git", f"{USER}:{PASSWORD}")
    first = take_snapshot(SourceSpec(url, "main", "deploy"), state)
    second_sha = remote.commit_push("second")
    second = take_snapshot(SourceSpec(url, "main", "deploy"), state)  # fetch into the mirror
    assert first.files["a.yaml"].data == b"a: 1\n" and second.commit == second_sha
    assert server.authorized, "the server was never logged in to"
    mirror = mirror_dir(state, url)
    assert pygit2.Repository(str(mirror)).remotes["origin"].url == server.url("remote.git", USER)
    assert leaks(state, PASSWORD) == []
    for directory in (mirror, mirror.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_password_file_logs_in_and_a_wrong_one_is_refused_without_echo(
    served: tuple[GitRemote, GitHttpServer], tmp_path: Path
) -> None:
    remote, server = served
    good, bad = tmp_path / "password", tmp_path / "wrong"
    good.write_text(PASSWORD + "\n")
    bad.write_text(WRONG + "\n")
    url = server.url("remote.git", USER)
    snap = take_snapshot(SourceSpec(url, password_file=good), tmp_path / "s1")
    assert snap.commit == git("rev-parse", "HEAD", cwd=remote.work)
    with pytest.raises(SourceError, match="refused the user name and password") as refused:
        take_snapshot(SourceSpec(url, password_file=bad), tmp_path / "s2")
    assert WRONG not in str(refused.value) and PASSWORD not in str(refused.value)
    assert leaks(tmp_path / "s1", PASSWORD) == [] and leaks(tmp_path / "s2", WRONG) == []
    # The key is never accepted and ignored: each misuse names what is wrong.
    with pytest.raises(ConfigError, match="carries a password"):
        take_snapshot(
            SourceSpec(server.url("remote.git", f"{USER}:x"), password_file=good), tmp_path
        )
    with pytest.raises(ConfigError, match="needs the user name"):
        take_snapshot(SourceSpec(server.url("remote.git"), password_file=good), tmp_path)
    with pytest.raises(ConfigError, match="for http"):
        take_snapshot(SourceSpec(str(remote.bare), password_file=good), tmp_path)


def test_a_mirror_made_before_the_fix_is_moved_and_scrubbed(
    served: tuple[GitRemote, GitHttpServer], tmp_path: Path
) -> None:
    """Old mirrors were named by a digest of the whole URL and kept it in their config."""
    _, server = served
    import hashlib

    state = tmp_path / "state"
    url = server.url("remote.git", f"{USER}:{PASSWORD}")
    legacy = state / "repos" / hashlib.sha256(url.encode()).hexdigest()[:16]
    legacy.parent.mkdir(parents=True)
    old = pygit2.init_repository(str(legacy), bare=True)
    old.remotes.create("origin", url)
    assert leaks(state, PASSWORD)  # what the old code left behind
    repo = open_repository(url, state)
    assert Path(repo.path).resolve() == mirror_dir(state, url).resolve() and not legacy.exists()
    assert leaks(state, PASSWORD) == []


def test_notes_are_pushed_with_the_credentials_and_redacted(
    served: tuple[GitRemote, GitHttpServer], tmp_path: Path
) -> None:
    remote, server = served
    sha = git("rev-parse", "HEAD", cwd=remote.work)
    url = server.url("remote.git", f"{USER}:{PASSWORD}")
    spec = SourceSpec(url)
    take_snapshot(spec, tmp_path / "state")
    # An outcome whose text names the URL (an agent address, an error): redacted in the note.
    outcome = CommitOutcome(
        sha,
        "failure",
        f"fetch from {url} failed",
        {"fn": FunctionOutcome("failure", "1", message=url, failed_step=url)},
        problems=(url,),
    )
    asyncio.run(publish_now(spec, tmp_path / "state", outcome))
    body = read_note(open_source(spec, tmp_path / "state", fetch=False), sha)
    assert body is not None
    pushed = json.loads(remote.note(sha))  # in the remote: the git CLI logged in to push
    assert pushed["status"] == "failure" and "***" in pushed["message"]
    assert PASSWORD not in json.dumps(pushed) and PASSWORD not in json.dumps(body)
    assert leaks(tmp_path / "state", PASSWORD) == []
    direct = write_note(pygit2.Repository(str(remote.bare)), outcome)
    assert PASSWORD not in json.dumps(direct)


def test_cli_errors_never_show_the_password(
    served: tuple[GitRemote, GitHttpServer], tmp_path: Path
) -> None:
    _, server = served
    secret = tmp_path / "fleet-secret"  # diff talks to agents: without one it stops first
    secret.write_text("fleet-secret\n")
    run = Gitopsd(tmp_path / "state", secret)
    wrong = server.url("remote.git", f"{USER}:{WRONG}")
    refused = run("validate", wrong)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = run("diff", f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/remote.git")
    for result in (refused, unreachable):
        assert WRONG not in result.out + result.err and PASSWORD not in result.out + result.err
    assert leaks(tmp_path / "state", PASSWORD, WRONG) == []
    assert refused.code == 2 and "refused the user name and password" in refused.err
    assert unreachable.code == 2 and f"{USER}:***@127.0.0.1" in unreachable.err


def test_log_lines_are_redacted_values_and_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"https://{USER}:{PASSWORD}@git.example/edge.git"
    try:
        for json_lines in (True, False):
            log.configure(json=json_lines)
            logger = log.get_logger(source=url)
            logger.error("fetch failed", error=f"source {url}: refused", urls=[url])
            try:
                raise SourceError(f"source {url}: boom")
            except SourceError:
                logger.exception("unexpected")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "fetch failed" in err and "boom" in err and f"{USER}:***@git.example" in err
    assert PASSWORD not in err


async def test_daemon_log_status_line_and_gitopsd_status_are_redacted(
    served: tuple[GitRemote, GitHttpServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon with a source whose password the server refuses: the failed pass is
    logged, sent to systemd (a real NOTIFY_SOCKET datagram socket) and stored for
    `gitopsd status`; none of them may carry the password."""
    _, server = served
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    token = tmp_path / "fleet-secret"
    token.write_text("fleet-secret-for-the-test\n")
    config = tmp_path / "gitopsd.toml"
    url = server.url("remote.git", f"{USER}:{WRONG}")
    config.write_text(
        f'[source]\nurl = "{url}"\nwatch = false\ninterval = "PT1H"\n'
        f'[fleet]\ntoken_file = "{token}"\n[state]\ndir = "{tmp_path / "state"}"\n'
    )
    log.configure(json=True)
    try:
        daemon = Daemon(config)
        try:
            await daemon.reconcile_pass(["test"])
            status_line = listener.recv(65536).decode()
            stored = daemon.store.get(LAST_ERROR_KEY) or ""
        finally:
            daemon.store.close()
    finally:
        structlog.reset_defaults()
        listener.close()
    logs = capsys.readouterr().err
    status = await asyncio.to_thread(Gitopsd(tmp_path / "state", config=config), "status")
    for text in (status_line, stored, logs, status.out, status.err):
        assert WRONG not in text
    assert leaks(tmp_path / "state", WRONG) == []
    assert "refused the user name and password" in stored
    assert status_line.startswith("STATUS=error:") and "***@" in status_line
    assert "reconcile failed" in logs
    assert "the daemon cannot reconcile" in status.out + status.err


def test_python_api_errors_and_logs_under_a_host_logging_setup(tmp_path: Path) -> None:
    """GitOpsSynchronizer in a program that configured structlog itself (so gitopsd's
    redacting processors are not in the chain): what the API logs and returns is redacted
    already."""
    import io
    import threading

    from gitopsd.api.sync import GitOpsSynchronizer

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"https://{USER}:{PASSWORD}@127.0.0.1:{port}/edge.git"
    host_log = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=host_log),
    )
    try:
        api = GitOpsSynchronizer(url, state_dir=tmp_path / "state", notes=False)
        try:
            result = api.sync()
            stop = threading.Event()
            stop.set()
            api.watch(lambda _: None, stop=stop)  # reads the branch once, logs the failure
        finally:
            api.close()
    finally:
        structlog.reset_defaults()
    logged = host_log.getvalue()
    assert PASSWORD not in logged and PASSWORD not in " ".join(result.errors)
    assert not result.success and f"{USER}:***@127.0.0.1" in " ".join(result.errors)
    assert "cannot read the branch" in logged and f"{USER}:***@" in logged


def test_git_cli_mirrors_keep_no_password_in_config_or_argv(tmp_path: Path) -> None:
    """The git CLI path (SSH sources, and what notes push through) gets the URL without its
    password: in the mirror's config, and on the command line (which `ps` shows)."""
    from gitopsd.source.hostkeys import fetch_with_git_cli

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for url in (
        f"ssh://{USER}:{PASSWORD}@127.0.0.1:{port}/edge.git",
        f"https://{USER}:{PASSWORD}@127.0.0.1:{port}/edge.git",
    ):
        mirror = tmp_path / url.split(":", 1)[0]
        with pytest.raises(SourceError) as failed:
            fetch_with_git_cli(mirror, url, {"GIT_SSH_COMMAND": "ssh -o BatchMode=yes"})
        assert PASSWORD not in str(failed.value)
        assert leaks(mirror, PASSWORD) == []
        assert f"{USER}@127.0.0.1:{port}" in git("config", "remote.origin.url", cwd=mirror)
        assert stat.S_IMODE(mirror.stat().st_mode) == 0o700
