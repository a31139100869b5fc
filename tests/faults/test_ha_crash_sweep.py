"""HA crash sweep: two `gitopsd run` on one real PostgreSQL (lease PT1S); the leader gets
SIGKILL or SIGSTOP at random points of rollouts of every strategy.

A SIGKILLed leader is started again at once (a new process: the next standby). A SIGSTOPped
one stays frozen until the other has taken the lease, and a random while longer, then gets
SIGCONT: it must notice its term is gone and touch nothing. Once each rollout is final the
sweep checks what the single-process sweep checks (tests/faults/sweep.py: one rollout per
version, finished or rolled back, its journal exactly the strategy's plan, no finished step
redone, no step begun twice, waits resumed with their journaled deadline, nothing dangling,
every node serving only the version Git names or the rollback target), and, from an audit
trigger on the database, that no term was ever written by two holders and no write of a
deposed term landed after its successor's (tests/faults/ha_sweep.py).

Part of `make faults` only (the Makefile leaves it out of `make test`): at full counts it
runs for many minutes per strategy.
"""

from __future__ import annotations

import json
import random
import signal
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from tests.daemon.daemonsupport import DaemonProcess
from tests.faults.conftest import Figures, scale
from tests.faults.ha_sweep import SharedState, writer_violations
from tests.faults.sweep import Kill, SweepStats, check_fleet, check_journal
from tests.faults.test_crash_sweep import STRATEGIES, Traffic
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.ha.cluster import Cluster, leads
from tests.rollout.livesupport import push
from tests.store.pgserver import PgServer

HA_KILLS = scale(3, 30)  # leader kills and freezes per strategy
FINAL = ("COMPLETED", "ROLLED_BACK", "FAILED")


