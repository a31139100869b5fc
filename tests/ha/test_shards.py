"""`[ha] shards = 3`: three real `gitopsd run` processes on one real PostgreSQL each lead
about a third of the functions, each function rolled out once by the leader of its shard,
the commit's note ends with every function's entry; a SIGKILLed daemon's shards move to
the others, which roll out the next push of their functions. Also: several writers of one
commit's note in one repository (shard leaders on one machine) lose no function's entry."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import jsonschema
import pygit2
import pytest

from gitopsd.cli.json_documents import output_json_schemas
from gitopsd.clock import FakeClock
from gitopsd.daemon.service import Daemon
from gitopsd.errors import ConfigError
from gitopsd.fleet.client import AgentClient
from gitopsd.ha.lease import SHARDS_KEY, PgLeases
from gitopsd.manifest.desired import DesiredState
from gitopsd.notify.dispatcher import NotificationDispatcher
from gitopsd.reconcile import Pass, Reconciler
from gitopsd.reconcile.pipeline import (
    diff_desired_live,
    load_desired,
    notice_drift,
    read_live,
    run_steps,
)
from gitopsd.report.notes import read_note
from gitopsd.rollout.engine import Engine
from gitopsd.source.ancestry import ACCEPTED_HEAD_KEY, REFUSED_HEAD_KEY
from gitopsd.source.git import SourceSpec
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.shards import shard_of
from gitopsd.store.sqlite import SqliteStore
from tests.clirunner import Gitopsd
from tests.daemon.daemonsupport import DaemonProcess, wait_for
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.ha.cluster import Cluster, serves
from tests.manifest.support import function
from tests.reconcile.test_pipeline import Ports, desired
from tests.store.contract import rollout as contract_rollout
from tests.store.pgserver import PgServer
from tests.wasm_modules import handler_wat

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
import pygit2
from gitopsd.report.notes import CommitOutcome, FunctionOutcome, write_note
repo_path, commit, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(count):
    repo = pygit2.Repository(repo_path)  # as the publisher opens it for each note
    name = f"{prefix}-{i}"
    fn = FunctionOutcome(status="success", version="1.0.0", state="COMPLETED")
    write_note(repo, CommitOutcome(commit, "success", f"{name} done", {name: fn}))
"""


