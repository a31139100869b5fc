"""The Python API uses the one implementation of what the CLI and the daemon do: the
operator rollback holds the function like `gitopsd rollback` does, and both classes open
the store the config names (a PostgreSQL `[state] url` too)."""

from __future__ import annotations

import json
from pathlib import Path

from gitopsd.api import DeploymentManager, EdgeCluster, GitOpsSynchronizer
from gitopsd.clock import FakeClock
from gitopsd.rollout.hold import hold_reason
from gitopsd.rollout.spec import RolloutSpec
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from tests.api.conftest import edge_function
from tests.fleetfixture import TOKEN, Fleet
from tests.gitrepo import GitRemote
from tests.store.pgserver import PgServer
from tests.test_sync_story import push_function


def test_a_rollback_through_the_api_holds_the_function_like_the_cli(
    manager: DeploymentManager, cluster: EdgeCluster
) -> None:
    assert manager.deploy(edge_function("1.0.0"), "rolling").success
    v2 = manager.deploy(edge_function("2.0.0"), "rolling")
    assert v2.success and v2.rollout_id is not None
    back = manager.rollback("fn")
    assert back.success, back.errors
    assert back.version == "1.0.0"
    controls = manager.store.controls("fn")
    assert controls.held
    assert controls.held_reason.startswith("rolled back to 1.0.0 by an operator; held until")
    # What Git asked for when the hold was set (2.0.0 and its module) stays held back.
    row = manager.store.rollout(v2.rollout_id)
    assert row is not None
    sha = RolloutSpec.from_json(row.context).sha256
    assert hold_reason(manager.store, "fn", "2.0.0", sha, 0.0) == controls.held_reason
    assert [p.function.version for p in manager.list_deployments()] == ["1.0.0", "2.0.0", "1.0.0"]


def test_the_api_shares_a_postgresql_state_with_the_daemon(
    tmp_path: Path, pg_server: PgServer, remote: GitRemote, fleet: Fleet, cluster: EdgeCluster
) -> None:
    db = pg_server.create_database()
    secret = tmp_path / "pg-password"
    secret.write_text(pg_server.password + "\n")
    url = pg_server.url(db)
    remote.write("nodes.yaml", fleet.manifests())
    sha = push_function(remote, "hello", "1.0.0")
    sync = GitOpsSynchronizer(
        str(remote.bare),
        state_dir=tmp_path / "sync",
        token=TOKEN,
        state_url=url,
        state_password_file=secret,
    )
    try:
        assert sync.sync().success
    finally:
        sync.close()
    manager = DeploymentManager(
        cluster,
        tmp_path / "manager",
        clock=FakeClock(),
        state_url=url,
        state_password_file=secret,
    )
    try:
        assert manager.deploy(edge_function("1.0.0"), "rolling").success
    finally:
        manager.close()
    store = PostgresStore(pg_target(pg_server.url(db, with_password=True)))
    try:
        assert {(r.function, r.state) for r in store.rollouts()} == {
            ("hello", "COMPLETED"),
            ("fn", "COMPLETED"),
        }
        assert store.get("last_applied_commit") == sha
    finally:
        store.close()
    assert json.loads(remote.note(sha))["status"] == "success"
    for local in ("sync", "manager"):  # no SQLite file beside the shared database
        assert not (tmp_path / local / "gitopsd.db").exists()
