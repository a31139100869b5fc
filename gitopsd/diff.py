"""The diff: a pure function of desired state (Git) and live state (agents) to a ChangeSet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from gitopsd.fleet.live import LiveFunction, LiveState, settled_function
from gitopsd.manifest.desired import DesiredFunction, DesiredState
from gitopsd.manifest.models import Limits
from gitopsd.manifest.strategy_options import FeatureFlagOptions


class Action(StrEnum):
    """What a function (or one node of it) needs."""

    DEPLOY = "deploy"  # on no target node that answered
    UPDATE = "update"  # some target node runs something else (or is unreachable)
    PRUNE = "prune"  # live somewhere Git no longer puts it
    OK = "ok"
    UNKNOWN = "unknown"  # the node did not answer; for a change: no target node answered


@dataclass(frozen=True)
class NodeChange:
    """One node of a function: what it runs now and what it needs."""

    node: str
    action: Action
    live_version: str | None
    detail: str = ""
    # The node serves the desired version and digest as it should, under other limits: the
    # rollout then goes to such nodes only (reconcile.limits_only_nodes).
    only_limits: bool = False


@dataclass(frozen=True)
class Change:
    """One function that is not as Git says."""

    function: str
    action: Action
    version: str | None  # desired version; None for a prune
    live_versions: tuple[str, ...]
    nodes: tuple[NodeChange, ...]
    reason: str

    @property
    def pending_nodes(self) -> tuple[str, ...]:
        return tuple(n.node for n in self.nodes if n.action is not Action.OK)

    @property
    def only_unreachable(self) -> tuple[str, ...]:
        """The nodes that differ when all of them are unreachable (else ()): nothing is known
        to be wrong, and a rollout could only fail on them and roll back the healthy rest."""
        pending = [n for n in self.nodes if n.action is not Action.OK]
        if self.action is Action.PRUNE or not all(n.action is Action.UNKNOWN for n in pending):
            return ()
        return tuple(n.node for n in pending)

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "action": str(self.action),
            "version": self.version,
            "liveVersions": list(self.live_versions),
            "reason": self.reason,
            "nodes": [
                {
                    "node": n.node,
                    "action": str(n.action),
                    "liveVersion": n.live_version,
                    "detail": n.detail,
                }
                for n in self.nodes
            ],
        }


@dataclass(frozen=True)
class ChangeSet:
    """Everything the diff found; `changes` is empty when the fleet matches Git."""

    commit: str
    changes: tuple[Change, ...]
    unchanged: tuple[str, ...]
    unreachable: Mapping[str, str] = field(default_factory=dict)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    @property
    def summary(self) -> str:
        if not self.changes:
            return "no changes"
        parts = [
            f"{self.count(Action.DEPLOY)} to deploy",
            f"{self.count(Action.UPDATE)} to update",
            f"{self.count(Action.PRUNE)} to prune",
        ]
        unknown = self.count(Action.UNKNOWN)
        if unknown:
            parts.append(f"{unknown} unknown (no target node answered)")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "summary": {
                "deploy": self.count(Action.DEPLOY),
                "update": self.count(Action.UPDATE),
                "prune": self.count(Action.PRUNE),
                "unknown": self.count(Action.UNKNOWN),
                "unchanged": len(self.unchanged),
            },
            "changes": [c.to_json() for c in self.changes],
            "unchanged": list(self.unchanged),
            "unreachable": dict(self.unreachable),
        }


def expected_percent(fn: DesiredFunction, live: LiveFunction) -> float:
    """Traffic the desired version should have on a node once its rollout is done."""
    strategy = fn.spec.strategy
    others = [v for v, pct in live.traffic if v != fn.spec.version and pct > 0]
    if isinstance(strategy, FeatureFlagOptions) and others:
        return float(strategy.initial_rollout)
    return 100.0


def limits_text(memory_mib: float, timeout_ms: int) -> str:
    """`memoryMiB 128, timeoutMs 100`: limits as the manifest spells them."""
    return f"memoryMiB {memory_mib:g}, timeoutMs {timeout_ms}"


def _node_change(fn: DesiredFunction, node: str, live: LiveState, limits: Limits) -> NodeChange:
    if node in live.errors:
        return NodeChange(node, Action.UNKNOWN, None, live.errors[node])
    inv = live.nodes.get(node)
    lf = inv.functions.get(fn.name) if inv else None
    if lf is None:
        return NodeChange(node, Action.DEPLOY, None, "not deployed")
    serving = lf.serving
    sha = lf.versions.get(fn.spec.version)
    if sha is None:
        return NodeChange(node, Action.UPDATE, serving, f"runs {serving or 'nothing'}")
    if sha != fn.module.sha256:
        return NodeChange(node, Action.UPDATE, serving, "module digest differs")
    want = expected_percent(fn, lf)
    have = lf.percent(fn.spec.version)
    if abs(have - want) > 1e-6:
        return NodeChange(node, Action.UPDATE, serving, f"traffic {have:g}% (want {want:g}%)")
    loaded = lf.limits.get(fn.spec.version)  # None: the agent did not say
    if loaded is not None:
        wanted = (float(limits.memory_mib), limits.timeout_ms)
        if (float(loaded[0]), loaded[1]) != wanted:
            return NodeChange(
                node,
                Action.UPDATE,
                serving,
                f"limits {limits_text(*loaded)} (want {limits_text(*wanted)})",
                only_limits=True,
            )
    return NodeChange(node, Action.OK, fn.spec.version)


def _settled(desired: DesiredState, live: LiveState) -> set[str]:
    """Functions that need nothing: every target node serves exactly the desired version and
    digest at 100 % and no other node runs them. The fast path of `diff`.

    One pass over each node's inventory in order (node-major: the inventories were parsed
    node by node, so this walks memory in order), no NodeChange built. Anything that is
    not plainly as desired is left out, and the full path explains it.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in desired.functions:
        groups.setdefault(desired.targets_of(name), []).append(name)
    want: dict[str, tuple[LiveFunction, int]] = {}
    node_groups: dict[str, set[int]] = {}
    unsettled: set[str] = set()
    expected: dict[str, int] = {}
    for index, (targets, names) in enumerate(groups.items()):
        for name in names:
            fn = desired.functions[name]
            if fn.spec.overrides:
                # Its limits differ from node to node: the full path judges each node.
                unsettled.add(name)
            base = (float(fn.spec.limits.memory_mib), fn.spec.limits.timeout_ms)
            want[name] = (settled_function(fn.spec.version, fn.module.sha256, base), index)
        for node in targets:
            if node not in live.nodes:
                unsettled.update(names)
            node_groups.setdefault(node, set()).add(index)
            expected[node] = expected.get(node, 0) + len(names)
    # Nodes that run exactly the same share one functions table (fleet/live.py): a region of
    # identical nodes is judged once.
    judged: dict[tuple[int, frozenset[int]], tuple[int, set[str]]] = {}
    for node, inv in live.nodes.items():
        mine = frozenset(node_groups.get(node, ()))
        key = (id(inv.functions), mine)  # `live` keeps every table alive: ids stay unique
        if key not in judged:
            judged[key] = _judge(inv.functions, want, mine)
        settled, bad = judged[key]
        unsettled |= bad
        if settled != expected.get(node, 0):
            # Something targeted here is missing from this node: find out which.
            for index, (_targets, names) in enumerate(groups.items()):
                if index in mine:
                    unsettled.update(n for n in names if n not in inv.functions)
    return set(desired.functions) - unsettled


