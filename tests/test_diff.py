"""The diff of desired (Git) and live (inventories): what each node needs, and the fast path
that settles most functions by identity must agree with the full path it shortcuts."""

from __future__ import annotations

import pytest

from gitopsd.diff import Action, diff
from gitopsd.fleet.live import LiveFunction, LiveNode, LiveState, settled_function
from gitopsd.manifest.desired import DesiredState
from gitopsd.manifest.loader import load_snapshot
from gitopsd.source.snapshot import Snapshot, SnapshotFile
from tests.faults.corpus import NODES, WASM_SHA, fn_doc
from tests.manifest.support import WAT

FUNCTIONS = ("alpha", "beta", "gamma")


def desired_state() -> DesiredState:
    files = {
        "nodes.yaml": NODES,
        "modules/good.wat": WAT,
        **{f"{n}.yaml": fn_doc(n, version='"2.0.0"', module="modules/good.wat") for n in FUNCTIONS},
    }
    snap = Snapshot("c" * 40, "", {p: SnapshotFile(p, d.encode()) for p, d in files.items()})
    return load_snapshot(snap)


def live(
    per_node: dict[str, dict[str, LiveFunction]], errors: dict[str, str] | None = None
) -> LiveState:
    nodes = {
        name: LiveNode(name, "r", 1, None, None, functions) for name, functions in per_node.items()
    }
    return LiveState(nodes=nodes, errors=errors or {})


def settled(version: str = "2.0.0", sha: str = WASM_SHA) -> LiveFunction:
    """A LiveFunction built directly: equal to, but not the same object as, the shared one."""
    return LiveFunction(versions={version: sha}, traffic=((version, 100.0),))


def all_settled() -> dict[str, LiveFunction]:
    return {n: settled() for n in FUNCTIONS}


def test_a_fleet_that_matches_git_has_no_changes() -> None:
    changes = diff(desired_state(), live({"edge-a": all_settled(), "edge-b": all_settled()}))
    assert changes.changes == () and set(changes.unchanged) == set(FUNCTIONS)


def test_a_kept_blue_version_does_not_make_a_change() -> None:
    with_blue = LiveFunction(
        versions={"1.0.0": "0" * 64, "2.0.0": WASM_SHA}, traffic=(("2.0.0", 100.0),)
    )
    fleet = {"edge-a": {**all_settled(), "alpha": with_blue}, "edge-b": all_settled()}
    assert diff(desired_state(), live(fleet)).changes == ()


@pytest.mark.parametrize(
    ("alpha_on_edge_b", "action", "detail"),
    [
        (None, Action.UPDATE, "not deployed"),
        (settled("1.0.0"), Action.UPDATE, "runs 1.0.0"),
        (settled(sha="f" * 64), Action.UPDATE, "module digest differs"),
        (
            LiveFunction(
                {"2.0.0": WASM_SHA, "1.0.0": "0" * 64}, (("2.0.0", 60.0), ("1.0.0", 40.0))
            ),
            Action.UPDATE,
            "traffic 60% (want 100%)",
        ),
    ],
)
def test_each_kind_of_drift_on_one_node_is_found(
    alpha_on_edge_b: LiveFunction | None, action: Action, detail: str
) -> None:
    edge_b = all_settled()
    if alpha_on_edge_b is None:
        del edge_b["alpha"]
    else:
        edge_b["alpha"] = alpha_on_edge_b
    changes = diff(desired_state(), live({"edge-a": all_settled(), "edge-b": edge_b}))
    assert [c.function for c in changes.changes] == ["alpha"]
    (change,) = changes.changes
    assert change.action is action
    assert [(n.node, n.detail) for n in change.nodes if n.action is not Action.OK] == [
        ("edge-b", detail)
    ]


def test_an_unreachable_node_is_unknown_and_only_unreachable_says_so() -> None:
    changes = diff(
        desired_state(), live({"edge-a": all_settled()}, errors={"edge-b": "unreachable"})
    )
    assert {c.function for c in changes.changes} == set(FUNCTIONS)
    assert all(c.only_unreachable == ("edge-b",) for c in changes.changes)


def test_a_function_gone_from_git_is_pruned() -> None:
    extra = {**all_settled(), "retired": settled()}
    changes = diff(desired_state(), live({"edge-a": extra, "edge-b": all_settled()}))
    (prune,) = changes.changes
    assert (prune.function, prune.action) == ("retired", Action.PRUNE)
    assert prune.only_unreachable == ()


def test_shared_inventory_objects_and_built_ones_give_the_same_diff() -> None:
    """The identity fast path (inventories parsed from the wire share one object per state)
    must decide exactly like the full comparison of equal, separately built objects."""
    desired = desired_state()
    shared = {n: settled_function("2.0.0", WASM_SHA) for n in FUNCTIONS}
    drifted = {**shared, "beta": settled("1.0.0")}
    by_identity = diff(desired, live({"edge-a": shared, "edge-b": drifted}))
    by_value = diff(desired, live({"edge-a": all_settled(), "edge-b": {**drifted}}))
    assert by_identity.to_json() == by_value.to_json()
    assert [c.function for c in by_identity.changes] == ["beta"]


def test_a_function_on_no_node_that_answered_is_unknown_not_nothing() -> None:
    """Issue 22 item 12: no target node answered, so nothing is known of what they run."""
    errors = {"edge-a": "unreachable", "edge-b": "unreachable"}
    changes = diff(desired_state(), live({}, errors=errors))
    assert {c.action for c in changes.changes} == {Action.UNKNOWN}
    assert all(c.live_versions == () for c in changes.changes)
    assert all(set(c.only_unreachable) == {"edge-a", "edge-b"} for c in changes.changes)
    assert changes.summary.endswith("3 unknown (no target node answered)")
    assert changes.to_json()["summary"]["unknown"] == 3
    # One node answered without the function: a deploy, on what is known.
    partial = diff(desired_state(), live({"edge-a": {}}, errors={"edge-b": "unreachable"}))
    assert {c.action for c in partial.changes} == {Action.DEPLOY}


def test_waiting_for_counts_only_the_nodes_that_answered() -> None:
    from gitopsd.reconcile import waiting_for

    nobody = diff(desired_state(), live({}, errors={"edge-a": "x", "edge-b": "x"}))
    text = waiting_for(nobody.changes[0])
    assert "already run" not in text and "no target node answered" in text
    one = diff(desired_state(), live({"edge-a": all_settled()}, errors={"edge-b": "x"}))
    assert waiting_for(one.changes[0]).endswith(
        "; the 1 target node that answered already runs this version"
    )
