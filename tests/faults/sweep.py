"""Crash-sweep machinery: kill `gitopsd sync --once` at random journal points, check invariants.

A rollout's progress is the number of journal events (a step begun, a step finished) of the
rollouts of one (function, version). A kill lands once the progress reaches a random target,
after a random delay: a few milliseconds usually, anywhere inside a wait when a wait is under
way. Every process after a kill resumes the rollout; the checks run once it is final.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitopsd.rollout.engine import build_strategy
from gitopsd.rollout.spec import RolloutSpec
from gitopsd.rollout.steps import Finish, outcome_from_json, step_to_json
from tests.faults.procs import Zygote, sync_args
from tests.fleetfixture import Fleet

Row = dict[str, Any]


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def rollouts_of(db: Path, function: str, version: str) -> list[Row]:
    if not db.exists():
        return []
    with _connect(db) as conn:
        if not _has_schema(conn):
            return []  # killed after the file appeared, before its schema was committed
        rows = conn.execute(
            "SELECT * FROM rollouts WHERE function = ? AND version = ? ORDER BY created_at",
            (function, version),
        ).fetchall()
    return [dict(r) for r in rows]


def _has_schema(conn: sqlite3.Connection) -> bool:
    try:
        found = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'rollouts'"
        ).fetchone()
    except sqlite3.OperationalError as exc:
        # A read-only connection cannot recover a WAL a killed writer left half set up
        # ("attempt to write a readonly database"): the daemon's next start recovers it, and
        # until then nothing was committed that this reader could miss.
        if "readonly" in str(exc):
            return False
        raise
    return bool(found[0])


def journal_of(db: Path, rollout_id: str) -> list[Row]:
    with _connect(db) as conn:
        rows = conn.execute(
            "SELECT * FROM journal WHERE rollout_id = ? ORDER BY seq", (rollout_id,)
        ).fetchall()
    return [dict(r) for r in rows]


def progress(db: Path, function: str, version: str) -> tuple[int, Row | None]:
    """(journal events so far, newest journal row) of the version's rollouts."""
    try:
        with _connect(db) as conn:
            row = conn.execute(
                "SELECT COUNT(*) + COUNT(j.outcome) FROM journal j JOIN rollouts r"
                " ON j.rollout_id = r.id WHERE r.function = ? AND r.version = ?",
                (function, version),
            ).fetchone()
            last = conn.execute(
                "SELECT j.* FROM journal j JOIN rollouts r ON j.rollout_id = r.id"
                " WHERE r.function = ? AND r.version = ? ORDER BY r.created_at DESC, j.seq DESC"
                " LIMIT 1",
                (function, version),
            ).fetchone()
    except sqlite3.Error:  # not created yet, or mid-recovery of a killed writer
        return 0, None
    return int(row[0]), dict(last) if last else None


@dataclass
class Kill:
    rollout: str | None  # id of the rollout under way (None: killed before it was created)
    at: float  # time.time() of the kill
    relaunch: float | None  # launch time of the process that resumed
    journal: list[Row]  # the rollout's journal at the kill
    mid_step: bool
    in_wait: bool


@dataclass
class SweepStats:
    kills: int = 0
    kills_mid_step: int = 0
    kills_in_wait: int = 0
    kills_before_first_step: int = 0
    processes: int = 0
    rollouts: int = 0
    completed: int = 0
    rolled_back: int = 0
    steps_rerun: int = 0
    rerolled_after_resume: int = 0  # see test_found_bugs: sync retries a resumed rollback
    waits_resumed: int = 0
    max_resume_lateness_s: float = 0.0
    violations: list[str] = field(default_factory=list)

    def as_figures(self, prefix: str = "") -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "violations"}
        data["invariant_violations"] = len(self.violations)
        return {f"{prefix}{k}": v for k, v in data.items()}


def _canon(data: Any) -> Any:
    return json.loads(json.dumps(data))