def _judge(
    functions: Mapping[str, LiveFunction],
    want: Mapping[str, tuple[LiveFunction, int]],
    mine: frozenset[int],
) -> tuple[int, set[str]]:
    """(functions settled on a node with these groups, functions not settled there)."""
    settled, unsettled = 0, set()
    for name, lf in functions.items():
        w = want.get(name)
        if w is None:
            continue  # not in Git: a prune, found by _prunes
        # Identity first: inventories share one object per distinct state (fleet/live.py).
        if w[1] in mine and (lf is w[0] or _alike(lf, w[0])):
            settled += 1
        else:
            unsettled.add(name)
    return settled, unsettled


def _alike(lf: LiveFunction, settled: LiveFunction) -> bool:
    """`lf` serves the settled version alone at 100 %, maybe with other versions loaded,
    under the settled limits (or limits its agent did not report)."""
    ((version, sha),) = settled.versions.items()
    loaded = lf.limits.get(version)
    return (
        lf.traffic == settled.traffic
        and lf.versions.get(version) == sha
        and (loaded is None or loaded == settled.limits[version])
    )


def _function_change(fn: DesiredFunction, desired: DesiredState, live: LiveState) -> Change | None:
    targets = desired.targets_of(fn.name)
    nodes = [_node_change(fn, n, live, desired.limits_on(fn.name, n)) for n in targets]
    if fn.spec.overrides:
        nodes = [_with_override(fn, n, desired.limits_on(fn.name, n.node)) for n in nodes]
    target_set = set(targets)
    for name, inv in sorted(live.nodes.items()):
        if name not in target_set and fn.name in inv.functions:
            lf = inv.functions[fn.name]
            nodes.append(NodeChange(name, Action.PRUNE, lf.serving, "no longer targeted"))
    pending = [n for n in nodes if n.action is not Action.OK]
    if not pending:
        return None
    live_versions = tuple(sorted({n.live_version for n in nodes if n.live_version}))
    # Only what the nodes that answered said counts: an unreachable node runs "unknown",
    # never "nothing".
    answered = [n for n in nodes if n.node in target_set and n.action is not Action.UNKNOWN]
    deployed_nowhere = all(n.action is Action.DEPLOY for n in answered) and not live_versions
    if targets and not answered:
        action = Action.UNKNOWN
    else:
        action = Action.DEPLOY if deployed_nowhere else Action.UPDATE
    reason = "; ".join(sorted({f"{n.node}: {n.detail}" for n in pending}))
    return Change(fn.name, action, fn.spec.version, live_versions, tuple(nodes), reason)


