"""SIGKILL a real `gitopsd sync` process in the middle of a canary wait; a new process
finishes the same rollout without redoing completed steps, and the wait keeps its deadline."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push


def _journal(db: Path) -> list[tuple[int, str, float, float | None, float | None, str | None]]:
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute(
                "SELECT seq, step, started_at, finished_at, deadline, outcome FROM journal ORDER BY"
                " rollout_id, seq"
            )
        )


def _sync(state: Path, remote: GitRemote, fleet: Fleet) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gitopsd.cli.main",
            "sync",
            str(remote.bare),
            "--once",
            "--state-dir",
            str(state),
            "--agent-token-file",
            str(fleet.token_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_mid_wait_then_resume(remote: GitRemote, fleet: Fleet, tmp_path: Path) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    canary = "{type: canary, stages: [34, 100], evaluationPeriod: PT3S}"
    state = tmp_path / "state"
    push(remote, "fn", "1.0.0", "{type: blue-green}")
    first = _sync(state, remote, fleet)
    assert first.wait(60) == 0, first.stderr
    push(remote, "fn", "2.0.0", canary)

    proc = _sync(state, remote, fleet)
    db = state / "gitopsd.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = _journal(db)
        if any('"wait"' in step and outcome is None for _, step, *_r, outcome in rows):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the rollout never reached its wait")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    before = _journal(db)
    wait_row = next(r for r in before if '"wait"' in r[1] and r[5] is None)
    assert fleet.serving("fn").values() and "2.0.0" in fleet.serving("fn").values()

    again = _sync(state, remote, fleet)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, out + err
    assert "done before restart" in out
    after = _journal(db)
    finished_before = [r for r in before if r[5] is not None]
    # Completed steps are untouched: same rows, same timestamps (not run a second time).
    assert [r[:4] for r in after[: len(finished_before)]] == [r[:4] for r in finished_before]
    resumed_wait = next(r for r in after if r[0] == wait_row[0] and r[1] == wait_row[1])
    assert resumed_wait[4] == wait_row[4]  # same absolute deadline
    assert resumed_wait[3] is not None and resumed_wait[3] >= wait_row[4]
    assert all(r[5] is not None for r in after)  # no dangling rows
    assert set(fleet.serving("fn").values()) == {"2.0.0"}
