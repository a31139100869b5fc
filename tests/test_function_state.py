"""Typed function states (issue 15 item 6): every state name a note, the JSON output or the
store can carry is an enum member with exactly its old string, and nothing that shows a
state (the status page's badges) misses one."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from gitopsd.function_state import PassState, RolloutState, parse_function_state
from gitopsd.report.notes import (
    CommitOutcome,
    FunctionOutcome,
    merge_note_json,
    note_status,
    outcome_to_json,
    parse_note_status,
)
from gitopsd.report.publisher import outcome_from_dict
from gitopsd.rollout.windows import WAITING_STATE
from gitopsd.store.rows import FINAL_STATES
from gitopsd.ui.render import ROLLOUT_BADGES, rollout_badge
from gitopsd.ui.states import STATES, classify
from tests.ui.test_states import head

ROOT = Path(__file__).resolve().parent.parent
ALL_STATES = [*RolloutState, *PassState]


def test_values_are_their_names_and_round_trip() -> None:
    for state in ALL_STATES:
        assert state.value == state.name  # the strings of notes, JSON and rows, unchanged
        assert parse_function_state(str(state)) is state
    with pytest.raises(ValueError, match="not a function state"):
        parse_function_state("COMPLETE")


def test_rollout_and_pass_states_do_not_collide() -> None:
    assert {s.value for s in RolloutState}.isdisjoint({s.value for s in PassState})


def _documented_note_states() -> set[str]:
    """The state names docs/troubleshooting.md says a note's `functions.F.state` holds."""
    text = (ROOT / "docs/troubleshooting.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `functions.F.state`"))
    return set(re.findall(r"`([A-Z][A-Z_]+)`", row))


def test_every_documented_note_state_is_a_member() -> None:
    documented = _documented_note_states()
    assert {"IN_PROGRESS", "HELD", "PRUNE_REFUSED", "ROLLED_BACK"} <= documented
    for name in documented:
        assert str(parse_function_state(name)) == name


def _state_literals(tree: ast.AST) -> set[str]:
    """String constants given as a `state=` argument or compared with an `x.state`."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "state":
            values: list[ast.expr] = [node.value]
        elif isinstance(node, ast.Compare) and any(
            isinstance(side, ast.Attribute) and side.attr == "state"
            for side in (node.left, *node.comparators)
        ):
            values = [node.left, *node.comparators]
        else:
            continue
        for value in values:
            elements = value.elts if isinstance(value, ast.Tuple | ast.Set) else [value]
            found |= {
                e.value
                for e in elements
                if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value.isupper()
            }
    return found


def test_every_state_the_code_writes_or_compares_is_a_member() -> None:
    """A state some module still spells as a bare string must at least be one of ours."""
    for path in sorted((ROOT / "gitopsd").rglob("*.py")):
        for name in _state_literals(ast.parse(path.read_text(), str(path))):
            assert str(parse_function_state(name)) == name, f"{path}: {name}"


def test_states_in_a_note_keep_their_strings() -> None:
    outcome = CommitOutcome(
        "c" * 40,
        "pending",
        "",
        {
            "a": FunctionOutcome("pending", "1.0.0", state=WAITING_STATE),
            "b": FunctionOutcome("success", "1.0.0", state=PassState.HELD),
        },
    )
    body = json.loads(json.dumps(outcome_to_json(outcome)))
    assert WAITING_STATE is PassState.WAITING_FOR_WINDOW
    assert body["functions"]["a"]["state"] == "WAITING_FOR_WINDOW"
    assert body["functions"]["b"]["state"] == "HELD"
    assert body["status"] == "pending"


def test_final_states_are_the_final_rollout_states() -> None:
    assert {"COMPLETED", "ROLLED_BACK", "FAILED"} == FINAL_STATES
    assert all(s.is_final for s in FINAL_STATES)


def test_every_rollout_state_has_a_badge() -> None:
    """Fails when a RolloutState is added without a badge on the status page."""
    assert set(ROLLOUT_BADGES) == set(RolloutState)
    for state in RolloutState:
        css, shape = ROLLOUT_BADGES[state]
        assert css in STATES and STATES[css][1] == shape
        assert f"s-{css}" in rollout_badge(str(state))
    # A name no RolloutState has (a damaged or newer store) is shown as unknown, not guessed.
    assert "s-unknown" in rollout_badge("SOMETHING_NEW")


def test_every_rollout_state_classifies_on_the_page() -> None:
    for state in RolloutState:
        shown = classify("2.0.0", {"1.0.0"}, False, head(state), None, "")
        assert shown.key in STATES


def test_note_statuses_read_from_notes_are_validated() -> None:
    for status in ("pending", "success", "failure"):
        assert note_status(status) == status == parse_note_status(status)
    assert note_status("SUCCESS") is None and note_status(None) is None
    with pytest.raises(ValueError, match="not a note status: 'done'"):
        parse_note_status("done")


def test_a_foreign_note_with_bogus_statuses_does_not_make_a_success() -> None:
    """Another writer's entries with statuses none of ours: the merged status is not
    invented from them (it was `success`), the entries themselves are kept."""
    ours = {"status": "pending", "updatedAt": "2026-12-07T12:00:01+00:00", "functions": {}}
    theirs = {
        "status": "failure",
        "updatedAt": "2026-12-07T12:00:00+00:00",
        "functions": {"a": {"status": "bogus", "updatedAt": "2026-12-07T12:00:00+00:00"}},
    }
    merged = merge_note_json(ours, theirs)
    assert merged["status"] == "pending"
    assert merged["functions"]["a"]["status"] == "bogus"


def test_the_outbox_refuses_an_outcome_whose_status_is_none_of_ours() -> None:
    good = {
        "commit": "c" * 40,
        "status": "success",
        "message": "",
        "functions": {
            "a": {
                "status": "success",
                "version": "1.0.0",
                "nodes_ok": [],
                "nodes_failed": [],
            }
        },
    }
    assert outcome_from_dict(good).functions["a"].status == "success"
    with pytest.raises(ValueError, match="not a note status"):
        outcome_from_dict({**good, "status": "ok"})
    with pytest.raises(ValueError, match="not a note status"):
        outcome_from_dict({**good, "functions": {"a": {**good["functions"]["a"], "status": 1}}})