def test_writers_of_one_commits_note_in_one_repository_keep_every_entry(
    remote: GitRemote,
) -> None:
    remote.write("a.txt", "a")
    commit = remote.commit_push("one commit")
    writers, each = 4, 12
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(remote.bare), commit, f"fn{w}", str(each)],
            cwd=ROOT,
        )
        for w in range(writers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * writers
    note = read_note(pygit2.Repository(str(remote.bare)), commit)
    assert note is not None
    expected = {f"fn{w}-{i}" for w in range(writers) for i in range(each)}
    assert set(note["functions"]) == expected, json.dumps(sorted(note["functions"]))
    assert note["status"] == "success"


# three daemons, three shards ----------------------------------------------------------------

SHARDS = 3
# Longer than the other HA tests' PT1S: three daemons, their agents and PostgreSQL share the
# test's cores with the other xdist worker, and a lease run out under that load moves a
# shard mid-rollout (correctly, under a new term), which is not what this test is about.
LEASE = "PT2S"
# Two functions in each of the three shards (shard_of(name, 3), checked below).
FUNCTIONS = ("auth", "docs", "api", "cart", "feed", "kv")
BLUE_GREEN = "{type: blue-green}"

# Every row written to the rollout tables, with the fence its transaction claimed.
AUDIT_SQL = """
CREATE TABLE shard_audit (
    n BIGSERIAL PRIMARY KEY, tbl TEXT NOT NULL, fn TEXT NOT NULL, rollout TEXT NOT NULL,
    fence TEXT
);
CREATE FUNCTION shard_audit() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    fn TEXT;
BEGIN
    IF TG_TABLE_NAME = 'journal' THEN
        SELECT r.function INTO fn FROM rollouts r WHERE r.id = NEW.rollout_id;
        INSERT INTO shard_audit (tbl, fn, rollout, fence) VALUES (TG_TABLE_NAME, fn,
            NEW.rollout_id, nullif(current_setting('gitopsd.fence', true), ''));
    ELSE
        INSERT INTO shard_audit (tbl, fn, rollout, fence) VALUES (TG_TABLE_NAME, NEW.function,
            NEW.id, nullif(current_setting('gitopsd.fence', true), ''));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER journal_shard_audit AFTER INSERT OR UPDATE ON journal
    FOR EACH ROW EXECUTE FUNCTION shard_audit();
CREATE TRIGGER rollouts_shard_audit AFTER INSERT OR UPDATE ON rollouts
    FOR EACH ROW EXECUTE FUNCTION shard_audit();
"""


def write_function(remote: GitRemote, name: str, version: str) -> None:
    remote.write(
        f"functions/{name}.yaml",
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\n"
        f'metadata: {{name: {name}}}\nspec:\n  version: "{version}"\n'
        f"  module: modules/{name}.wat\n  strategy: {BLUE_GREEN}\n",
    )
    remote.write(f"functions/modules/{name}.wat", handler_wat(f"{name} {version}"))


def pid(holder: str) -> int:
    return int(holder.split(":")[1])


def led_shards(d: DaemonProcess) -> set[int]:
    """The shards `d` leads, from its /metrics (empty when it does not answer)."""
    try:
        text = d.metrics()
    except OSError:
        return set()
    return {int(s) for s in re.findall(r'^gitopsd_shard_leader\{shard="(\d+)"\} 1', text, re.M)}


def note_of(remote: GitRemote, sha: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(remote.note(sha)))
    except (subprocess.CalledProcessError, RuntimeError, ValueError):
        return None


def settled(cluster: Cluster, version: str, functions: Iterable[str]) -> bool:
    """Every function serves `version` everywhere and its rollout of it completed."""
    for name in functions:
        row = cluster.rollout(version, name)
        if row is None or row.state != "COMPLETED" or not serves(cluster.fleet, version, name):
            return False
    return True


def writers(store: PostgresStore, rollout_id: str) -> set[tuple[str, int]]:
    """(holder, term of the rollout's shard) of every write of the rollout and its journal."""
    with store.bulk() as conn:
        rows = conn.execute(
            "SELECT fn, fence FROM shard_audit WHERE rollout = %s", (rollout_id,)
        ).fetchall()
    out = set()
    for row in rows:
        assert row["fence"] is not None, "a daemon wrote without a fence"
        fence = json.loads(row["fence"])
        out.add((str(fence["holder"]), int(fence["terms"][str(shard_of(row["fn"], SHARDS))])))
    return out


def test_three_daemons_each_lead_a_shard_and_a_killed_ones_shards_move(
    tmp_path: Path, pg_server: PgServer, remote: GitRemote, fleet: Fleet
) -> None:
    assert sorted(shard_of(f, SHARDS) for f in FUNCTIONS) == [0, 0, 1, 1, 2, 2]
    remote.write("nodes.yaml", fleet.manifests())
    for name in FUNCTIONS:
        write_function(remote, name, "1.0.0")
    remote.commit_push("six functions 1.0.0")
    cluster = Cluster(tmp_path, pg_server, remote, fleet)
    store = cluster.store()  # migrates the schema: the audit goes on its tables
    try:
        with store.bulk() as conn:
            conn.execute(AUDIT_SQL)
        daemons = {}
        for name in ("a", "b", "c"):
            d = cluster.daemon(name, lease=LEASE)
            text = d.config.read_text()
            d.config.write_text(text.replace("[ha]\n", f"[ha]\nshards = {SHARDS}\n"))
            d.start()
            daemons[name] = d

        def spread() -> bool:
            led = [led_shards(d) for d in daemons.values()]
            return all(led) and sorted(s for shards in led for s in shards) == [0, 1, 2]

        wait_for(spread, 30, "each daemon to lead one shard")
        wait_for(lambda: settled(cluster, "1.0.0", FUNCTIONS), 60, "the first versions")

        # One commit changes every function: each is rolled out once, by its shard's leader.
        leader_of = {s: d for d in daemons.values() for s in led_shards(d)}
        assert set(leader_of) == {0, 1, 2}
        for name in FUNCTIONS:
            write_function(remote, name, "2.0.0")
        sha = remote.commit_push("six functions 2.0.0")
        wait_for(lambda: settled(cluster, "2.0.0", FUNCTIONS), 60, "every 2.0.0 rollout")
        terms: dict[int, int] = {}
        for name in FUNCTIONS:
            rows = [r for r in store.rollouts(name) if r.version == "2.0.0"]
            assert len(rows) == 1, f"{name} rolled out {len(rows)} times"
            (holder, term), *others = writers(store, rows[0].id)
            assert not others, f"{name}'s rollout written by more than one holder/term"
            shard = shard_of(name, SHARDS)
            leader = leader_of[shard]
            assert leader.proc is not None and pid(holder) == leader.proc.pid
            assert terms.setdefault(shard, term) == term
        wait_for(
            lambda: (
                (n := note_of(remote, sha)) is not None
                and set(n["functions"]) == set(FUNCTIONS)
                and all(f["status"] == "success" for f in n["functions"].values())
            ),
            30,
            "every leader's entry in the commit's note",
        )
        note = note_of(remote, sha)
        assert note is not None and note["status"] == "success"

        # Who leads which shard, from any machine with the config.
        status = Gitopsd(daemons["a"].state, config=daemons["a"].config)(
            "status", "--output", "json"
        )
        assert status.code == 0, status.err
        document = status.json()
        jsonschema.validate(document, output_json_schemas()["status"])
        shards = document["shards"]
        assert [s["shard"] for s in shards] == [0, 1, 2]
        for s in shards:
            leader = leader_of[s["shard"]]
            assert leader.proc is not None and pid(s["holder"]) == leader.proc.pid
            assert s["term"] == terms[s["shard"]]
        assert document["leader"] == shards[0]

        # SIGKILL the leader of shard 2: its shard moves to one of the others, whose next
        # rollout of a shard-2 function is its own, under a newer term.
        victim = leader_of[2]
        victim.signal(signal.SIGKILL)
        victim.wait(timeout=30)
        survivors = [d for d in daemons.values() if d is not victim]
        took = wait_for(
            lambda: set().union(*(led_shards(d) for d in survivors)) == {0, 1, 2},
            30,
            "shard 2 to move to a surviving daemon",
        )
        print(f"shard 2 led again {took:.2f} s after its leader's SIGKILL (lease {LEASE})")
        heir = next(d for d in survivors if 2 in led_shards(d))
        assert heir.proc is not None
        write_function(remote, "feed", "3.0.0")
        sha3 = remote.commit_push("feed 3.0.0")
        wait_for(lambda: settled(cluster, "3.0.0", ["feed"]), 60, "feed 3.0.0 by the heir")
        rows = [r for r in store.rollouts("feed") if r.version == "3.0.0"]
        assert len(rows) == 1
        (holder, term), *others = writers(store, rows[0].id)
        assert not others and pid(holder) == heir.proc.pid and term > terms[2]
        wait_for(
            lambda: (n := note_of(remote, sha3)) is not None and n["status"] == "success",
            30,
            "feed 3.0.0's note",
        )
        for name in FUNCTIONS:
            assert serves(fleet, "3.0.0" if name == "feed" else "2.0.0", name)

        # A controller configured with another shard count is refused at its start.
        odd = cluster.daemon("odd")  # shards = 1
        ran = subprocess.run(
            [sys.executable, "-m", "gitopsd.cli.main", "run", "--config", str(odd.config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 2, ran.stderr
        assert "shards = 1 here" in ran.stderr and "use 3" in ran.stderr
    finally:
        store.close()
        cluster.close()


# a head read just before another leader accepted a newer one -----------------------------

NODE = (
    "apiVersion: gitopsd/v1\nkind: EdgeNode\nmetadata: {name: edge-a}\n"
    'spec: {address: "http://127.0.0.1:9", region: us-east}\n'
)


def test_a_head_read_before_another_leader_accepted_a_newer_one_is_not_refused(
    tmp_path: Path, remote: GitRemote
) -> None:
    """Shard leaders read the head each on its own: one may load commit 1 while another
    loads and accepts commit 2 (its child). The first one's check then finds its commit
    behind the accepted head; that is a stale read, not a rewritten branch: no refusal (no
    failure note on a good commit), and a pass from the newer head at once."""
    remote.write("nodes.yaml", NODE)
    write_function(remote, "auth", "1.0.0")
    first = remote.commit_push("auth 1.0.0")
    (tmp_path / "token").write_text("s" * 32 + "\n")
    config = tmp_path / "gitopsd.toml"
    config.write_text(
        f'[source]\nurl = "{remote.bare}"\nbranch = "main"\nwatch = false\n'
        f'[fleet]\ntoken_file = "{tmp_path / "token"}"\n[state]\ndir = "{tmp_path / "state"}"\n'
    )
    daemon = Daemon(config)
    other = Reconciler(daemon.store, tmp_path / "other", daemon.clock, None)
    real_check = daemon.reconciler.check_fast_forward
    newer: list[str] = []

    def another_leader_accepts_a_newer_head_first(source: SourceSpec, commit: str) -> None:
        write_function(remote, "auth", "2.0.0")
        newer.append(remote.commit_push("auth 2.0.0"))
        other.check_fast_forward(source, newer[0])
        real_check(source, commit)

    daemon.reconciler.check_fast_forward = another_leader_accepts_a_newer_head_first  # type: ignore[method-assign]

    async def load() -> DesiredState | None:
        daemon._head = first
        return await daemon._load_head(cast(Pass, None))

    try:
        assert asyncio.run(load()) is None  # nothing from the stale read
        assert daemon.store.get(ACCEPTED_HEAD_KEY) == newer[0]
        assert not daemon.store.get(REFUSED_HEAD_KEY)
        assert daemon.pass_state.bad_commit is None and not daemon.pass_state.refused
        assert "head moved" in daemon.reasons  # the next pass comes at once
    finally:
        daemon.store.close()


# one shard count per database ------------------------------------------------------------


def test_controllers_with_another_shard_count_than_the_running_ones_are_refused(
    pg_server: PgServer,
) -> None:
    """shards = 1 makes shard 0 every function: beside controllers with shards = 3 a function
    would be led twice. The count is agreed in the database; it changes only when no other
    controller is running."""
    url = pg_server.url(pg_server.create_database(), with_password=True)
    store = PostgresStore(pg_target(url))  # the schema
    a = PgLeases(pg_target(url), "h:1:a", "h", lease=5.0)
    b = PgLeases(pg_target(url), "h:2:b", "h", lease=5.0)
    try:
        a.agree_shards(3)  # the first one sets the count
        b.agree_shards(3)  # the same count: joins
        c = PgLeases(pg_target(url), "h:3:c", "h", lease=5.0)
        try:
            with pytest.raises(ConfigError, match=r"shards = 1 here, .* use 3"):
                c.agree_shards(1)
            with pytest.raises(ConfigError, match=r"shards = 6 here, .* use 3"):
                c.agree_shards(6)
            assert c.heartbeat() == 3  # c is counted only now: refused, it had not joined
        finally:
            c.leave()
            c.close()
        # Everyone stopped: the next controller sets its own count.
        a.leave()
        b.leave()
        a.agree_shards(1)
        assert store.get(SHARDS_KEY) is None
        with pytest.raises(ConfigError, match=r"shards = 2 here, .* use 1"):
            b.agree_shards(2)
    finally:
        a.close()
        b.close()
        store.close()


# drift is told by the leader of the function's shard only ---------------------------------


class DriftLog(NotificationDispatcher):
    """A dispatcher with no receivers that remembers which functions it was told drifted."""

    def __init__(self) -> None:
        super().__init__((), None)
        self.drifted: list[str] = []

    def drift(self, function: str, version: str, detail: str, commit: str) -> None:
        self.drifted.append(function)


def test_drift_is_told_only_for_the_functions_a_leader_acts_for(tmp_path: Path) -> None:
    """Every shard leader diffs the whole desired state; each tells the notification sinks
    of drift of its own functions only (three leaders told every drift three times)."""
    state = desired(function("api"), function("db"))
    store = SqliteStore(tmp_path / "state")
    for i, name in enumerate(("api", "db")):
        fn = state.functions[name]
        row = replace(
            contract_rollout(f"r{i}", name, state="COMPLETED", version=fn.spec.version),
            context={"sha256": fn.module.sha256},
        )
        store.create_rollout(row)
    drift = DriftLog()

    async def go() -> None:
        rec = Reconciler(store, tmp_path / "state", FakeClock(), None)
        client = AgentClient({}, None)
        p = Pass(
            rec=rec,
            source=None,
            client=client,
            engine=Engine(store, client, rec.clock),
            ports=Ports(state).ports(),  # the fleet runs nothing: both drifted
            notes=drift,
            continuous=True,
            acts_for=lambda name: name == "db",
        )
        await run_steps(p, (load_desired, read_live, diff_desired_live, notice_drift))
        assert p.changes is not None and len(p.changes.changes) == 2

    try:
        asyncio.run(go())
    finally:
        store.close()
    assert drift.drifted == ["db"]


# [ha] and [state] are set up once per process -------------------------------------------


def test_a_reload_that_changes_state_or_ha_keeps_the_running_config(
    tmp_path: Path, remote: GitRemote
) -> None:
    """Leases, shards and the store are opened at the start: a SIGHUP reload that changes
    [state] (or [ha]) would have been taken in and not acted on. It is refused; a reload
    that changes other sections still applies."""
    remote.write("nodes.yaml", NODE)
    remote.commit_push("nodes")
    (tmp_path / "token").write_text("s" * 32 + "\n")
    config = tmp_path / "gitopsd.toml"

    def write(state_dir: str, interval: str) -> None:
        config.write_text(
            f'[source]\nurl = "{remote.bare}"\nbranch = "main"\nwatch = false\n'
            f'interval = "{interval}"\n[fleet]\ntoken_file = "{tmp_path / "token"}"\n'
            f'[state]\ndir = "{tmp_path / state_dir}"\n'
        )

    write("state", "PT1M")
    daemon = Daemon(config)
    try:
        write("elsewhere", "PT2M")
        daemon.reload()
        assert daemon.config.state.dir == tmp_path / "state"
        assert daemon.config.source.interval == 60.0  # nothing of that file was taken
        write("state", "PT2M")
        daemon.reload()
        assert daemon.config.source.interval == 120.0
    finally:
        daemon.store.close()
