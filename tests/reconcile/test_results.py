"""FunctionResult and SyncReport with typed states: the values written into notes and JSON
are the same names as before (item 6 of issue 15)."""

from __future__ import annotations

import json

from gitopsd.diff import ChangeSet
from gitopsd.function_state import FunctionState, PassState, RolloutState
from gitopsd.reconcile import FunctionResult, SyncReport


def result(state: FunctionState) -> FunctionResult:
    return FunctionResult("api", "1.0.0", "update", state, "m")


def test_each_state_has_its_note_status() -> None:
    expected = {
        RolloutState.COMPLETED: "success",
        PassState.PRUNED: "success",
        PassState.HELD: "success",
        RolloutState.DRAFT: "pending",
        PassState.PAUSED_BY_OPERATOR: "pending",
        PassState.WAITING_FOR_WINDOW: "pending",
        PassState.WAITING_FOR_NODES: "pending",
        RolloutState.IN_PROGRESS: "pending",
        RolloutState.ROLLED_BACK: "failure",
        RolloutState.FAILED: "failure",
        PassState.BLOCKED: "failure",
        PassState.PRUNE_FAILED: "failure",
        PassState.PRUNE_REFUSED: "failure",
    }
    assert {s: result(s).note_status for s in expected} == expected


def test_a_commit_waiting_only_for_unreachable_nodes_is_pending_not_failed() -> None:
    empty = ChangeSet("c" * 40, (), ())
    waiting = SyncReport("c" * 40, empty, (result(PassState.WAITING_FOR_NODES),))
    assert waiting.outcome().status == "pending"
    failed = SyncReport(
        "c" * 40, empty, (result(PassState.WAITING_FOR_NODES), result(RolloutState.FAILED))
    )
    assert failed.outcome().status == "failure"


def test_the_note_carries_the_state_by_its_name() -> None:
    outcome = SyncReport("c" * 40, ChangeSet("c" * 40, (), ()), (result(PassState.HELD),)).outcome()
    entry = outcome.functions["api"]
    assert json.loads(json.dumps({"state": entry.state})) == {"state": "HELD"}
