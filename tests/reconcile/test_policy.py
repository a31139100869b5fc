"""The pass's decisions (gitopsd/reconcile/policy.py) on rows, diffs and desired states
built in memory: no agents, no Git, no store."""

from __future__ import annotations

from typing import Any

import pytest

from gitopsd.diff import Action, Change, NodeChange
from gitopsd.function_state import PassState, RolloutState
from gitopsd.manifest.desired import DesiredState
from gitopsd.reconcile import policy
from gitopsd.reconcile.policy import DraftDecision
from gitopsd.store.rows import JournalRow, RolloutRow
from tests.manifest.support import docs, function, load, node, snapshot

SHA = "a" * 64
COMMIT = "c" * 40


def row(
    state: RolloutState,
    version: str = "1.0.0",
    sha256: str = SHA,
    commit: str = COMMIT,
    rollout_id: str = "r1",
    message: str = "",
) -> RolloutRow:
    context: dict[str, Any] = {"sha256": sha256}
    return RolloutRow(
        rollout_id, "api", version, commit, "canary", state, message, "", context, 0, 0, None, False
    )


def journal_entry(kind: str, outcome: dict[str, Any] | None) -> JournalRow:
    return JournalRow(1, {"kind": kind}, outcome, 0.0, None, None)


def change(*nodes: tuple[str, Action]) -> Change:
    return Change(
        "api",
        Action.UPDATE,
        "2.0.0",
        ("1.0.0",),
        tuple(NodeChange(n, a, "1.0.0") for n, a in nodes),
        "version differs",
    )


def desired(*functions: str) -> DesiredState:
    return load(snapshot({"s.yaml": docs(node("edge-a"), *functions)}))


UNREACHABLE = change(("edge-a", Action.UNKNOWN), ("edge-b", Action.OK))
REACHABLE = change(("edge-a", Action.UPDATE))


# start_verdict: held → window → dependsOn → unreachable ---------------------------------


def test_a_hold_comes_before_every_other_reason() -> None:
    verdict = policy.start_verdict("held by operator", "window closed", "blocked", UNREACHABLE)
    assert verdict == policy.Verdict(PassState.HELD, "held by operator")


def test_a_closed_window_comes_before_dependencies_and_nodes() -> None:
    verdict = policy.start_verdict("", "outside windows", "blocked", UNREACHABLE)
    assert verdict == policy.Verdict(PassState.WAITING_FOR_WINDOW, "outside windows")


def test_depends_on_blocks_before_unreachable_nodes_are_waited_for() -> None:
    verdict = policy.start_verdict("", "", "blocked by dependsOn db (FAILED)", UNREACHABLE)
    assert verdict == policy.Verdict(PassState.BLOCKED, "blocked by dependsOn db (FAILED)")


def test_only_unreachable_nodes_differing_waits_for_them() -> None:
    verdict = policy.start_verdict("", "", "", UNREACHABLE)
    assert verdict is not None and verdict.state is PassState.WAITING_FOR_NODES
    assert verdict.reason == (
        "waiting for unreachable nodes (edge-a); "
        "the 1 target node that answered already runs this version"
    )


def test_nothing_in_the_way_starts_the_rollout() -> None:
    assert policy.start_verdict("", "", "", REACHABLE) is None


def test_waiting_for_says_nothing_is_known_when_no_target_answered() -> None:
    text = policy.waiting_for(change(("edge-a", Action.UNKNOWN), ("edge-b", Action.UNKNOWN)))
    assert text.endswith("(edge-a, edge-b): no target node answered, what they run is unknown")


# dependsOn --------------------------------------------------------------------------------


def test_the_first_dependency_not_completed_blocks() -> None:
    states = {"cache": RolloutState.COMPLETED, "db": RolloutState.ROLLED_BACK}
    assert policy.blocked_by(["cache", "db"], states) == "blocked by dependsOn db (ROLLED_BACK)"
    assert policy.blocked_by(["cache", "unknown"], states) == ""


def test_dependency_states_running_last_state_or_nothing() -> None:
    latest = {"db": row(RolloutState.FAILED), "cache": row(RolloutState.COMPLETED), "new": None}
    states = policy.dependency_states(["db", "cache", "new", "queue"], {"queue"}, latest)
    assert states == {"db": RolloutState.FAILED, "queue": RolloutState.IN_PROGRESS}


def test_dependency_order_puts_a_function_after_what_it_depends_on() -> None:
    state = desired(
        function("api", "dependsOn: [db]"), function("db", "dependsOn: [cache]"), function("cache")
    )
    assert policy.dependency_order(state, ["api", "db", "cache"]) == ["cache", "db", "api"]
    assert policy.dependency_order(state, ["api", "cache"]) == ["cache", "api"]


# drift and selfHeal -----------------------------------------------------------------------