def check_journal(rollout: Row, journal: list[Row], kills: list[Kill], stats: SweepStats) -> None:
    """The journal is the plan (nothing skipped), no row redone, waits kept their deadline."""
    rid = rollout["id"]
    bad = stats.violations
    spec = RolloutSpec.from_json(json.loads(rollout["context"]))
    plan = build_strategy(spec).plan(spec.plan_context())
    step = next(plan)
    for index, entry in enumerate(journal):
        if entry["seq"] != index:
            bad.append(f"{rid}: journal seq {entry['seq']} at position {index} (a step skipped)")
            return
        if _canon(step_to_json(step)) != json.loads(entry["step"]):
            bad.append(f"{rid}: step {index} is {entry['step']}, the plan says {step}")
            return
        if entry["outcome"] is None:
            bad.append(f"{rid}: dangling journal row {index} ({entry['step']})")
            return
        if isinstance(step, Finish):
            if index != len(journal) - 1:
                bad.append(f"{rid}: rows after the finish step")
            break
        step = plan.send(outcome_from_json(json.loads(entry["outcome"])))
    else:
        bad.append(f"{rid}: the journal ends before the plan's finish step")
    final = {row["seq"]: row for row in journal}
    for kill in kills:
        for row in kill.journal:
            now = final.get(row["seq"])
            if now is None:
                bad.append(f"{rid}: journal row {row['seq']} vanished after a kill")
                continue
            if row["outcome"] is not None:
                if now != row:
                    bad.append(f"{rid}: finished step {row['seq']} was redone after a kill")
                continue
            stats.steps_rerun += 1
            if (now["step"], now["started_at"], now["deadline"]) != (
                row["step"],
                row["started_at"],
                row["deadline"],
            ):
                bad.append(f"{rid}: step {row['seq']} was begun again after a kill")
            step_json = json.loads(row["step"])
            if step_json["kind"] == "wait" and kill.relaunch is not None:
                stats.waits_resumed += 1
                late = now["finished_at"] - max(now["deadline"], kill.relaunch)
                stats.max_resume_lateness_s = max(stats.max_resume_lateness_s, round(late, 3))
                if late > 0.5 * step_json["seconds"] + 0.25:
                    bad.append(
                        f"{rid}: wait {row['seq']} ended {late:.2f}s after max(deadline, "
                        f"restart): it started over instead of resuming"
                    )
    for entry in journal:
        step_json = json.loads(entry["step"])
        if step_json["kind"] != "wait":
            continue
        if abs(entry["deadline"] - entry["started_at"] - step_json["seconds"]) > 0.05:
            bad.append(f"{rid}: wait {entry['seq']} deadline is not start + seconds")
        if entry["finished_at"] < entry["deadline"] - 0.001:
            bad.append(f"{rid}: wait {entry['seq']} was cut short")


def check_fleet(fleet: Fleet, rollout: Row, stats: SweepStats) -> None:
    """Each node serves only what Git names (the new version) or the rollback target."""
    spec = RolloutSpec.from_json(json.loads(rollout["context"]))
    state = rollout["state"]
    for target in spec.nodes:
        functions = fleet.inventory(target.name)["functions"]
        fn = functions.get(spec.function)
        serving = {w["version"]: w["percent"] for w in (fn or {}).get("traffic", [])}
        serving = {v: p for v, p in serving.items() if p > 0}
        allowed = {spec.version, target.old_version}
        where = f"{rollout['id']} {target.name}"
        if not set(serving) <= allowed:
            stats.violations.append(f"{where}: serves {serving}, allowed {allowed}")
        elif state == "COMPLETED" and spec.version not in serving:
            stats.violations.append(f"{where}: COMPLETED but serves {serving}")
        elif state == "ROLLED_BACK" and serving != (
            {target.old_version: 100.0} if target.old_version else {}
        ):
            stats.violations.append(f"{where}: ROLLED_BACK but serves {serving}")


