"""The real daemon as a subprocess: pushes applied via watch and webhook, webhook attacks
refused, drift healed, prune (and its empty-set guard), invalid commits refused, crash
and SIGTERM behaviour, sd_notify readiness, metrics."""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest

from tests.daemon.daemonsupport import DaemonProcess, wait_for
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote, git
from tests.rollout.livesupport import push


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "hello", "1.0.0", "{type: blue-green}")
    return remote


@pytest.fixture
def daemon(tmp_path: Path, repo: GitRemote, fleet: Fleet) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path / "daemon", repo, fleet)
    yield d
    d.close()


def serves(fleet: Fleet, fn: str, version: str | None) -> bool:
    return set(fleet.serving(fn).values()) == {version}


def note(repo: GitRemote, sha: str) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(repo.note(sha))
    except RuntimeError:
        return None
    return data


def test_push_is_applied_by_the_watch_without_waiting_for_the_poll(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet
) -> None:
    daemon.start()
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
    sha = push(repo, "hello", "2.0.0", "{type: blue-green}")  # the poll interval is 1 hour
    wait_for(lambda: serves(fleet, "hello", "2.0.0"), what="push applied via watch")
    wait_for(lambda: (note(repo, sha) or {}).get("status") == "success", what="note")
    assert "gitopsd_reconcile_total" in daemon.metrics()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_signed_webhook_applies_a_push_and_attacks_are_refused(
    tmp_path: Path, repo: GitRemote, fleet: Fleet
) -> None:
    daemon = DaemonProcess(tmp_path / "d", repo, fleet, watch=False)
    try:
        daemon.start()
        wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
        push(repo, "hello", "2.0.0", "{type: blue-green}")
        payload = {"ref": "refs/heads/main", "after": "x"}
        assert daemon.hook("github", payload, "d-1", secret="wrong") == 401
        assert daemon.hook("gitea", payload, "d-2", secret="wrong") == 401
        assert daemon.hook("gitlab", payload, "d-3", secret="wrong") == 401
        assert daemon.hook("github", b"x" * (1024 * 1024 + 1), "d-4") == 413
        assert daemon.hook("github", b"{truncated", "d-5") == 400
        assert serves(fleet, "hello", "1.0.0")  # nothing above triggered a reconcile
        assert daemon.hook("github", payload, "d-6") == 202
        wait_for(lambda: serves(fleet, "hello", "2.0.0"), what="webhook-triggered sync")
        assert daemon.hook("github", payload, "d-6") == 409  # replayed delivery
        push(repo, "hello", "3.0.0", "{type: blue-green}")
        # Each push is a new body (its `after` commit): the replay guard keys on the body.
        assert daemon.hook("gitea", payload | {"after": "3" * 40}, "g-1") == 202
        wait_for(lambda: serves(fleet, "hello", "3.0.0"), what="gitea webhook")
        push(repo, "hello", "4.0.0", "{type: blue-green}")
        assert daemon.hook("gitlab", payload | {"after": "4" * 40}, "l-1") == 202
        wait_for(lambda: serves(fleet, "hello", "4.0.0"), what="gitlab webhook")
        assert re.search(
            r'gitopsd_webhook_deliveries_total\{forge="github",result="401"\} 1(\.0)?\n',
            daemon.metrics(),
        )
        # Secrets never reach the logs, the notes or the metrics.
        from tests.daemon.daemonsupport import SECRET
        from tests.fleetfixture import TOKEN

        notes = git("notes", "--ref=gitopsd", "list", cwd=repo.bare)
        bodies = [repo.note(line.split()[1]) for line in notes.splitlines()]
        for text in (daemon.logs(), daemon.metrics(), *bodies):
            assert SECRET not in text and TOKEN not in text
    finally:
        daemon.close()


def delete_by_hand(daemon: DaemonProcess, fleet: Fleet, node: str, function: str) -> None:
    """Once the first sync has ended, delete `function` on `node` behind the daemon's back
    (while that rollout still runs, the edit would fail and roll back the rollout)."""
    wait_for(lambda: serves(fleet, function, "1.0.0"), what="first sync")
    wait_for(lambda: _active_rollouts(daemon.state / "gitopsd.db") == 0, what="first rollout")
    import urllib.request

    req = urllib.request.Request(
        f"{fleet.nodes[node].url}/functions/{function}",
        method="DELETE",
        headers={"Authorization": f"Bearer {fleet.token(node)}"},  # that node's own token
    )
    urllib.request.urlopen(req).close()