def test_drift_is_a_change_away_from_the_last_completed_rollout_of_this_version() -> None:
    history = [row(RolloutState.FAILED, "2.0.0"), row(RolloutState.COMPLETED, "1.0.0")]
    assert policy.is_drift(history, "1.0.0", SHA)
    assert not policy.is_drift(history, "1.0.0", "b" * 64)  # same version, other module
    assert not policy.is_drift(history, "2.0.0", SHA)  # a new version is no drift
    assert not policy.is_drift([row(RolloutState.ROLLED_BACK)], "1.0.0", SHA)


def test_without_self_heal_drift_is_left_alone() -> None:
    assert policy.leaves_drift(drift=True, self_heal=False)
    assert not policy.leaves_drift(drift=True, self_heal=True)
    assert not policy.leaves_drift(drift=False, self_heal=False)


# the loop's restart rules -----------------------------------------------------------------


def blocker(last: RolloutRow | None, retry: str | None = None, paused: bool = False) -> str:
    return policy.restart_blocker("api", "1.0.0", SHA, COMMIT, last, retry, paused)


def test_a_draft_waits_for_approval() -> None:
    assert blocker(row(RolloutState.DRAFT)) == "waiting for `gitopsd approve`"


def test_an_operator_pause_and_a_failure_pause_say_different_things() -> None:
    assert blocker(row(RolloutState.PAUSED)) == "paused by operator (`gitopsd resume` continues)"
    failed = row(RolloutState.PAUSED, message="2 of 3 nodes failed")
    assert blocker(failed, paused=True) == (
        "paused after a failure: 2 of 3 nodes failed; `gitopsd resume api` retries"
    )
    assert blocker(failed, retry="r1", paused=True) == ""  # the operator asked to retry it


@pytest.mark.parametrize("state", [RolloutState.ROLLED_BACK, RolloutState.FAILED])
def test_a_version_that_ended_badly_at_this_commit_waits_for_a_new_commit(
    state: RolloutState,
) -> None:
    assert blocker(row(state)) == (
        f"stalled: 1.0.0 ended {state} at this commit; push a new commit"
    )
    assert blocker(row(state, commit="d" * 40)) == ""  # a new commit retries


def test_another_version_or_module_or_no_history_may_start() -> None:
    assert blocker(None) == ""
    assert blocker(row(RolloutState.DRAFT, version="0.9.0")) == ""
    assert blocker(row(RolloutState.DRAFT, sha256="b" * 64)) == ""
    assert blocker(row(RolloutState.COMPLETED)) == ""


def test_a_failure_pause_is_told_by_its_journal_ending_with_the_finish_step() -> None:
    paused = row(RolloutState.PAUSED)
    assert policy.journal_ended_paused(paused, [journal_entry("finish", {"ok": False})])
    assert not policy.journal_ended_paused(paused, [journal_entry("finish", None)])
    assert not policy.journal_ended_paused(paused, [journal_entry("deploy", {"ok": True})])
    assert not policy.journal_ended_paused(paused, [])
    done = row(RolloutState.COMPLETED)
    assert not policy.journal_ended_paused(done, [journal_entry("finish", {"ok": True})])


# approval drafts and superseded rollouts --------------------------------------------------


def test_a_draft_of_this_version_is_continued_others_are_closed() -> None:
    assert policy.draft_decision(row(RolloutState.DRAFT), "1.0.0", False) is DraftDecision.CONTINUE
    approved = row(RolloutState.APPROVED)
    assert policy.draft_decision(approved, "1.0.0", False) is DraftDecision.CONTINUE
    old = row(RolloutState.DRAFT, version="0.9.0")
    assert policy.draft_decision(old, "1.0.0", False) is DraftDecision.SUPERSEDE
    assert policy.superseded_message(old, "api", DraftDecision.SUPERSEDE) == (
        "superseded by a newer commit"
    )
    paused = row(RolloutState.PAUSED, version="0.9.0", message="1 node failed")
    assert policy.draft_decision(paused, "1.0.0", True) is DraftDecision.CLOSE_PAUSED
    assert policy.superseded_message(paused, "api", DraftDecision.CLOSE_PAUSED) == (
        "1 node failed; closed: a new rollout of api started"
    )
    running = row(RolloutState.IN_PROGRESS, version="0.9.0")
    assert policy.draft_decision(running, "1.0.0", False) is DraftDecision.LEAVE


def test_a_running_rollout_git_no_longer_asks_for_is_superseded() -> None:
    state = desired(function("api"), function("db"))
    sha = state.functions["api"].module.sha256
    running = {
        "api": ("1.0.0", sha),  # still what Git asks for
        "db": ("0.9.0", sha),  # Git moved to 1.0.0
        "gone": ("1.0.0", sha),  # no longer in Git
    }
    assert policy.superseded(running, state) == ["db", "gone"]