def _with_override(fn: DesiredFunction, change: NodeChange, limits: Limits) -> NodeChange:
    """`change`, saying the limits the node gets when an override makes them differ from
    spec.limits and the node is to be deployed or updated (the effective spec per node)."""
    base = fn.spec.limits
    if change.action not in (Action.DEPLOY, Action.UPDATE) or change.only_limits:
        return change
    if (limits.memory_mib, limits.timeout_ms) == (base.memory_mib, base.timeout_ms):
        return change
    by_override = f"limits {limits_text(limits.memory_mib, limits.timeout_ms)} by override"
    return replace(change, detail=f"{change.detail}; {by_override}")


def _prunes(desired: DesiredState, live: LiveState) -> list[Change]:
    functions = desired.functions.keys()
    tables = {id(inv.functions): inv.functions for inv in live.nodes.values()}
    if all(table.keys() <= functions for table in tables.values()):
        return []
    found: dict[str, list[NodeChange]] = {}
    for name, inv in sorted(live.nodes.items()):
        for fn_name, lf in inv.functions.items():
            if fn_name not in desired.functions:
                found.setdefault(fn_name, []).append(
                    NodeChange(name, Action.PRUNE, lf.serving, "not in Git")
                )
    return [
        Change(
            fn_name,
            Action.PRUNE,
            None,
            tuple(sorted({n.live_version for n in nodes if n.live_version})),
            tuple(nodes),
            "removed from Git",
        )
        for fn_name, nodes in sorted(found.items())
    ]


def diff(desired: DesiredState, live: LiveState) -> ChangeSet:
    """What must change for the fleet to match Git. Pure: no I/O, same inputs, same output."""
    changes: list[Change] = []
    unchanged: list[str] = []
    settled = _settled(desired, live)
    for name in sorted(desired.functions):
        change = (
            None if name in settled else _function_change(desired.functions[name], desired, live)
        )
        if change is None:
            unchanged.append(name)
        else:
            changes.append(change)
    changes.extend(_prunes(desired, live))
    return ChangeSet(desired.commit, tuple(changes), tuple(unchanged), dict(live.errors))
