"""A state file with one damaged page: every command names the file and the way out (exit 2,
no traceback), `gitopsd state check` says damaged (exit 1), `gitopsd run` refuses to start
with a clear status line, and `gitopsd state rebuild` lets `status` work again."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gitopsd.store.sqlite import DB_NAME
from tests.clirunner import Gitopsd, Result
from tests.gitrepo import GitRemote
from tests.store.damage import Filled, corrupt_page, fill


@pytest.fixture
def damaged(tmp_path: Path) -> Filled:
    filled = fill(tmp_path / "state")
    corrupt_page(filled.db, "rollouts")
    return filled


@pytest.fixture
def gitopsd(damaged: Filled) -> Gitopsd:
    return Gitopsd(damaged.db.parent)


def assert_names_file_and_way_out(result: Result, db: Path) -> None:
    assert result.code == 2, (result.out, result.err)
    assert f"error: state database {db} is damaged" in result.err
    assert "gitopsd state rebuild" in result.err
    assert "Traceback" not in result.err + result.out


@pytest.mark.parametrize(
    "command",
    [("history",), ("history", "fn1", "--output", "json"), ("status",), ("status", "fn1")],
)
def test_commands_reading_the_damaged_page_say_which_file_and_what_to_do(
    gitopsd: Gitopsd, damaged: Filled, command: tuple[str, ...]
) -> None:
    assert_names_file_and_way_out(gitopsd(*command), damaged.db)


def test_an_operator_control_on_a_damaged_file_says_so_too(
    gitopsd: Gitopsd, damaged: Filled
) -> None:
    assert_names_file_and_way_out(gitopsd("pause", "fn1"), damaged.db)


def test_state_check_reports_sound_then_damaged(tmp_path: Path) -> None:
    filled = fill(tmp_path / "state", rollouts=120, in_flight=0)
    gitopsd = Gitopsd(filled.db.parent)
    sound = gitopsd("state", "check")
    assert sound.code == 0, sound.err
    assert sound.out == f"ok: {filled.db} passed the integrity check\n"
    corrupt_page(filled.db, "rollouts")
    damaged = gitopsd("state", "check")
    assert damaged.code == 1, damaged.err
    lines = damaged.out.splitlines()
    assert lines[0] == f"damaged: {filled.db}"
    assert len(lines) >= 3 and lines[1].startswith("  ")  # SQLite's own findings, indented
    assert "gitopsd state rebuild" in lines[-1]


def test_state_check_without_a_database_could_not_run(tmp_path: Path) -> None:
    result = Gitopsd(tmp_path / "empty")("state", "check")
    assert result.code == 2
    assert f"no state database at {tmp_path / 'empty' / DB_NAME}" in result.err
    assert not (tmp_path / "empty" / DB_NAME).exists()


def test_rebuild_moves_the_file_aside_says_what_was_lost_and_status_works_again(
    gitopsd: Gitopsd, damaged: Filled
) -> None:
    assert gitopsd("status").code == 2
    # In this process the failed command's connection lives on in its traceback until
    # collected (a real `gitopsd status` process has exited): rebuild would find it in use.
    gc.collect()
    rebuilt = gitopsd("state", "rebuild")
    assert rebuilt.code == 0, rebuilt.err
    first = rebuilt.out.splitlines()[0]
    assert first.startswith(f"moved the damaged file to {damaged.db}.damaged-")
    moved = Path(first.removeprefix("moved the damaged file to "))
    assert moved.is_file()
    assert "rollouts: " in rebuilt.out and "LOST: rowids" in rebuilt.out
    assert "controls: 1 of 1 row(s) salvaged, nothing lost" in rebuilt.out

    status = gitopsd("status", "--output", "json")
    assert status.code == 0, status.err
    names = {f["function"] for f in status.json()["functions"]}
    assert names == {f"fn{i}" for i in range(5)}
    assert next(f for f in status.json()["functions"] if f["function"] == "fn1")["held"]
    history = gitopsd("history", "--output", "json")
    assert history.code == 0
    ids = {r["id"] for r in history.json()["rollouts"]}
    assert 0 < len(set(damaged.rollouts) - ids) < 50 and ids <= set(damaged.rollouts)
    assert gitopsd("state", "check").code == 0
    again = gitopsd("state", "rebuild")
    assert (again.code, again.out) == (
        0,
        f"{damaged.db} passed the integrity check: nothing to rebuild\n",
    )


def test_the_daemon_refuses_to_start_on_a_damaged_file(
    tmp_path: Path, remote: GitRemote, damaged: Filled
) -> None:
    remote.write("README", "manifests live here\n")
    remote.commit_push("first")
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{remote.bare}"\n[state]\ndir = "{damaged.db.parent}"\n')
    notify = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(notify)
        sock.settimeout(60)
        done = subprocess.run(
            [sys.executable, "-m", "gitopsd.cli.main", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "NOTIFY_SOCKET": notify},
        )
        status = sock.recv(4096).decode()
    assert done.returncode == 2, done.stderr
    assert f"error: state database {damaged.db} is damaged" in done.stderr
    assert "gitopsd state rebuild" in done.stderr
    assert "Traceback" not in done.stderr
    assert status.startswith(f"STATUS=refusing to start: state database {damaged.db} is damaged")
    assert "\n" not in status.strip()
    assert "READY=1" not in status


def test_after_journal_damage_rebuild_closes_rollouts_in_flight_and_status_shows_them(
    tmp_path: Path,
) -> None:
    filled = fill(tmp_path / "state")
    corrupt_page(filled.db, "journal")
    gitopsd = Gitopsd(filled.db.parent)
    rebuilt = gitopsd("state", "rebuild")
    assert rebuilt.code == 0, rebuilt.err
    for rollout_id in filled.in_flight:
        assert f"closed rollout {rollout_id} as FAILED" in rebuilt.out
    status = gitopsd("status", "--output", "json")
    assert status.code == 0, status.err
    states = {f["function"]: f["rollout"]["state"] for f in status.json()["functions"]}
    closed = {filled.rollouts[i].function for i in filled.in_flight}
    assert {states[fn] for fn in closed} == {"FAILED"}


def test_a_truncated_file_names_the_way_out_and_rebuild_starts_empty(tmp_path: Path) -> None:
    filled = fill(tmp_path / "state", rollouts=120, in_flight=0)
    os.truncate(filled.db, filled.db.stat().st_size // 2)
    gitopsd = Gitopsd(filled.db.parent)
    assert_names_file_and_way_out(gitopsd("history"), filled.db)
    rebuilt = gitopsd("state", "rebuild")
    assert rebuilt.code == 0, rebuilt.err
    assert "nothing could be read from it: the new database is empty" in rebuilt.out
    assert "holds and operator controls" in rebuilt.out
    status = gitopsd("status")
    assert status.code == 0
    assert status.out.startswith("no functions known yet: no rollout recorded in the state dir")
