"""`gitopsd status`: per function what Git wants, what each node serves, and why a rollout
is waiting. Built from the state store, the desired state (when a source is known) and the
agents' inventories (when they answer)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from gitopsd.fleet.live import LiveState
from gitopsd.function_state import RolloutState
from gitopsd.manifest.desired import DesiredState
from gitopsd.reconcile.keys import waiting_key
from gitopsd.reconcile.summary import ended_paused, summarize_rollout
from gitopsd.source.redact import redact
from gitopsd.store.protocol import Store
from gitopsd.store.rows import Controls, RolloutRow


def clock_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC")


def why_waiting(
    store: Store, function: str, row: RolloutRow | None, controls: Controls | None = None
) -> str | None:
    """One sentence an operator can act on, or None when nothing is pending. `controls`: the
    reading the caller also shows, so the sentence and the flags agree."""
    controls = controls if controls is not None else store.controls(function)
    if controls.held:
        return f"held: {controls.held_reason}"
    recorded = store.get(waiting_key(function)) or None
    if recorded is not None and recorded.startswith("HELD:"):
        # What the last pass recorded; the hold was lifted since (`resume`, or Git moved on).
        recorded = None
    if row is None:
        return recorded
    if row.state == RolloutState.DRAFT:
        return f"waiting for approval: run `gitopsd approve {function}`"
    if row.state == RolloutState.PAUSED:
        if controls.paused:
            return f"paused by an operator: run `gitopsd resume {function}`"
        if ended_paused(store, row):
            return (
                f"paused after a failure: {row.message}; "
                f"run `gitopsd resume {function}` to roll {row.version} out again"
            )
        return f"paused: {row.message}"
    if row.state in (RolloutState.ROLLED_BACK, RolloutState.FAILED):
        failed = summarize_rollout(store, row).failed_step
        return f"{row.state.lower().replace('_', ' ')}: {failed or row.message}"
    if row.state == RolloutState.COMPLETED:
        return recorded
    journal = store.journal(row.id)
    current = journal[-1] if journal and journal[-1].outcome is None else None
    if current is None:
        return f"{row.state.lower()}: {row.step or 'starting'}"
    kind = current.step.get("kind")
    if kind == "wait" and current.deadline is not None:
        return f"{current.step.get('reason')} until {clock_text(current.deadline)}"
    if kind == "gate":
        return f"waiting for `gitopsd promote {function}`: {current.step.get('reason')}"
    return f"running: {row.step}"


def _node_rows(function: str, live: LiveState, regions: Mapping[str, str]) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(set(live.nodes) | set(live.errors), key=lambda n: (regions.get(n, ""), n)):
        inv = live.nodes.get(name)
        if inv is None:
            rows.append(
                {
                    "node": name,
                    "region": regions.get(name, ""),
                    "reachable": False,
                    "error": redact(live.errors.get(name, "")),
                    "traffic": [],
                }
            )
            continue
        lf = inv.functions.get(function)
        traffic = [{"version": v, "percent": p} for v, p in (lf.traffic if lf else ())]
        rows.append(
            {
                "node": name,
                "region": inv.region or regions.get(name, ""),
                "reachable": True,
                "traffic": traffic,
            }
        )
    return rows


def function_status(
    store: Store | None,
    function: str,
    desired: DesiredState | None,
    live: LiveState,
) -> dict[str, Any]:
    """The JSON document `gitopsd status --output json` prints for one function. `store`
    None: no state database exists yet (reading one must not create it), nothing recorded."""
    rows = store.rollouts(function, limit=1) if store is not None else []
    row = rows[0] if rows else None
    fn = desired.functions.get(function) if desired else None
    regions = {n: d.region for n, d in desired.nodes.items()} if desired else {}
    nodes = [n for n in _node_rows(function, live, regions) if not n["reachable"] or n["traffic"]]
    # One reading for `waiting`, `held` and `paused`.
    controls = store.controls(function) if store is not None else Controls()
    live_versions = sorted({t["version"] for n in nodes for t in n["traffic"] if t["percent"]})
    return {
        "function": function,
        "desiredVersion": fn.spec.version if fn else None,
        "liveVersions": live_versions,
        "nodes": nodes,
        "rollout": None
        if row is None
        else {
            "id": row.id,
            "version": row.version,
            "commit": row.commit,
            "strategy": row.strategy,
            "state": row.state,
            "step": row.step,
            "message": redact(row.message),
            "updatedAt": datetime.fromtimestamp(row.updated_at, UTC).isoformat(timespec="seconds"),
        },
        "waiting": (
            redact(why_waiting(store, function, row, controls) or "") or None
            if store is not None
            else None
        ),
        "held": controls.held,
        "paused": controls.paused,
    }


DeploymentPhase = Literal["deployed", "running", "failed", "rolling_back"]
"""A function's status in the Python API's words (`DeploymentManager.get_status`)."""


def deployment_phase(row: RolloutRow | None) -> DeploymentPhase:
    """The phase of a function whose latest rollout is `row` (None: deployed outside any
    rollout this store recorded)."""
    if row is None:
        return "deployed"
    if row.aborting:
        return "rolling_back"
    state = RolloutState(row.state)
    if state is RolloutState.COMPLETED:
        return "deployed"
    if state in (RolloutState.ROLLED_BACK, RolloutState.FAILED):
        return "failed"
    return "running"


def node_serving(function: str, live: LiveState) -> dict[str, str | None]:
    """The version each node serves `function` at (its largest traffic share), None where it
    serves none or did not answer; every node of `live`, answering or not."""
    serving: dict[str, str | None] = dict.fromkeys(sorted(set(live.nodes) | set(live.errors)))
    for name, inv in live.nodes.items():
        lf = inv.functions.get(function)
        serving[name] = lf.serving if lf else None
    return serving


def all_functions(store: Store | None, desired: DesiredState | None, live: LiveState) -> list[str]:
    """Every function the state database, Git or an agent knows, sorted."""
    names = {r.function for r in store.rollouts(limit=10_000)} if store is not None else set()
    if desired:
        names |= set(desired.functions)
    for inv in live.nodes.values():
        names |= set(inv.functions)
    return sorted(names)