class Pair:
    """The two daemons; whichever leads is `leader()`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.daemons = [cluster.daemon(n, interval="PT1S") for n in ("a", "b")]
        self.pids: set[int] = set()

    def start(self, d: DaemonProcess) -> None:
        d.start()
        assert d.proc is not None
        self.pids.add(d.proc.pid)

    def leader(self, timeout: float = 30.0) -> DaemonProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for d in self.daemons:
                if d.proc is not None and d.proc.poll() is None and leads(d):
                    return d
            time.sleep(0.01)
        raise AssertionError(f"no daemon leads after {timeout} s")

    def other(self, d: DaemonProcess) -> DaemonProcess:
        return self.daemons[1 - self.daemons.index(d)]


@pytest.fixture
def ha(tmp_path: Path, pg_server: PgServer, remote: GitRemote, fleet: Fleet) -> Iterator[Cluster]:
    remote.write("nodes.yaml", fleet.manifests())
    c = Cluster(tmp_path, pg_server, remote, fleet, function="fn")
    PostgresStore(pg_target(c.admin_url)).close()  # the schema, for the audit's triggers
    yield c
    c.close()


def strike(pair: Pair, rng: random.Random, figures: Figures) -> Kill:
    """SIGKILL or SIGSTOP the leader now; returns once the other daemon leads (and, for a
    freeze, the frozen one is thawed)."""
    leader = pair.leader()
    standby = pair.other(leader)
    frozen = rng.random() < 0.5
    assert leader.proc is not None
    leader.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGKILL)
    at = time.time()
    if not frozen:
        leader.proc.wait(10)
        pair.start(leader)  # the next standby
    deadline = time.monotonic() + 30
    while not leads(standby) and not (not frozen and leads(leader)):
        if time.monotonic() > deadline:
            raise AssertionError(f"nobody took over after {'SIGSTOP' if frozen else 'SIGKILL'}")
        time.sleep(0.01)
    relaunch = time.time()  # a new leader acts from here
    figures.peak("max_takeover_s", round(relaunch - at, 3))
    if frozen:
        time.sleep(rng.uniform(0.0, 1.5))  # the new leader moves on meanwhile
        leader.proc.send_signal(signal.SIGCONT)
        # Until it has looked at its lease timer again its /metrics may still say it leads:
        # the next strike must find the real leader.
        deadline = time.monotonic() + 30
        while not leader.healthy() or leads(leader):
            if time.monotonic() > deadline:
                raise AssertionError("the thawed leader still says it leads after 30 s")
            time.sleep(0.01)
        figures.add("freezes")
    else:
        figures.add("sigkills")
    return Kill(None, at, relaunch, [], False, False)


@pytest.mark.timeout(scale(600, 3600))
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_leader_killed_or_frozen_mid_rollout(
    strategy: str, ha: Cluster, fleet: Fleet, remote: GitRemote, figures: Figures
) -> None:
    rng = random.Random(zlib.crc32(b"ha" + strategy.encode()) + (1 if HA_KILLS > 3 else 0))
    stats = SweepStats()
    state = SharedState(ha.pg.admin_conninfo(ha.db))
    state.install_audit()
    pair = Pair(ha)
    function, number, terms = "fn", 0, 0
    try:
        for d in pair.daemons:
            pair.start(d)
        with Traffic(fleet, function):
            while stats.kills < HA_KILLS and number < 10 * HA_KILLS:
                number += 1
                version = f"{number}.0.0"
                health = "BAD" if number % 3 == 0 else "OK"
                push(remote, function, version, STRATEGIES[strategy], health)
                kills: list[Kill] = []
                budget = rng.randint(1, 3)
                while True:
                    done, _ = state.progress(function, version)
                    target = done + rng.randint(1, 6) if len(kills) < budget else None
                    deadline = time.monotonic() + 90
                    while time.monotonic() < deadline:
                        done, last = state.progress(function, version)
                        rows = state.rollouts_of(function, version)
                        if rows and rows[-1]["state"] in FINAL:
                            break
                        if target is not None and done >= target:
                            if (
                                last
                                and last["outcome"] is None
                                and '"kind": "wait"' in last["step"]
                            ):
                                time.sleep(rng.uniform(0, json.loads(last["step"])["seconds"]))
                            else:
                                time.sleep(rng.uniform(0, 0.02))
                            rows = state.rollouts_of(function, version)
                            journal = state.journal_of(rows[-1]["id"]) if rows else []
                            kill = strike(pair, rng, figures)
                            kill.rollout = rows[-1]["id"] if rows else None
                            kill.journal = journal
                            kill.mid_step = bool(journal and journal[-1]["outcome"] is None)
                            kill.in_wait = kill.mid_step and '"kind": "wait"' in journal[-1]["step"]
                            kills.append(kill)
                            stats.kills += 1
                            stats.kills_mid_step += kill.mid_step
                            stats.kills_in_wait += kill.in_wait
                            stats.processes += 1
                            break
                        time.sleep(0.005)
                    else:
                        raise AssertionError(
                            f"{version}: rollout not final after 90 s\n"
                            + "\n".join(d.logs()[-3000:] for d in pair.daemons)
                        )
                    rows = state.rollouts_of(function, version)
                    if rows and rows[-1]["state"] in FINAL:
                        break
                time.sleep(0.5)  # a pass that would wrongly retry a rolled-back version
                judge(state, fleet, function, version, kills, stats)
                if stats.violations:
                    break
        time.sleep(2)  # thawed processes that were to write anything late have done so
        bad, terms = writer_violations(state.audit(), 1, pair.pids)
        stats.violations += bad
        figures["terms_written"] = terms
    finally:
        state.close()
    figures.update(strategy=strategy, **stats.as_figures())
    figures["violation_examples"] = stats.violations[:5]
    assert stats.violations == []
    assert stats.kills >= HA_KILLS
    assert terms >= 2  # the leadership did change hands while writing


def judge(
    state: SharedState,
    fleet: Fleet,
    function: str,
    version: str,
    kills: list[Kill],
    stats: SweepStats,
) -> None:
    rows = state.rollouts_of(function, version)
    if len(rows) != 1:
        stats.violations.append(f"{version}: the daemons ran {len(rows)} rollouts")
    for rollout in rows:
        stats.rollouts += 1
        stats.completed += rollout["state"] == "COMPLETED"
        stats.rolled_back += rollout["state"] == "ROLLED_BACK"
        if rollout["state"] not in ("COMPLETED", "ROLLED_BACK"):
            stats.violations.append(f"{rollout['id']}: ended {rollout['state']}")
        mine = [k for k in kills if k.rollout == rollout["id"]]
        check_journal(rollout, state.journal_of(rollout["id"]), mine, stats)
    if rows:
        check_fleet(fleet, rows[-1], stats)
    dangling, active = state.unfinished()
    if dangling or active:
        stats.violations.append(
            f"{version}: {dangling} dangling journal rows, {active} unfinished rollouts"
        )
