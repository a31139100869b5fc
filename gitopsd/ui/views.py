"""The data of each page, as JSON-ready dicts: the templates render them, `/api/...` serves
them as they are (docs/status-page.md documents every field)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from gitopsd.fleet.live import LiveNode, LiveState
from gitopsd.manifest.desired import DesiredState
from gitopsd.reconcile.summary import summarize_rollout
from gitopsd.rollout.engine import build_strategy
from gitopsd.rollout.preview import describe_step, healthy_outcome
from gitopsd.rollout.spec import RolloutSpec
from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Finish,
    RolloutState,
    Step,
    Wait,
    outcome_from_json,
    step_from_json,
    step_to_json,
)
from gitopsd.status import why_waiting
from gitopsd.store.protocol import Store
from gitopsd.store.rows import FINAL_STATES, JournalRow, RolloutRow
from gitopsd.ui.ports import CommitInfo
from gitopsd.ui.readmodel import Reads, RolloutHead
from gitopsd.ui.states import ACTIVE, FINAL_BAD, FunctionState, classify

_NONE: dict[str, int] = {}
PAGE_SIZE = 200  # functions per overview page (the answer stays under 100 ms at 2,000)
MAX_PLAN_STEPS = 2_000  # a plan preview longer than this is cut (a plugin gone wrong)
HISTORY_LIMIT = 50


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC (`2026-12-07T12:00:00Z`), None for None."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _state_json(state: FunctionState) -> dict[str, str]:
    return {"state": state.key, "label": state.label, "shape": state.shape, "detail": state.detail}


def _head_json(head: RolloutHead | RolloutRow) -> dict[str, Any]:
    return {
        "id": head.id,
        "version": head.version,
        "commit": head.commit,
        "strategy": head.strategy,
        "state": head.state,
        "step": head.step,
        "message": head.message,
        "createdAt": iso(head.created_at),
        "updatedAt": iso(head.updated_at),
        "finishedAt": iso(head.finished_at),
    }


def commit_json(info: CommitInfo | None, sha: str | None) -> dict[str, Any] | None:
    if sha is None:
        return None
    if info is None:
        return {
            "sha": sha,
            "short": sha[:10],
            "message": "",
            "author": "",
            "time": None,
            "signature": "unknown",
        }
    return {
        "sha": info.sha,
        "short": info.sha[:10],
        "message": info.message.splitlines()[0] if info.message else "",
        "author": info.author,
        "time": iso(info.time),
        "signature": info.signature,
    }


# the fleet ------------------------------------------------------------------------------------


class FleetIndex:
    """Per-function figures over the fleet, computed once per distinct function table:
    nodes that run exactly the same share one table (fleet/live.py), so a uniform fleet of
    500 nodes costs one walk of its functions, not 500."""

    def __init__(self, live: LiveState) -> None:
        self.live = live
        self.tables: dict[int, tuple[Mapping[str, Any], int]] = {}
        for node in live.nodes.values():
            table, count = self.tables.get(id(node.functions), (node.functions, 0))
            self.tables[id(node.functions)] = (table, count + 1)
        self.serving: dict[str, dict[str, int]] = {}  # function -> version -> nodes
        for table, count in self.tables.values():
            for fn, lf in table.items():
                counter = self.serving.get(fn)
                if counter is None:
                    counter = self.serving[fn] = {}
                for version, pct in lf.traffic:
                    if pct > 0:
                        counter[version] = counter.get(version, 0) + count
        self._split: dict[int, list[dict[str, Any]]] = {}

    def split_traffic(self, node: LiveNode) -> list[dict[str, Any]]:
        """The node's functions whose traffic is shared between versions, with the weights."""
        key = id(node.functions)
        found = self._split.get(key)
        if found is None:
            found = [
                {
                    "function": fn,
                    "weights": [{"version": v, "percent": p} for v, p in lf.traffic if p > 0],
                }
                for fn, lf in sorted(node.functions.items())
                if len(lf.traffic) > 1 and sum(1 for _v, p in lf.traffic if p > 0) > 1
            ]
            self._split[key] = found
        return found