def test_drift_is_healed_and_removed_functions_are_pruned(
    tmp_path: Path, repo: GitRemote, fleet: Fleet
) -> None:
    daemon = DaemonProcess(tmp_path / "d", repo, fleet, interval="PT1S")
    try:
        daemon.start()
        # An operator deletes the function on one node by hand: the daemon puts it back.
        delete_by_hand(daemon, fleet, "edge-b", "hello")
        db = daemon.state / "gitopsd.db"
        # (The poll may heal it before we look: the second rollout is the proof, not timing.)
        wait_for(lambda: _rollouts_of(db, "hello") == 2, what="a healing rollout")
        wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="drift healed")
        push(repo, "other", "1.0.0", "{type: blue-green}")
        wait_for(lambda: serves(fleet, "other", "1.0.0"), what="second function")
        repo.remove("functions/hello.yaml")
        repo.commit_push("drop hello")
        wait_for(lambda: serves(fleet, "hello", None), what="prune")
        assert serves(fleet, "other", "1.0.0")
    finally:
        daemon.close()


def test_a_change_on_an_agent_wakes_the_daemon_without_a_poll(
    daemon: DaemonProcess, fleet: Fleet
) -> None:
    """The poll interval is an hour: only the held inventory request can tell the daemon."""
    daemon.start()
    delete_by_hand(daemon, fleet, "edge-c", "hello")
    db = daemon.state / "gitopsd.db"
    wait_for(lambda: _rollouts_of(db, "hello") == 2, what="a healing rollout")
    wait_for(lambda: _active_rollouts(db) == 0, what="the healing rollout to end")
    assert serves(fleet, "hello", "1.0.0")
    # An agent that stops is noticed at once; while it is down the daemon retries it with
    # backoff (not only at the next poll), so it is healed soon after it comes back empty.
    service = fleet.nodes["edge-a"].agent.service  # type: ignore[union-attr]
    wait_for(lambda: bool(service._moved._waiters), what="the daemon's request to be held")
    fleet.stop("edge-a")
    wait_for(lambda: 'node="edge-a"' in daemon.metrics(), what="the daemon to find edge-a down")
    import shutil

    shutil.rmtree(fleet.nodes["edge-a"].data_dir)
    fleet.start("edge-a")
    wait_for(lambda: _rollouts_of(db, "hello") == 3, what="a second healing rollout")
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="restarted agent healed")


def test_empty_manifest_set_prunes_nothing_without_allow_empty(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet
) -> None:
    daemon.start()
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
    repo.remove("functions")
    sha = repo.commit_push("oops: all functions gone")
    wait_for(lambda: note(repo, sha) is not None, what="note on the empty commit")
    body = note(repo, sha)
    assert body is not None and body["status"] == "failure"
    assert "PRUNE_REFUSED" in json.dumps(body)
    assert serves(fleet, "hello", "1.0.0")


def test_invalid_commit_gets_failure_note_and_fleet_keeps_previous_state(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet
) -> None:
    daemon.start()
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
    repo.write(
        "functions/hello.yaml",
        repo.work.joinpath("functions/hello.yaml").read_text() + "  colour: blue\n",
    )
    bad = repo.commit_push("typo")
    wait_for(lambda: note(repo, bad) is not None, what="failure note")
    body = note(repo, bad)
    assert body is not None and body["status"] == "failure"
    assert any("functions/hello.yaml:" in p for p in body["problems"])  # type: ignore[attr-defined]
    assert serves(fleet, "hello", "1.0.0")
    good = push(repo, "hello", "2.0.0", "{type: blue-green}")
    wait_for(lambda: serves(fleet, "hello", "2.0.0"), what="recovery with a good commit")
    wait_for(lambda: (note(repo, good) or {}).get("status") == "success", what="good note")


def _rollout_state(db: Path, version: str) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT state FROM rollouts WHERE version = ?", (version,)).fetchone()
    return row[0] if row else None


