"""Deploy windows on real agents, on a fake clock: a rollout outside its window does not
start until the window opens; one that is running when its window closes pauses at its
next step boundary and resumes when the next window opens, across the end of summer time
(onClose: continue lets it run on); an abort while it waits rolls back at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import HookClock, Syncer, push

CANARY = "{type: canary, stages: [34, 100], evaluationPeriod: PT20M}"


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def nightly(on_close: str = "pause") -> str:
    """Allowed 20:00-22:00 Europe/Berlin, every day."""
    return (
        "  deployWindows:\n"
        "    windows: [{schedule: '0 20 * * *', duration: PT2H, timeZone: Europe/Berlin}]\n"
        f"    onClose: {on_close}\n"
    )


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    return remote


def at(when: str) -> HookClock:
    clock = HookClock()
    clock.advance(ts(when) - clock.now())
    return clock


class Messages:
    """Every message the engine writes on the rollout row (the store's own method, recorded)."""

    def __init__(self, syncer: Syncer, on_wait: Any = None) -> None:
        self.seen: list[tuple[float, str]] = []
        original = syncer.store.update_rollout

        def update(rollout_id: str, now: float, **fields: Any) -> None:
            original(rollout_id, now, **fields)
            message = fields.get("message")
            if isinstance(message, str) and message.startswith("waiting for deploy window"):
                self.seen.append((now, message))
                if on_wait is not None:
                    on_wait(syncer, rollout_id, now)

        syncer.store.update_rollout = update  # type: ignore[method-assign]


def journal(syncer: Syncer) -> list[tuple[str, float]]:
    rows = syncer.store.rollouts("fn", limit=1)
    return [
        (json.loads(json.dumps(e.step))["kind"], e.started_at)
        for e in syncer.store.journal(rows[0].id)
    ]


def test_a_new_rollout_waits_for_its_window(tmp_path: Path, repo: GitRemote, fleet: Fleet) -> None:
    clock = at("2026-10-23T12:00:00")  # Friday 14:00 CEST: closed until 20:00 CEST
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: blue-green}", extra=nightly())
    (result,) = sync().results
    assert result.state == "WAITING_FOR_WINDOW" and result.ok
    assert result.message == "waiting for deploy window, opens 20:00 CEST (in 6h00m)"
    assert set(fleet.serving("fn").values()) == {None}
    assert sync.store.rollouts("fn") == []
    clock.advance(ts("2026-10-23T18:00:00") - clock.now())  # 20:00 CEST: open
    (result,) = sync().results
    assert result.state == "COMPLETED"
    assert set(fleet.serving("fn").values()) == {"1.0.0"}


def test_a_running_rollout_pauses_at_the_boundary_and_resumes_after_the_dst_change(
    tmp_path: Path, repo: GitRemote, fleet: Fleet
) -> None:
    clock = at("2026-10-24T18:00:00")  # Saturday 20:00 CEST
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: blue-green}", extra=nightly())
    assert sync().ok
    clock.advance(ts("2026-10-24T19:50:00") - clock.now())  # 21:50 CEST, 10 minutes left
    push(repo, "fn", "2.0.0", CANARY, extra=nightly())
    messages = Messages(sync)
    (result,) = sync().results
    assert result.state == "COMPLETED"
    steps = journal(sync)
    kinds = [k for k, _ in steps]
    wait = kinds.index("wait")
    # The 20-minute evaluation ran past 22:00 CEST; the analysis after it waited for the
    # next window: Sunday 20:00, which is CET after the change, so 19:00 UTC.
    assert steps[wait][1] == ts("2026-10-24T19:50:00")
    assert kinds[wait + 1] == "analyze"
    assert steps[wait + 1][1] == ts("2026-10-25T19:00:00")
    assert messages.seen[0] == (
        ts("2026-10-24T20:10:00"),
        "waiting for deploy window, opens 20:00 CET (in 22h50m)",
    )
    assert sync.store.rollouts("fn", limit=1)[0].message != messages.seen[0][1]
    assert set(fleet.serving("fn").values()) == {"2.0.0"}


def test_on_close_continue_runs_on(tmp_path: Path, repo: GitRemote, fleet: Fleet) -> None:
    clock = at("2026-10-24T18:00:00")
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: blue-green}", extra=nightly("continue"))
    assert sync().ok
    clock.advance(ts("2026-10-24T19:50:00") - clock.now())
    push(repo, "fn", "2.0.0", CANARY, extra=nightly("continue"))
    messages = Messages(sync)
    (result,) = sync().results
    assert result.state == "COMPLETED"
    steps = journal(sync)
    analyze = [k for k, _ in steps].index("analyze")
    assert steps[analyze][1] == ts("2026-10-24T20:10:00")  # right after the wait, closed or not
    assert messages.seen == []


def test_an_abort_while_paused_rolls_back_at_once(
    tmp_path: Path, repo: GitRemote, fleet: Fleet
) -> None:
    clock = at("2026-10-24T18:00:00")
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: blue-green}", extra=nightly())
    assert sync().ok
    clock.advance(ts("2026-10-24T19:50:00") - clock.now())
    push(repo, "fn", "2.0.0", CANARY, extra=nightly())

    def abort(syncer: Syncer, _rollout: str, now: float) -> None:
        syncer.store.set_control("fn", now, abort=1)

    Messages(sync, on_wait=abort)
    (result,) = sync().results
    assert result.state == "ROLLED_BACK"
    # The rollback ran while the window was still closed, not at the next opening.
    assert clock.now() < ts("2026-10-24T20:11:00")
    assert set(fleet.serving("fn").values()) == {"1.0.0"}


def test_a_fleet_wide_policy_holds_every_function_without_windows_of_its_own(
    tmp_path: Path, repo: GitRemote, fleet: Fleet
) -> None:
    repo.write(
        "policy.yaml",
        "apiVersion: gitopsd/v1\nkind: DeployPolicy\nmetadata: {name: fleet}\nspec:\n" + nightly(),
    )
    clock = at("2026-10-23T12:00:00")  # Friday 14:00 CEST: the policy's window is closed
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: blue-green}")
    noon = "  deployWindows:\n    windows: [{schedule: '0 12 * * *', duration: PT1H}]\n"
    push(repo, "own", "1.0.0", "{type: blue-green}", extra=noon)
    states = {r.function: r.state for r in sync().results}
    assert states == {"fn": "WAITING_FOR_WINDOW", "own": "COMPLETED"}
    assert set(fleet.serving("fn").values()) == {None}
