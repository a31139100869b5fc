"""Crash sweep: SIGKILL `gitopsd sync --once` at random points of rollouts of every strategy.

After each kill a new process resumes the rollout; once it is final the sweep checks that it
finished or rolled back, that its journal is exactly the strategy's plan for the outcomes it
recorded (no step skipped), that no finished step was redone and no step begun twice, that
waits kept their journaled deadline (resumed with the time left), that no journal row is
left dangling, and that every node serves only the version Git names or the rollback target.
Every third version fails its health check, so rollbacks are killed too.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.daemonsupport import DaemonProcess
from tests.faults.conftest import Figures, scale
from tests.faults.procs import Zygote
from tests.faults.sweep import (
    Kill,
    Sweeper,
    SweepStats,
    check_fleet,
    check_journal,
    journal_of,
    progress,
    rollouts_of,
)
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

STRATEGIES = {
    "rolling": "{type: rolling, batchSize: 1, batchDelay: PT0.2S}",
    # Blue unloaded at once: dozens of versions in a row would otherwise keep a blue each
    # for its retention period (retirement itself is tested in test_found_bugs.py).
    "blue-green": "{type: blue-green, switchDelay: PT0.2S, blueRetentionPeriod: PT0S}",
    "canary": "{type: canary, stages: [30, 60, 100], evaluationPeriod: PT1S, autoPromote: true}",
    "regional": "{type: regional, interRegionDelay: PT0.2S}",
    "ab-test": (
        "{type: ab-test, variantBPercentage: 30, experimentDuration: PT0.3S, minimumSampleSize: 3}"
    ),
    "feature-flag": "{type: feature-flag, initialRollout: 50}",
}
KILLS = scale(10, 200)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


class Traffic:
    """A trickle of user requests, so that analyses and A/B comparisons have data."""

    def __init__(self, fleet: Fleet, function: str) -> None:
        self.fleet, self.function = fleet, function
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        user = 0
        while not self.stop.wait(0.02):
            for node in list(self.fleet.nodes):
                user += 1
                # an agent busy or between versions: users retry
                with contextlib.suppress(Exception):
                    self.fleet.invoke(node, self.function, b"", **{"X-User-Id": f"u{user % 50}"})

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.mark.timeout(scale(120, 3600))
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_sigkill_sweep(
    strategy: str,
    zygote: Zygote,
    remote: GitRemote,
    fleet: Fleet,
    tmp_path: Path,
    figures: Figures,
) -> None:
    rng = random.Random(zlib.crc32(strategy.encode()) + (1 if KILLS > 10 else 0))
    stats = SweepStats()
    sweeper = Sweeper(zygote, fleet, remote.bare, tmp_path / "state", tmp_path / "logs", rng, stats)
    remote.write("nodes.yaml", fleet.manifests())
    function = "fn"
    number = 0
    with Traffic(fleet, function):
        while stats.kills < KILLS and number < 10 * KILLS:
            number += 1
            version = f"{number}.0.0"
            health = "BAD" if number % 3 == 0 else "OK"
            push(remote, function, version, STRATEGIES[strategy], health=health)
            sweeper.rollout(function, version, rng.randint(1, 5))
            if stats.violations:
                break
    figures.update(strategy=strategy, **stats.as_figures())
    figures["violation_examples"] = stats.violations[:5]
    assert stats.violations == []
    assert stats.kills >= KILLS
    assert stats.rolled_back > 0 and (stats.completed > 0 or strategy == "ab-test")


DAEMON_STRATEGIES = list(STRATEGIES) if scale(0, 1) else ["canary"]
DAEMON_KILLS = scale(2, 20)


@pytest.mark.timeout(scale(120, 1800))
@pytest.mark.parametrize("strategy", DAEMON_STRATEGIES)
def test_sigkill_the_daemon_mid_rollout(
    strategy: str, remote: GitRemote, fleet: Fleet, tmp_path: Path, figures: Figures
) -> None:
    """The same invariants with the real daemon (`gitopsd run`, fresh processes), which
    resumes orphaned rollouts on start and must not retry a version that rolled back."""
    rng = random.Random(zlib.crc32(b"daemon" + strategy.encode()))
    stats = SweepStats()
    remote.write("nodes.yaml", fleet.manifests())
    daemon = DaemonProcess(tmp_path / "daemon", remote, fleet, interval="PT1S")
    db = daemon.state / "gitopsd.db"
    function, number = "fn", 0
    try:
        daemon.start()
        while stats.kills < DAEMON_KILLS and number < 10 * DAEMON_KILLS:
            number += 1
            version = f"{number}.0.0"
            push(
                remote, function, version, STRATEGIES[strategy], "BAD" if number % 3 == 0 else "OK"
            )
            kills: list[Kill] = []
            budget = rng.randint(1, 3)
            while True:
                done, _ = progress(db, function, version)
                target = done + rng.randint(1, 6) if len(kills) < budget else None
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    done, last = progress(db, function, version)
                    rows = rollouts_of(db, function, version)
                    if rows and rows[-1]["state"] in ("COMPLETED", "ROLLED_BACK", "FAILED"):
                        break
                    if target is not None and done >= target:
                        if last and last["outcome"] is None and '"kind": "wait"' in last["step"]:
                            time.sleep(rng.uniform(0, json.loads(last["step"])["seconds"]))
                        daemon.close()  # SIGKILL
                        journal = journal_of(db, rows[-1]["id"]) if rows else []
                        mid = bool(journal and journal[-1]["outcome"] is None)
                        wait = mid and '"kind": "wait"' in journal[-1]["step"]
                        kill = Kill(
                            rows[-1]["id"] if rows else None, time.time(), None, journal, mid, wait
                        )
                        kills.append(kill)
                        stats.kills += 1
                        stats.kills_mid_step += mid
                        stats.kills_in_wait += wait
                        daemon.start()
                        kill.relaunch = time.time()  # serving: imports and config are done
                        stats.processes += 1
                        break
                    time.sleep(0.003)
                else:
                    raise AssertionError(
                        f"{version}: rollout not final after 60 s\n{daemon.logs()}"
                    )
                rows = rollouts_of(db, function, version)
                if rows and rows[-1]["state"] in ("COMPLETED", "ROLLED_BACK", "FAILED"):
                    break
            time.sleep(0.3)  # a pass that would wrongly retry a rolled-back version
            rows = rollouts_of(db, function, version)
            if len(rows) != 1:
                stats.violations.append(f"{version}: the daemon ran {len(rows)} rollouts")
            for rollout in rows:
                stats.rollouts += 1
                stats.completed += rollout["state"] == "COMPLETED"
                stats.rolled_back += rollout["state"] == "ROLLED_BACK"
                if rollout["state"] not in ("COMPLETED", "ROLLED_BACK"):
                    stats.violations.append(f"{rollout['id']}: ended {rollout['state']}")
                mine = [k for k in kills if k.rollout == rollout["id"]]
                check_journal(rollout, journal_of(db, rollout["id"]), mine, stats)
            check_fleet(fleet, rows[-1], stats)
            if stats.violations:
                break
    finally:
        daemon.close()
    figures.update(strategy=strategy, daemon=True, **stats.as_figures())
    figures["violation_examples"] = stats.violations[:5]
    assert stats.violations == []
    assert stats.kills >= DAEMON_KILLS