def _rollouts_of(db: Path, function: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM rollouts WHERE function = ?", (function,))
        return int(row.fetchone()[0])


def _active_rollouts(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM rollouts"
            " WHERE state NOT IN ('COMPLETED', 'ROLLED_BACK', 'FAILED')"
        )
        return int(row.fetchone()[0])


def _in_wait(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT 1 FROM journal WHERE step LIKE '%\"wait\"%' AND outcome IS NULL"
        ).fetchall()
    return bool(rows)


def test_sigkill_during_rollout_then_restart_finishes_it(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet
) -> None:
    daemon.start()
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
    push(repo, "hello", "2.0.0", "{type: canary, stages: [34, 100], evaluationPeriod: PT2S}")
    db = daemon.state / "gitopsd.db"
    wait_for(lambda: _in_wait(db), what="canary wait")
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    assert _rollout_state(db, "2.0.0") == "IN_PROGRESS"
    daemon.start()
    wait_for(lambda: _rollout_state(db, "2.0.0") == "COMPLETED", what="resumed rollout")
    assert serves(fleet, "hello", "2.0.0")


def test_sigterm_finishes_the_step_exits_0_and_the_wait_resumes(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet
) -> None:
    daemon.start()
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
    push(repo, "hello", "2.0.0", "{type: canary, stages: [34, 100], evaluationPeriod: PT1H}")
    db = daemon.state / "gitopsd.db"
    wait_for(lambda: _in_wait(db), what="canary wait")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    assert _rollout_state(db, "2.0.0") == "IN_PROGRESS"
    with sqlite3.connect(db) as conn:
        deadline_before = conn.execute(
            "SELECT deadline FROM journal WHERE step LIKE '%\"wait\"%'"
        ).fetchone()[0]
    daemon.start()
    # The resumed wait has the same deadline (an hour away): promote it to finish now.
    from click.testing import CliRunner

    from gitopsd.cli.main import cli

    result = CliRunner().invoke(cli, ["promote", "hello", "--state-dir", str(daemon.state)])
    assert result.exit_code == 0, result.output
    wait_for(lambda: _rollout_state(db, "2.0.0") == "COMPLETED", what="promoted rollout")
    with sqlite3.connect(db) as conn:
        deadline_after = conn.execute(
            "SELECT deadline FROM journal WHERE step LIKE '%\"wait\"%'"
        ).fetchone()[0]
    assert deadline_after == deadline_before


def test_ready_is_notified_after_the_first_reconcile(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    head = git("rev-parse", "HEAD", cwd=repo.work)
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(30)
        daemon.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        messages = [sock.recv(4096).decode() for _ in range(2)]
    ready = next(m for m in messages if "READY=1" in m)
    # READY comes once the first pass has read Git and the fleet and started the rollouts.
    assert f"STATUS=commit {head[:12]}" in ready
    assert "WATCHDOG=1" in messages  # pinged from inside the reconcile loop
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first rollout")


def test_ready_waits_for_a_successful_pass_and_failures_show_in_status(
    tmp_path: Path, repo: GitRemote, fleet: Fleet
) -> None:
    """Git down at boot: STATUS= says what is wrong while the daemon retries; READY=1 comes
    with the first pass that read Git and the fleet."""
    hidden = repo.bare.with_name("hidden.git")
    repo.bare.rename(hidden)
    daemon = DaemonProcess(tmp_path / "d", repo, fleet, interval="PT1S")
    path = str(tmp_path / "notify.sock")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(30)
            daemon.start(env={"NOTIFY_SOCKET": path})
            first = sock.recv(4096).decode()
            assert first.startswith("STATUS=error:") and "no such directory" in first, first
            assert "READY=1" not in first
            hidden.rename(repo.bare)
            messages = [sock.recv(4096).decode()]
            while "READY=1" not in messages[-1]:
                messages.append(sock.recv(4096).decode())
        assert "STATUS=commit " in messages[-1], messages
        wait_for(lambda: serves(fleet, "hello", "1.0.0"), timeout=30, what="first rollout")
    finally:
        daemon.close()


def test_a_rollout_paused_by_a_failed_batch_waits_for_resume_then_retries(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet
) -> None:
    from click.testing import CliRunner

    from gitopsd.cli.main import cli

    def gitopsd(*args: str) -> str:
        res = CliRunner().invoke(
            cli,
            [*args, "--state-dir", str(daemon.state), "--agent-token-file", str(fleet.token_file)],
        )
        assert res.exit_code == 0, res.output
        return res.stdout

    daemon.start()
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
    fleet.stop("edge-c")  # the last batch's agent: its deploy fails
    push(repo, "hello", "2.0.0", "{type: rolling, batchSize: 1, pauseOnFailure: true}")
    db = daemon.state / "gitopsd.db"
    wait_for(lambda: _rollout_state(db, "2.0.0") == "PAUSED", what="failure-paused rollout")

    def waiting() -> str:
        doc = json.loads(gitopsd("status", "hello", "--output", "json"))
        return str(doc["functions"][0]["waiting"])

    wait_for(lambda: "paused after a failure" in waiting(), what="the reason in status")
    assert "2.0.0" not in fleet.serving("hello").values()  # edge-c's batch came first
    fleet.start("edge-c")
    assert "will be rolled out again" in gitopsd("resume", "hello")
    wait_for(lambda: serves(fleet, "hello", "2.0.0"), timeout=30, what="the retry")

    def states() -> list[str]:
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT state FROM rollouts WHERE version = '2.0.0' ORDER BY created_at"
            ).fetchall()
        return [state for (state,) in rows]

    wait_for(lambda: states() == ["FAILED", "COMPLETED"], what=f"retry completed: {states()}")


def test_new_commit_during_a_rollout_supersedes_it(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet
) -> None:
    daemon.start()
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
    push(repo, "hello", "2.0.0", "{type: canary, stages: [34, 100], evaluationPeriod: PT1H}")
    db = daemon.state / "gitopsd.db"
    wait_for(lambda: _in_wait(db), what="canary of 2.0.0 waiting")
    push(repo, "hello", "3.0.0", "{type: blue-green}")
    wait_for(lambda: serves(fleet, "hello", "3.0.0"), what="3.0.0 everywhere")
    assert _rollout_state(db, "2.0.0") == "ROLLED_BACK"
    with sqlite3.connect(db) as conn:
        message = conn.execute("SELECT message FROM rollouts WHERE version = '2.0.0'").fetchone()
    assert "superseded by commit" in message[0]


def test_unreachable_repository_keeps_last_good_state_and_recovers(
    tmp_path: Path, repo: GitRemote, fleet: Fleet
) -> None:
    daemon = DaemonProcess(tmp_path / "d", repo, fleet, interval="PT1S")
    try:
        daemon.start()
        wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
        hidden = repo.bare.with_name("hidden.git")
        repo.bare.rename(hidden)
        from click.testing import CliRunner

        from gitopsd.cli.main import cli

        def status_note() -> str:
            res = CliRunner().invoke(
                cli,
                [
                    *("status", "--output", "json", "--state-dir", str(daemon.state)),
                    *("--agent-token-file", str(fleet.token_file)),
                ],
            )
            return str(res.stdout and json.loads(res.stdout)["note"])

        wait_for(lambda: "cannot reconcile" in status_note(), what="error reported in status")
        assert daemon.proc is not None and daemon.proc.poll() is None  # still running
        assert serves(fleet, "hello", "1.0.0")
        hidden.rename(repo.bare)
        push(repo, "hello", "2.0.0", "{type: blue-green}")
        wait_for(lambda: serves(fleet, "hello", "2.0.0"), timeout=30, what="recovery")
        wait_for(lambda: "cannot reconcile" not in status_note(), what="error cleared")
    finally:
        daemon.close()


def test_a_plain_directory_source_is_refused_at_start(tmp_path: Path) -> None:
    """The daemon follows commits; a directory without Git would fail every pass."""
    import subprocess
    import sys

    plain = tmp_path / "manifests"
    plain.mkdir()
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{plain}"\n[state]\ndir = "{tmp_path / "state"}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "gitopsd.cli.main", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "is a plain directory" in done.stderr


def _passes(daemon: DaemonProcess) -> float:
    found = re.findall(r"^gitopsd_reconcile_total\{[^}]*\} (\S+)$", daemon.metrics(), re.M)
    return sum(float(v) for v in found)


def test_a_tree_too_deep_is_noted_once_and_the_daemon_waits_for_a_new_commit(
    daemon: DaemonProcess, repo: GitRemote, fleet: Fleet
) -> None:
    """Regression (issue 14, finding 11): a commit 1,200 directories deep raised
    RecursionError while the tree was read, an unexpected error to the daemon, which retried
    the same commit with backoff forever and never wrote a failure note."""
    from tests.faults.test_bad_manifests import commit_tree, deep_tree

    daemon.start()
    wait_for(lambda: serves(fleet, "hello", "1.0.0"), what="first sync")
    work = pygit2.Repository(str(repo.work))
    bad = commit_tree(repo, "deep", deep_tree(work, 1200), "1,200 directories")
    wait_for(lambda: note(repo, bad) is not None, what="failure note on the deep commit")
    body = note(repo, bad)
    assert body is not None and body["status"] == "failure"
    problems = body["problems"]
    assert isinstance(problems, list) and len(problems) == 1
    assert f"deep/{'d/' * 31}d:1: directory nested 33 levels" in problems[0]
    before = _passes(daemon)
    for n in range(3):  # more passes at the same commit: it is not read or noted again
        assert daemon.hook("github", {"ref": "refs/heads/main", "n": n}, f"again-{n}") == 202
        wait_for(lambda n=n: _passes(daemon) >= before + n + 1, what=f"pass {n + 1}")
    assert daemon.logs().count("invalid manifests; previous desired state stays in force") == 1
    assert 'gitopsd_reconcile_total{result="error"}' not in daemon.metrics()
    assert serves(fleet, "hello", "1.0.0")
    push(repo, "hello", "2.0.0", "{type: blue-green}")  # commits the index: deep/ is gone
    wait_for(lambda: serves(fleet, "hello", "2.0.0"), what="the next commit applied")
