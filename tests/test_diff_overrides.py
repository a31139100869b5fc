"""The diff with spec.limits and spec.overrides: each node is judged against its own
effective limits, and a node whose loaded limits differ is a change for that node only."""

from __future__ import annotations

from gitopsd.diff import Action, NodeChange, diff
from gitopsd.fleet.live import LiveFunction, LiveNode, LiveState, VersionLimits
from gitopsd.manifest.desired import DesiredState
from gitopsd.reconcile import build_spec, limits_only_nodes
from tests.manifest.support import docs, function, load, node, snapshot

OVERRIDE = "overrides: [{regions: [ap-south], limits: {memoryMiB: 128}}]"


def desired(*lines: str) -> DesiredState:
    nodes = docs(
        node("us-1", "us-east", 9101),
        node("ap-1", "ap-south", 9102),
        node("ap-2", "ap-south", 9103),
    )
    return load(snapshot({"s.yaml": docs(nodes, function("api", *lines))}))


def live(state: DesiredState, limits: dict[str, VersionLimits]) -> LiveState:
    """Every node serves api 1.0.0 alone with its module, loaded with `limits[node]`."""
    sha = state.functions["api"].module.sha256
    nodes = {
        name: LiveNode(
            name,
            state.nodes[name].region,
            1,
            None,
            None,
            {
                "api": LiveFunction(
                    versions={"1.0.0": sha},
                    traffic=(("1.0.0", 100.0),),
                    limits={"1.0.0": limits[name]},
                )
            },
        )
        for name in limits
    }
    return LiveState(nodes=nodes)


BEFORE = {"us-1": (64.0, 100), "ap-1": (64.0, 100), "ap-2": (64.0, 100)}


def test_an_added_override_is_a_change_of_the_nodes_it_matches_only() -> None:
    state = desired(OVERRIDE)
    changes = diff(state, live(state, BEFORE))
    (change,) = changes.changes
    assert change.action is Action.UPDATE
    want = "limits memoryMiB 64, timeoutMs 100 (want memoryMiB 128, timeoutMs 100)"
    assert change.nodes == (
        NodeChange("ap-1", Action.UPDATE, "1.0.0", want, only_limits=True),
        NodeChange("ap-2", Action.UPDATE, "1.0.0", want, only_limits=True),
        NodeChange("us-1", Action.OK, "1.0.0"),
    )
    assert limits_only_nodes(change) == ("ap-1", "ap-2")
    # The rollout goes to those nodes alone, with their own limits.
    spec = build_spec(state.functions["api"], state, live(state, BEFORE), change)
    assert [n.name for n in spec.nodes] == ["ap-1", "ap-2"]
    assert spec.load_body("ap-1")["limits"] == {"memoryMiB": 128.0, "timeoutMs": 100}


def test_nodes_that_run_their_effective_limits_need_nothing() -> None:
    state = desired(OVERRIDE)
    now = {"us-1": (64.0, 100), "ap-1": (128.0, 100), "ap-2": (128.0, 100)}
    assert diff(state, live(state, now)).changes == ()
    # Without the override, the same fleet differs on the ap-south nodes (the fast path,
    # which settles functions without overrides, sees limits too).
    (change,) = diff(desired(), live(desired(), now)).changes
    assert change.pending_nodes == ("ap-1", "ap-2")


def test_a_plain_limits_change_is_a_change_too() -> None:
    state = desired("limits: {timeoutMs: 250}")
    (change,) = diff(state, live(state, BEFORE)).changes
    assert change.pending_nodes == ("ap-1", "ap-2", "us-1")
    assert limits_only_nodes(change) == ("ap-1", "ap-2", "us-1")


def test_a_new_version_goes_everywhere_and_the_diff_says_which_limits_a_node_gets() -> None:
    state = desired(OVERRIDE)
    fresh = load(
        snapshot(
            {
                "s.yaml": docs(
                    node("us-1", "us-east", 9101),
                    node("ap-1", "ap-south", 9102),
                    node("ap-2", "ap-south", 9103),
                    function("api", OVERRIDE).replace('"1.0.0"', '"1.1.0"'),
                )
            }
        )
    )
    (change,) = diff(fresh, live(state, BEFORE)).changes
    details = {n.node: n.detail for n in change.nodes}
    assert details == {
        "ap-1": "runs 1.0.0; limits memoryMiB 128, timeoutMs 100 by override",
        "ap-2": "runs 1.0.0; limits memoryMiB 128, timeoutMs 100 by override",
        "us-1": "runs 1.0.0",
    }
    assert limits_only_nodes(change) is None
    spec = build_spec(fresh.functions["api"], fresh, live(state, BEFORE), change)
    assert [(n.name, n.limits) for n in spec.nodes] == [
        ("ap-1", (128.0, 100)),
        ("ap-2", (128.0, 100)),
        ("us-1", None),
    ]
    assert spec.load_body("us-1")["limits"] == {"memoryMiB": 64.0, "timeoutMs": 100}


def test_an_agent_that_does_not_report_limits_is_not_judged_on_them() -> None:
    state = desired(OVERRIDE)
    sha = state.functions["api"].module.sha256
    bare = LiveFunction(versions={"1.0.0": sha}, traffic=(("1.0.0", 100.0),))
    nodes = {n: LiveNode(n, state.nodes[n].region, 1, None, None, {"api": bare}) for n in BEFORE}
    assert diff(state, LiveState(nodes=nodes)).changes == ()
