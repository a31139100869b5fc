"""The CLI on a PostgreSQL [state] url: an unreachable database is exit 2 naming it (never a
silent fallback to SQLite), operator commands work against the shared database,
`gitopsd state migrate` copies a SQLite state and verifies it, and [ha] / [ui] keys that
cannot work are refused."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.sqlite import SqliteStore
from tests.clirunner import Gitopsd
from tests.store.contract import rollout
from tests.store.damage import fill
from tests.store.pgserver import PgServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gitopsd.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("status", "--output", "json"),
        ("history",),
        ("history", "fn"),
        ("pause", "fn"),
        ("resume", "fn"),
        ("promote", "fn"),
        ("abort", "fn"),
        ("approve", "fn"),
        ("rollback", "fn"),
        ("state", "check"),
    ],
)
def test_every_command_on_an_unreachable_database_exits_2_naming_it(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    port = free_port()
    cfg = config(tmp_path, f'[state]\nurl = "postgresql://ops:s3cret@127.0.0.1:{port}/gitops"\n')
    result = Gitopsd(tmp_path / "state", config=cfg)(*command)
    assert result.code == 2, (result.out, result.err)
    assert f"cannot reach the state database postgresql://ops@127.0.0.1:{port}/gitops" in (
        result.err
    )
    assert "s3cret" not in result.err + result.out
    assert "Traceback" not in result.err
    assert not (tmp_path / "state" / "gitopsd.db").exists()  # no silent SQLite fallback


def test_the_daemon_refuses_to_start_on_an_unreachable_database(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(
        tmp_path,
        f'[source]\nurl = "{tmp_path}/repo.git"\n'
        f'[state]\nurl = "postgresql://ops@127.0.0.1:{port}/gitops"\n',
    )
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "repo.git")], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "gitopsd.cli.main", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"GITOPSD_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot reach the state database postgresql://ops@127.0.0.1:{port}/gitops" in (
        done.stderr
    )
    assert not (tmp_path / "state" / "gitopsd.db").exists()


def test_operator_commands_from_two_machines_share_the_database(
    tmp_path: Path, pg_server: PgServer
) -> None:
    db = pg_server.create_database()
    secret = tmp_path / "pg-password"
    secret.write_text(pg_server.password + "\n")
    body = f'[state]\nurl = "{pg_server.url(db)}"\npassword_file = "pg-password"\n'
    here = Gitopsd(tmp_path / "here", config=config(tmp_path, body))
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    (other_dir / "pg-password").write_text(pg_server.password + "\n")
    there = Gitopsd(other_dir / "state", config=config(other_dir, body))
    store = PostgresStore(pg_target(pg_server.url(db, with_password=True)))
    try:
        nothing = here("pause", "fn")
        assert nothing.code == 2
        assert (
            f"recorded in the state database postgresql://gitopsd@127.0.0.1:{pg_server.port}/{db}"
            in nothing.err
        )
        store.create_rollout(rollout("fn-1.0.0-a", state="IN_PROGRESS"))
        assert here("pause", "fn").code == 0
        assert store.controls("fn").paused
        assert there("resume", "fn").code == 0
        assert not store.controls("fn").paused
    finally:
        store.close()
    checked = there("state", "check")
    assert checked.code == 0 and f"127.0.0.1:{pg_server.port}/{db}" in checked.out
    assert pg_server.password not in checked.out + checked.err


def test_state_migrate_copies_everything_and_verifies_the_counts(
    tmp_path: Path, pg_server: PgServer
) -> None:
    filled = fill(tmp_path / "state", rollouts=40, in_flight=2)
    sqlite = SqliteStore(tmp_path / "state")
    sqlite.put_module("ab" * 32, b"\0asm\1\0\0\0" + bytes(range(256)))
    sqlite.schedule_retirement("fn2", "edge-a", "1.2.0", 1234.5)
    sqlite.set_control("fn3", 7.0, paused=1, approved_version="2.0.0")
    sqlite.close()
    before = (tmp_path / "state" / "gitopsd.db").read_bytes()
    db = pg_server.create_database()
    url = pg_server.url(db, with_password=True)
    gitopsd = Gitopsd(tmp_path / "state")

    result = gitopsd("state", "migrate", "--to", url)
    assert result.code == 0, (result.out, result.err)
    assert "40 rollout(s), 120 journaled step(s)" in result.out
    assert "2 function control(s) (1 hold(s)), 2 key(s)" in result.out
    assert "1 module(s), 1 scheduled retirement(s)" in result.out
    assert "counts verified" in result.out
    assert pg_server.password not in result.out + result.err
    assert (tmp_path / "state" / "gitopsd.db").read_bytes() == before  # only read

    source, copy = SqliteStore(tmp_path / "state"), PostgresStore(pg_target(url))
    try:
        assert copy.rollouts(limit=1000) == source.rollouts(limit=1000)
        assert sorted(r.id for r in copy.active_rollouts()) == sorted(filled.in_flight)
        for row in source.rollouts(limit=1000):
            assert copy.journal(row.id) == source.journal(row.id)
        for fn in ("fn1", "fn3", "nobody"):
            assert copy.controls(fn) == source.controls(fn)
        assert copy.controls_stamp() == source.controls_stamp()
        assert copy.module("ab" * 32) == source.module("ab" * 32)
        assert copy.due_retirements(1e9) == [("fn2", "edge-a", "1.2.0")]
        for key in ("held-for:fn1", "last_applied_commit"):
            assert copy.get(key) == source.get(key)
    finally:
        source.close()
        copy.close()

    again = gitopsd("state", "migrate", "--to", url)  # never mixes two histories
    assert again.code == 2
    assert "already holds gitopsd state (40 rollouts" in again.err


def test_state_migrate_without_a_state_file_says_so(tmp_path: Path, pg_server: PgServer) -> None:
    url = pg_server.url(pg_server.create_database(), with_password=True)
    result = Gitopsd(tmp_path / "nothing")("state", "migrate", "--to", url)
    assert result.code == 2
    assert f"no state database at {tmp_path / 'nothing' / 'gitopsd.db'}" in result.err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[ha]\nlease = "PT2S"\n', '[ha] needs [state] url = "postgresql://..."'),
        ("[ha]\nshards = 3\n", '[ha] needs [state] url = "postgresql://..."'),
        (
            '[state]\nurl = "postgresql://u@db/x"\n[ha]\nlease = "PT0.5S"\n',
            "lease must be at least PT1S",
        ),
        ('[state]\nurl = "mysql://u@db/x"\n', "only postgresql://user@host:port/dbname"),
    ],
)
def test_state_and_ha_keys_that_cannot_work_are_refused(
    tmp_path: Path, body: str, message: str
) -> None:
    result = Gitopsd(tmp_path / "state", config=config(tmp_path, body))("status")
    assert result.code == 2
    assert message in result.err