class Sweeper:
    """Drives rollouts of one function through killed and resumed `gitopsd sync` processes."""

    def __init__(
        self,
        zygote: Zygote,
        fleet: Fleet,
        source: Path,
        state: Path,
        logs: Path,
        rng: random.Random,
        stats: SweepStats,
    ) -> None:
        self.zygote = zygote
        self.fleet = fleet
        self.args = sync_args(source, state, fleet.token_file)
        self.db = state / "gitopsd.db"
        self.logs = logs
        self.rng = rng
        self.stats = stats
        logs.mkdir(parents=True, exist_ok=True)

    def _target(self, done: int) -> int | None:
        """Journal events at which to kill next (0: during the read), None: let it run."""
        if self.rng.random() < 0.08:
            return 0
        return done + self.rng.randint(1, 6)

    def rollout(self, function: str, version: str, kill_budget: int) -> int:
        """Run the version's rollout to its end, killing up to `kill_budget` times."""
        kills: list[Kill] = []
        while True:
            launched = time.time()
            if kills and kills[-1].relaunch is None:
                kills[-1].relaunch = launched
            log = self.logs / f"{function}-{version}-{self.stats.processes}.log"
            proc = self.zygote.spawn(self.args, log)
            self.stats.processes += 1
            done, _ = progress(self.db, function, version)
            target = self._target(done) if len(kills) < kill_budget else None
            killed = False
            while (code := proc.poll()) is None:
                done, last = progress(self.db, function, version)
                early = target == 0 and time.time() - launched > self.rng.uniform(0.0, 0.05)
                if target is not None and (early or (target and done >= target)):
                    in_wait = bool(
                        last and last["outcome"] is None and '"kind": "wait"' in last["step"]
                    )
                    if in_wait and last:
                        seconds = json.loads(last["step"])["seconds"]
                        time.sleep(self.rng.uniform(0.0, seconds))
                    else:
                        time.sleep(self.rng.uniform(0.0, 0.01))
                    proc.kill()
                    killed = True
                    break
                time.sleep(0.002)
            rows = rollouts_of(self.db, function, version)
            if killed:
                journal = journal_of(self.db, rows[-1]["id"]) if rows else []
                mid = bool(journal and journal[-1]["outcome"] is None)
                wait = mid and '"kind": "wait"' in journal[-1]["step"]
                rollout = rows[-1]["id"] if rows else None
                kills.append(Kill(rollout, time.time(), None, journal, mid, wait))
                self.stats.kills += 1
                self.stats.kills_mid_step += mid
                self.stats.kills_in_wait += wait
                self.stats.kills_before_first_step += not journal
                if rows and rows[-1]["state"] in ("COMPLETED", "ROLLED_BACK", "FAILED"):
                    break  # killed after the end (reporting): nothing left to resume
                continue
            if code not in (0, 1) or "Traceback" in proc.output():
                self.stats.violations.append(
                    f"{function} {version}: gitopsd sync exited {code}: {proc.output()[-2000:]}"
                )
                return len(kills)
            break
        self._check(function, version, kills)
        return len(kills)

    def _check(self, function: str, version: str, kills: list[Kill]) -> None:
        rows = rollouts_of(self.db, function, version)
        if not rows:
            self.stats.violations.append(f"{function} {version}: no rollout at all")
            return
        if len(rows) > 1:
            # `sync` resumed a rollout that rolled back, then started the same version again
            # in the same pass (a known bug, tests/faults/test_found_bugs.py): judge each.
            self.stats.rerolled_after_resume += len(rows) - 1
        for rollout in rows:
            self.stats.rollouts += 1
            state = rollout["state"]
            self.stats.completed += state == "COMPLETED"
            self.stats.rolled_back += state == "ROLLED_BACK"
            if state not in ("COMPLETED", "ROLLED_BACK"):
                self.stats.violations.append(
                    f"{rollout['id']}: ended {state} ({rollout['message']}), neither finished "
                    "nor rolled back"
                )
            mine = [k for k in kills if k.rollout == rollout["id"]]
            check_journal(rollout, journal_of(self.db, rollout["id"]), mine, self.stats)
        check_fleet(self.fleet, rows[-1], self.stats)
        with _connect(self.db) as conn:
            dangling = conn.execute("SELECT COUNT(*) FROM journal WHERE outcome IS NULL").fetchone()
            active = conn.execute(
                "SELECT COUNT(*) FROM rollouts WHERE state NOT IN"
                " ('COMPLETED', 'ROLLED_BACK', 'FAILED')"
            ).fetchone()
        if dangling[0] or active[0]:
            self.stats.violations.append(
                f"{function} {version}: {dangling[0]} dangling journal rows, {active[0]} "
                "unfinished rollouts"
            )
