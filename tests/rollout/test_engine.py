"""The engine on real agents and a fake clock: journaled waits, replay after a restart,
operator controls (pause, resume, promote, abort, approve)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gitopsd.rollout.engine import Engine
from gitopsd.rollout.steps import RolloutState
from gitopsd.store.sqlite import SqliteStore
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import HookClock, Syncer, push

CANARY = "{type: canary, stages: [10, 50, 100], evaluationPeriod: PT5M}"


@pytest.fixture
def repo(remote: GitRemote, big_fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", big_fleet.manifests())
    return remote


def test_waits_are_journaled_with_absolute_deadlines_and_take_no_real_time(
    repo: GitRemote, big_fleet: Fleet, tmp_path: Path
) -> None:
    clock = HookClock()
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", CANARY)
    start = clock.now()
    assert sync().ok
    row = sync.store.rollouts("fn")[0]
    waits = [j for j in sync.store.journal(row.id) if j.step["kind"] == "wait"]
    assert [j.deadline - j.started_at for j in waits] == [300.0, 300.0]
    assert clock.now() - start >= 600  # two evaluation periods passed on the fake clock
    assert all(j.outcome is not None for j in sync.store.journal(row.id))


def test_pause_stops_before_next_step_and_resume_finishes(
    repo: GitRemote, big_fleet: Fleet, tmp_path: Path
) -> None:
    clock = HookClock()
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: blue-green}")
    assert sync().ok
    push(repo, "fn", "2.0.0", CANARY)
    clock.hook = lambda _now: sync.store.set_control("fn", clock.now(), paused=1)
    report = sync()
    assert [r.state for r in report.results] == ["PAUSED_BY_OPERATOR"]
    row = sync.store.rollouts("fn")[0]
    assert row.state == "PAUSED"
    assert "paused by operator" in row.message
    done_before = len(sync.store.journal(row.id))
    clock.hook = None
    sync.store.set_control("fn", clock.now(), paused=0)
    sync.store.update_rollout(row.id, clock.now(), state="IN_PROGRESS")
    report = sync()
    assert sync.store.rollout(row.id).state == "COMPLETED"  # type: ignore[union-attr]
    journal = sync.store.journal(row.id)
    assert [j.seq for j in journal] == list(range(len(journal)))  # nothing redone
    assert len(journal) > done_before
    assert set(big_fleet.serving("fn").values()) == {"2.0.0"}


def test_promote_skips_the_evaluation_wait(
    repo: GitRemote, big_fleet: Fleet, tmp_path: Path
) -> None:
    clock = HookClock()
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", CANARY)
    sync.store.set_control("fn", clock.now(), promote=1)
    start = clock.now()
    assert sync().ok
    row = sync.store.rollouts("fn")[0]
    messages = [
        j.outcome["message"]
        for j in sync.store.journal(row.id)
        if j.step["kind"] == "wait" and j.outcome
    ]
    assert messages[0] == "wait skipped: promoted by operator"
    assert clock.now() - start < 600


def test_abort_during_wait_rolls_back_every_touched_node(
    repo: GitRemote, big_fleet: Fleet, tmp_path: Path
) -> None:
    clock = HookClock()
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: blue-green}")
    assert sync().ok
    push(repo, "fn", "2.0.0", CANARY)
    clock.hook = lambda _now: sync.store.set_control("fn", clock.now(), abort=1)
    report = sync()
    assert [r.state for r in report.results] == ["ROLLED_BACK"]
    assert "aborted by operator" in report.results[0].message
    assert set(big_fleet.serving("fn").values()) == {"1.0.0"}
    assert sync.store.controls("fn").abort is False


def test_manual_approval_waits_in_draft_until_approved(
    repo: GitRemote, big_fleet: Fleet, tmp_path: Path
) -> None:
    sync = Syncer(tmp_path / "state", repo, HookClock())
    push(repo, "fn", "1.0.0", "{type: blue-green}", extra="  approval: manual\n")
    report = sync()
    assert [r.state for r in report.results] == ["DRAFT"]
    assert set(big_fleet.serving("fn").values()) == {None}
    again = sync()  # a second pass does not create a second draft
    assert len(sync.store.rollouts("fn")) == 1 and again.results[0].state == "DRAFT"
    row = sync.store.rollouts("fn")[0]
    sync.store.set_control("fn", 0, approved_version="1.0.0")
    sync.store.update_rollout(row.id, 0, state="APPROVED")
    assert [r.state for r in sync().results] == ["COMPLETED"]
    assert set(big_fleet.serving("fn").values()) == {"1.0.0"}


def test_restart_replays_journal_without_redoing_steps(
    repo: GitRemote, big_fleet: Fleet, tmp_path: Path
) -> None:
    """An engine stopped mid-wait (its task cancelled, as a killed process would be) is
    resumed by a fresh engine: finished steps are replayed from the journal, not redone."""
    clock = HookClock()
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: blue-green}")
    assert sync().ok
    push(repo, "fn", "2.0.0", CANARY)

    class Crash(BaseException):
        pass

    def crash(_now: float) -> None:
        raise Crash

    clock.hook = crash
    with pytest.raises(Crash):
        sync()
    row = sync.store.rollouts("fn")[0]
    before = sync.store.journal(row.id)
    assert before[-1].step["kind"] == "wait" and before[-1].outcome is None
    clock.hook = None
    store = SqliteStore(tmp_path / "state")  # a new process would open the file again
    replayed: list[int] = []

    async def resume() -> None:
        from gitopsd.fleet.client import AgentClient
        from tests.fleetfixture import TOKEN

        addresses = {n: big_fleet.nodes[n].url for n in big_fleet.nodes}
        async with AgentClient(addresses, TOKEN) as client:
            engine = Engine(
                store, client, clock, lambda e: replayed.append(e.seq) if e.replayed else None
            )
            final = await engine.run(row.id)
            assert final.state == RolloutState.COMPLETED

    asyncio.run(resume())
    after = store.journal(row.id)
    assert replayed == list(range(len(before) - 1))
    for old, new in zip(before[:-1], after, strict=False):
        assert (old.started_at, old.finished_at) == (new.started_at, new.finished_at)
    assert after[len(before) - 1].deadline == before[-1].deadline  # the wait kept its deadline
    assert set(big_fleet.serving("fn").values()) == {"2.0.0"}