def fleet_json(desired: DesiredState | None, live: LiveState, index: FleetIndex) -> list[Any]:
    """Nodes grouped by region: reachable or not, functions, split weights, memory."""
    regions: dict[str, list[dict[str, Any]]] = {}
    declared = dict(desired.nodes) if desired else {}
    for name in sorted(set(declared) | set(live.nodes) | set(live.errors)):
        inv = live.nodes.get(name)
        region = (inv.region if inv else "") or (declared[name].region if name in declared else "")
        regions.setdefault(region or "(no region)", []).append(
            {
                "name": name,
                "reachable": inv is not None,
                "error": live.errors.get(name, "" if inv else "not asked yet"),
                "functions": len(inv.functions) if inv else None,
                "splitTraffic": index.split_traffic(inv) if inv else [],
                "memoryUsedMiB": inv.memory_used_mib if inv else None,
                "memoryBudgetMiB": inv.memory_budget_mib if inv else None,
            }
        )
    return [
        {
            "region": region,
            "reachable": sum(1 for n in nodes if n["reachable"]),
            "nodes": nodes,
        }
        for region, nodes in sorted(regions.items())
    ]


# the overview --------------------------------------------------------------------------------


def overview_json(
    store: Store,
    reads: Reads,
    desired: DesiredState | None,
    live: LiveState,
    commit: dict[str, Any] | None,
    page: int,
    now: float,
) -> dict[str, Any]:
    """The document of `/` and `/api/overview`."""
    heads = reads.latest_rollouts()
    index = FleetIndex(live)
    names = set(heads) | set(index.serving) | (set(desired.functions) if desired else set())
    controls = reads.controls(names)
    waiting = reads.waiting(names)
    ordered = sorted(names)
    pages = max(1, -(-len(ordered) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    page_names = ordered[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    shown = set(page_names)
    active = [h for n in page_names if (h := heads.get(n)) is not None and h.state in ACTIVE]
    progress = _progress(store, reads, active)
    down = set(live.errors)
    unreachable_of: dict[tuple[str, ...], bool] = {}
    counts: Counter[str] = Counter()
    functions = []
    for name in ordered:
        fn = desired.functions.get(name) if desired else None
        head = heads.get(name)
        serving = index.serving.get(name, _NONE)
        unreachable = False
        if fn is not None and down:
            targets = desired.targets_of(name) if desired else ()
            if targets not in unreachable_of:
                unreachable_of[targets] = any(n in down for n in targets)
            unreachable = unreachable_of[targets]
        state = classify(
            fn.spec.version if fn else None,
            set(serving),
            unreachable,
            head,
            controls.get(name),
            waiting.get(name, ""),
        )
        counts[state.key] += 1
        if name not in shown:
            continue
        if head is not None and state.key in ("waiting", "paused", "failed", "held"):
            row = store.rollout(head.id)  # few: the CLI's own sentence saying why
            state = FunctionState(state.key, why_waiting(store, name, row) or state.detail)
        functions.append(
            {
                "name": name,
                "desiredVersion": fn.spec.version if fn else None,
                "strategy": fn.spec.strategy.type if fn else (head.strategy if head else None),
                "serving": [{"version": v, "nodes": n} for v, n in sorted(serving.items())],
                **_state_json(state),
                "rollout": _head_json(head) if head else None,
                "progress": progress.get(head.id) if head else None,
            }
        )
    return {
        "generatedAt": iso(now),
        "commit": commit,
        "counts": dict(sorted(counts.items())),
        "functions": functions,
        "page": {"number": page, "pages": pages, "size": PAGE_SIZE, "total": len(ordered)},
        "regions": fleet_json(desired, live, index),
        "nodes": {"total": len(live.nodes) + len(live.errors), "unreachable": len(live.errors)},
    }


_PLAN_SIZES: dict[tuple[str, float, int], int] = {}  # (rollout, updated_at, journaled) -> steps


def _progress(store: Store, reads: Reads, active: list[RolloutHead]) -> dict[str, dict[str, int]]:
    """Steps done and planned of each rollout under way. The plan is previewed from the
    rollout's spec (a 500-node spec is ~25 ms to parse and plan), so its length is kept
    until the rollout moves (a step begins or ends)."""
    done = reads.step_counts([h.id for h in active])
    out: dict[str, dict[str, int]] = {}
    for head in active:
        key = (head.id, head.updated_at, done.get(head.id, 0))
        total = _PLAN_SIZES.get(key)
        if total is None:
            row = store.rollout(head.id)
            if row is None:
                continue
            total = len(plan_json(row, store.journal(row.id), head.updated_at))
            if len(_PLAN_SIZES) > 10_000:
                _PLAN_SIZES.clear()
            _PLAN_SIZES[key] = total
        out[head.id] = {"done": done.get(head.id, 0), "total": total}
    return out


# one function ----------------------------------------------------------------------------------


def plan_json(row: RolloutRow, journal: list[JournalRow], now: float) -> list[dict[str, Any]]:
    """Every step of the rollout: those journaled (done, or the current one) as they went,
    then the rest as the strategy plans them if all goes well (as `gitopsd diff --plan`)."""
    steps: list[dict[str, Any]] = []
    for entry in journal:
        steps.append(_journal_step(entry, row.version))
    try:
        spec = RolloutSpec.from_json(row.context)
        plan = build_strategy(spec).plan(spec.plan_context())
        step: Step = next(plan)
        for entry in journal:
            if json.loads(json.dumps(step_to_json(step))) != entry.step or isinstance(step, Finish):
                return steps  # the journal left the plan (an abort, a rollback): it is all
            outcome = (
                outcome_from_json(entry.outcome)
                if entry.outcome is not None
                else healthy_outcome(step)
            )
            step = plan.send(outcome)
        eta = (journal[-1].deadline or now) if journal and journal[-1].outcome is None else now
        for _ in range(MAX_PLAN_STEPS):
            item: dict[str, Any] = {
                "seq": len(steps),
                "kind": step.kind,
                "label": describe_step(step, row.version),
                "status": "planned",
                "startedAt": None,
                "finishedAt": None,
                "deadline": None,
                "message": "",
                "verdict": "",
                "failedNodes": [],
                "figures": {},
            }
            if isinstance(step, Wait):
                item["eta"] = iso(eta + step.seconds)
                eta += step.seconds
            steps.append(item)
            if isinstance(step, Finish):
                break
            step = plan.send(healthy_outcome(step))
    except (StopIteration, KeyError, TypeError, ValueError):
        pass  # a plan that cannot be previewed: the journal is still shown as it is
    return steps


def _journal_step(entry: JournalRow, version: str) -> dict[str, Any]:
    step = step_from_json(entry.step)
    outcome = outcome_from_json(entry.outcome) if entry.outcome is not None else None
    status = "current" if outcome is None else ("done" if outcome.ok else "failed")
    return {
        "seq": entry.seq,
        "kind": step.kind,
        "label": describe_step(step, version),
        "status": status,
        "startedAt": iso(entry.started_at),
        "finishedAt": iso(entry.finished_at),
        "deadline": iso(entry.deadline),
        "message": outcome.message if outcome else "",
        "verdict": outcome.verdict if outcome else "",
        "failedNodes": [
            {"node": r.node, "detail": r.detail}
            for r in (outcome.nodes if outcome else ())
            if not r.ok
        ],
        "figures": dict(outcome.figures) if outcome else {},
    }


def analysis_json(row: RolloutRow, journal: list[JournalRow]) -> list[dict[str, Any]]:
    """Each analysis of the rollout: its figures against the autoRollback thresholds (Analyze)
    or canary against baseline (Compare)."""
    triggers = {str(m): float(t) for m, t in row.context.get("triggers", ())}
    out = []
    stage = 0
    for entry in journal:
        step = step_from_json(entry.step)
        if not isinstance(step, Analyze | Compare) or entry.outcome is None:
            continue
        stage += 1
        outcome = outcome_from_json(entry.outcome)
        figures = []
        for metric, value in sorted(outcome.figures.items()):
            threshold = triggers.get(metric)
            figures.append(
                {
                    "metric": metric,
                    "value": value,
                    "threshold": threshold,
                    "breached": threshold is not None and value > threshold,
                }
            )
        out.append(
            {
                "stage": stage,
                "seq": entry.seq,
                "label": describe_step(step, row.version),
                "verdict": outcome.verdict,
                "ok": outcome.ok,
                "message": outcome.message,
                "figures": figures,
            }
        )
    return out


def function_json(
    store: Store,
    name: str,
    desired: DesiredState | None,
    live: LiveState,
    notes: Mapping[str, Mapping[str, Any]],
    audit: list[dict[str, Any]],
    now: float,
) -> dict[str, Any] | None:
    """The document of `/functions/{name}` and `/api/functions/{name}`; None if unknown."""
    rows = store.rollouts(name, limit=HISTORY_LIMIT)
    fn = desired.functions.get(name) if desired else None
    on_nodes = [n for n in live.nodes.values() if name in n.functions]
    if fn is None and not rows and not on_nodes:
        return None
    row = rows[0] if rows else None
    controls = store.controls(name)
    regions = {n: d.region for n, d in desired.nodes.items()} if desired else {}
    targets = set(desired.targets_of(name)) if fn is not None and desired else set()
    nodes: list[dict[str, Any]] = []
    serving: set[str] = set()
    for node in sorted(targets | {n.name for n in on_nodes}, key=lambda n: (regions.get(n, ""), n)):
        inv = live.nodes.get(node)
        lf = inv.functions.get(name) if inv else None
        serving |= {v for v, p in (lf.traffic if lf else ()) if p > 0}
        nodes.append(
            {
                "node": node,
                "region": (inv.region if inv else "") or regions.get(node, ""),
                "reachable": inv is not None,
                "error": live.errors.get(node, ""),
                "versions": sorted(lf.versions) if lf else [],
                "traffic": [{"version": v, "percent": p} for v, p in (lf.traffic if lf else ())],
            }
        )
    head = _as_head(row) if row else None
    state = classify(
        fn.spec.version if fn else None,
        serving,
        any(not n["reachable"] for n in nodes),
        head,
        controls,
        store.get(f"waiting:{name}") or "",
    )
    waiting = why_waiting(store, name, row)
    rollout = None
    if row is not None:
        journal = store.journal(row.id)
        plan = plan_json(row, journal, now)
        next_wait = next(
            (s for s in plan if s["kind"] == "wait" and s["status"] in ("current", "planned")),
            None,
        )
        rollout = {
            **_head_json(row),
            "plan": plan,
            "nextWait": None
            if next_wait is None
            else {
                "label": next_wait["label"],
                "until": next_wait.get("deadline") or next_wait.get("eta"),
                "current": next_wait["status"] == "current",
            },
            "analysis": analysis_json(row, journal),
            "failedStep": summarize_rollout(store, row).failed_step
            if row.state in FINAL_BAD
            else None,
        }
    return {
        "function": name,
        "desiredVersion": fn.spec.version if fn else None,
        "strategy": fn.spec.strategy.type if fn else (row.strategy if row else None),
        "source": fn.source if fn else None,
        **_state_json(state),
        "waiting": waiting,
        "held": controls.held,
        "paused": controls.paused,
        "nodes": nodes,
        "rollout": rollout,
        "history": [
            {**_head_json(r), "note": notes.get(r.commit, {}).get("functions", {}).get(name)}
            for r in rows
        ],
        "actions": available_actions(row, controls.paused, controls.held, rows),
        "audit": audit,
    }


def _as_head(row: RolloutRow) -> RolloutHead:
    return RolloutHead(
        row.id,
        row.function,
        row.version,
        row.commit,
        row.strategy,
        row.state,
        row.message,
        row.step,
        row.created_at,
        row.updated_at,
        row.finished_at,
    )


def available_actions(
    row: RolloutRow | None, paused: bool, held: bool, rows: list[RolloutRow]
) -> list[str]:
    """The operator commands that mean something now, in the CLI's names."""
    out = []
    active = row is not None and row.state not in FINAL_STATES
    if active and not paused and row is not None and row.state != RolloutState.DRAFT:
        out.append("pause")
    if paused or held or (row is not None and row.state == RolloutState.PAUSED):
        out.append("resume")
    if active and row is not None and row.state not in (RolloutState.DRAFT, RolloutState.PAUSED):
        out.append("promote")
    if active:
        out.append("abort")
    if row is not None and row.state == RolloutState.DRAFT:
        out.append("approve")
    if any(r.state == RolloutState.COMPLETED for r in rows):
        out.append("rollback")
    return out


# one rollout -----------------------------------------------------------------------------------


def rollout_json(store: Store, rollout_id: str, now: float) -> dict[str, Any] | None:
    """The document of `/rollouts/{id}` and `/api/rollouts/{id}`; None if unknown."""
    row = store.rollout(rollout_id)
    if row is None:
        return None
    journal = store.journal(row.id)
    timeline = [_journal_step(e, row.version) for e in journal]
    failures = [
        {"seq": s["seq"], "label": s["label"], "message": s["message"], "nodes": s["failedNodes"]}
        for s in timeline
        if s["status"] == "failed" or s["failedNodes"]
    ]
    result = summarize_rollout(store, row)
    return {
        **_head_json(row),
        "function": row.function,
        "timeline": timeline,
        "failures": failures,
        "failedStep": result.failed_step,
        "nodes": [n["name"] for n in row.context.get("nodes", [])],
        "generatedAt": iso(now),
    }
