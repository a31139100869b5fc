"""The pass's steps (gitopsd/reconcile/pipeline.py) with in-memory ports: a real store and
real desired states, no agents and no Git. The steps' order, dependsOn ordering, the
leader check (`acts_for`), and what each kind of pass does with a refused head."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gitopsd.clock import FakeClock
from gitopsd.diff import Change, ChangeSet
from gitopsd.errors import InvalidManifests
from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.live import LiveState
from gitopsd.manifest.desired import DesiredFunction, DesiredState
from gitopsd.notify.dispatcher import NotificationDispatcher
from gitopsd.reconcile import Reconciler, pipeline
from gitopsd.reconcile.pipeline import STEPS, Pass, PassPorts, run_steps
from gitopsd.reconcile.results import FunctionResult
from gitopsd.report.notes import CommitOutcome
from gitopsd.rollout.engine import Engine
from gitopsd.store.sqlite import SqliteStore
from tests.manifest.support import docs, function, load, node, snapshot


def desired(*functions: str) -> DesiredState:
    return load(snapshot({"s.yaml": docs(node("edge-a"), *functions)}))


class Ports:
    """In-memory ports: the desired state to load, an empty fleet, what was started."""

    def __init__(self, state: DesiredState | Exception) -> None:
        self.state = state
        self.started: list[str] = []
        self.published: list[CommitOutcome] = []

    async def load(self, _p: Pass) -> DesiredState:
        if isinstance(self.state, Exception):
            raise self.state
        return self.state

    async def live(self, _p: Pass) -> LiveState:
        return LiveState()  # edge-a answers with no function at all

    async def resume(self, _p: Pass) -> list[FunctionResult]:
        return []

    async def start(self, _p: Pass, fn: DesiredFunction, _c: Change) -> FunctionResult | None:
        self.started.append(fn.name)  # a task now runs it (the daemon)
        return None

    async def publish(self, outcome: CommitOutcome) -> None:
        self.published.append(outcome)

    def ports(self) -> PassPorts:
        return PassPorts(
            publish=self.publish,
            load=self.load,
            read_live=self.live,
            resume=self.resume,
            start=self.start,
            window_closed=lambda _fn: "",
            running=lambda: self.started,
        )


def run(
    tmp_path: Path,
    ports: Ports,
    continuous: bool = True,
    acts_for: Callable[[str], bool] = pipeline.everyone,
    last_good: DesiredState | None = None,
) -> Pass:
    async def go() -> Pass:
        store = SqliteStore(tmp_path / "state")
        rec = Reconciler(store, tmp_path / "state", FakeClock(), None)
        client = AgentClient({}, None)
        p = Pass(
            rec=rec,
            source=None,
            client=client,
            engine=Engine(store, client, rec.clock),
            ports=ports.ports(),
            notes=NotificationDispatcher((), None),
            continuous=continuous,
            acts_for=acts_for,
            last_good=last_good,
        )
        try:
            return await run_steps(p, STEPS)
        finally:
            store.close()

    return asyncio.run(go())


def test_the_pass_runs_its_steps_in_the_documented_order() -> None:
    assert [s.__name__ for s in STEPS] == [
        "load_desired",
        "read_live",
        "skip_unchanged",
        "diff_desired_live",
        "notice_drift",
        "announce_pending",
        "resume_rollouts",
        "start_rollouts",
        "prune_removed",
        "retire_due",
        "report",
    ]


def test_a_function_starts_after_what_it_depends_on(tmp_path: Path) -> None:
    """The daemon once started them in name order: `api` began beside `db`, which it
    dependsOn, instead of waiting for it (BLOCKED while db's rollout runs)."""
    ports = Ports(desired(function("api", "dependsOn: [db]"), function("db")))
    p = run(tmp_path, ports)
    assert ports.started == ["db", "api"]
    assert p.changes is not None and [c.function for c in p.changes.changes] == ["api", "db"]


def test_acts_for_is_where_a_function_is_left_to_another_leader(tmp_path: Path) -> None:
    ports = Ports(desired(function("api"), function("db")))
    run(tmp_path, ports, acts_for=lambda name: name != "api")
    assert ports.started == ["db"]


def test_a_continuous_pass_keeps_its_last_good_state_when_the_head_is_refused(
    tmp_path: Path,
) -> None:
    good = desired(function("api"))
    ports = Ports(InvalidManifests([], commit="b" * 40))
    p = run(tmp_path, ports, last_good=good)
    assert [(o.commit, o.status, o.message) for o in ports.published] == [
        ("b" * 40, "failure", "invalid manifests; nothing applied")
    ]
    assert p.desired is good and ports.started == ["api"]


def test_a_one_shot_pass_notes_a_refused_head_and_raises(tmp_path: Path) -> None:
    ports = Ports(InvalidManifests([], commit="b" * 40))
    with pytest.raises(InvalidManifests):
        run(tmp_path, ports, continuous=False)
    assert [o.status for o in ports.published] == ["failure"]
    assert ports.started == []


def test_a_one_shot_pass_notes_the_commit_pending_before_its_rollouts(tmp_path: Path) -> None:
    ports = Ports(desired(function("api"), function("db")))
    p = run(tmp_path, ports, continuous=False)
    assert ports.started == ["api", "db"]
    pending = ports.published[0]
    assert (pending.status, pending.message) == ("pending", "rolling out api, db")
    assert {f.state for f in pending.functions.values()} == {"IN_PROGRESS"}
    # Both rollouts still run (their ports returned no result): the note stays pending.
    assert len(ports.published) == 1 and p.results == []
    assert isinstance(p.changes, ChangeSet)
