"""The status of a function in the Python API's words comes from status.py, the one place
`gitopsd status` and `DeploymentManager.get_status` read a rollout's state and what nodes
serve."""

from __future__ import annotations

from dataclasses import replace

from gitopsd.fleet.live import LiveFunction, LiveNode, LiveState
from gitopsd.function_state import RolloutState
from gitopsd.status import deployment_phase, node_serving
from gitopsd.store.rows import RolloutRow

ROW = RolloutRow(
    id="r1",
    function="hello",
    version="2.0.0",
    commit="c" * 40,
    strategy="canary",
    state=RolloutState.IN_PROGRESS,
    message="",
    step="wait",
    context={},
    created_at=1.0,
    updated_at=2.0,
    finished_at=None,
    aborting=False,
)


def test_each_rollout_state_has_one_phase_and_an_abort_is_rolling_back() -> None:
    assert deployment_phase(None) == "deployed"
    assert deployment_phase(ROW) == "running"
    assert deployment_phase(replace(ROW, aborting=True)) == "rolling_back"
    phases = {s: deployment_phase(replace(ROW, state=s)) for s in RolloutState}
    assert phases[RolloutState.COMPLETED] == "deployed"
    assert phases[RolloutState.ROLLED_BACK] == phases[RolloutState.FAILED] == "failed"
    assert {phases[s] for s in RolloutState if not s.is_final} == {"running"}


def test_each_node_serves_its_largest_share_and_silent_nodes_serve_nothing() -> None:
    split = LiveFunction(versions={}, traffic=(("1.0.0", 70.0), ("2.0.0", 30.0)))
    drained = LiveFunction(versions={}, traffic=(("1.0.0", 0.0),))

    def node(name: str, fn: LiveFunction | None) -> LiveNode:
        return LiveNode(name, "eu", 1, None, None, {"hello": fn} if fn else {})

    live = LiveState(
        nodes={"a": node("a", split), "b": node("b", drained), "c": node("c", None)},
        errors={"d": "connection refused"},
    )
    assert node_serving("hello", live) == {"a": "1.0.0", "b": None, "c": None, "d": None}
