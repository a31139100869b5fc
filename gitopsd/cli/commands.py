"""Bodies of the CLI commands (kept apart from click wiring so they import lazily)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from gitopsd.cli.context import Ctx
from gitopsd.cli.output import (
    echo,
    node_problem_short,
    render_changes,
    render_event,
    render_node_problems,
)
from gitopsd.cli.readonly import existing_store, nothing_recorded, store_opened_on_use
from gitopsd.clock import SystemClock
from gitopsd.errors import ConfigError
from gitopsd.fleet.client import AgentClient
from gitopsd.notify.dispatcher import NotificationDispatcher
from gitopsd.notify.wiring import notifying
from gitopsd.reconcile import Reconciler
from gitopsd.reconcile.keys import retry_key, waiting_key
from gitopsd.reconcile.outcomes import Publish
from gitopsd.reconcile.policy import WAITS_FOR_OPERATOR
from gitopsd.reconcile.summary import ended_paused
from gitopsd.reconcile.targets import build_spec
from gitopsd.report.notes import CommitOutcome
from gitopsd.report.publisher import publish_now
from gitopsd.rollout.engine import EventSink
from gitopsd.rollout.preview import preview
from gitopsd.rollout.steps import RolloutState, Step
from gitopsd.rollout.strategies import strategy_for
from gitopsd.source.ancestry import REFUSED_HEAD_KEY
from gitopsd.source.git import SourceSpec
from gitopsd.source.redact import redact
from gitopsd.store.open import open_store
from gitopsd.store.protocol import Store


def reconciler(ctx: Ctx, on_event: EventSink | None = None, read_only: bool = False) -> Reconciler:
    """The Reconciler of this invocation; `read_only` (diff): its store is opened only if
    something uses it, so reading creates no state database."""
    cfg = ctx.config.fleet
    return Reconciler(
        store_opened_on_use(ctx) if read_only else open_store(ctx.config, ctx.state_dir),
        ctx.state_dir,
        SystemClock(),
        ctx.agent_token(),
        timeout=cfg.timeout,
        concurrency=cfg.concurrency,
        on_event=on_event,
        allow_empty=ctx.config.source.allow_empty,
    )


def run_diff(
    ctx: Ctx, source: SourceSpec, plan: bool, output: str, what_if: str | None = None
) -> bool:
    """Print the diff (and plans, and where they go under `what_if`'s injected outcomes:
    gitopsd/rollout/whatif.py); True when something would change."""
    from gitopsd.cli.starts import render_starts, start_times
    from gitopsd.cli.whatif import render_what_if, what_if_json, what_if_plans
    from gitopsd.fleet.presence import presence_of

    rec = reconciler(ctx, read_only=True)
    read = asyncio.run(rec.read(source))
    presence = presence_of(ctx.agent_token(), {n: d.address for n, d in read.desired.nodes.items()})
    plans: dict[str, Sequence[Step]] = {}
    if plan:
        for change in read.changes.changes:
            fn = read.desired.functions.get(change.function)
            # Only nodes that did not answer differ: a sync waits for them, plans nothing.
            if fn is not None and not change.only_unreachable:
                spec = build_spec(fn, read.desired, read.live, change)
                plans[fn.name] = preview(strategy_for(fn.spec.strategy), spec.plan_context())
    what_ifs = what_if_plans(read, what_if) if what_if is not None else None
    starts = start_times(read, SystemClock().now()) if plan else {}
    if output == "json":
        doc = read.changes.to_json()
        if plan:
            from gitopsd.cli.json_documents import plan_step_json

            doc["plans"] = {k: [plan_step_json(s) for s in v] for k, v in plans.items()}
        if presence is not None:
            doc["dialOut"] = presence.to_json()
        if what_ifs is not None:
            doc["whatIf"] = what_if_json(what_ifs)
        if starts:
            doc["starts"] = starts
        click.echo(json.dumps(doc, indent=2))
    else:
        render_changes(read.changes, plans if plan else None)
        render_starts(starts)
        if what_ifs is not None:
            render_what_if(what_ifs)
        for text, fine in presence.lines() if presence is not None else ():
            echo(text, fg="green" if fine else "yellow")
    return bool(read.changes.changes)


def run_sync(ctx: Ctx, source: SourceSpec, once: bool, dry_run: bool) -> bool:
    """One pass (or passes every source.interval until interrupted); True when all went well."""
    if dry_run:
        return not run_diff(ctx, source, plan=True, output="text")
    rec = reconciler(ctx, on_event=render_event)
    while True:
        if sys.stdout.isatty():
            from gitopsd.cli.progress import ProgressDisplay

            with ProgressDisplay() as display:
                rec.on_event = display
                ok = asyncio.run(_sync_pass(ctx, rec, source))
        else:
            ok = asyncio.run(_sync_pass(ctx, rec, source))
        if once:
            return ok
        asyncio.run(SystemClock().sleep_until(SystemClock().now() + ctx.config.source.interval))


async def _sync_pass(ctx: Ctx, rec: Reconciler, source: SourceSpec) -> bool:
    from gitopsd.report.forges import reporter_from_config

    async with (
        notifying(rec, ctx.config.notify, ctx.state_dir) as notes,
        reporter_from_config(ctx.config.status.forges) as forges,
    ):
        return await _sync_and_report(ctx, rec, source, forges, notes)


def _publisher(ctx: Ctx, source: SourceSpec, forges: Any) -> Publish:
    """The git note, then the forge statuses (waited for: `sync --once` exits after)."""
    status = ctx.config.status

    async def publish(outcome: CommitOutcome) -> None:
        await publish_now(
            source,
            ctx.state_dir,
            outcome,
            forges,
            git_notes=status.git_notes,
            push=status.push_notes,
        )

    return publish


async def _sync_and_report(
    ctx: Ctx, rec: Reconciler, source: SourceSpec, forges: Any, notes: NotificationDispatcher
) -> bool:
    """One pass (gitopsd/reconcile/pipeline.py), then each function's outcome printed."""
    report = await rec.sync(source, _publisher(ctx, source, forges), notes, render_changes)
    for result in report.results:
        colour = "green" if result.ok else "red"
        echo(f"{result.function} {result.version}: {result.state} - {result.message}", fg=colour)
    return report.ok


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def run_status(ctx: Ctx, function: str | None, output: str) -> None:
    from gitopsd.fleet.presence import presence_of
    from gitopsd.ha.status import leadership_for
    from gitopsd.status import all_functions, function_status

    store = existing_store(ctx)  # reading creates nothing: no database is nothing recorded
    desired, live, note = asyncio.run(_desired_and_live(ctx, store))
    nodes = {n: d.address for n, d in desired.nodes.items()} if desired is not None else {}
    presence = presence_of(ctx.agent_token(), nodes) if nodes or ctx.config.fleet.listen else None
    daemon_error = (store.get("daemon:last_error") if store else None) or ""
    if daemon_error:
        note = f"{note}; " if note else ""
        note += f"the daemon cannot reconcile: {daemon_error}"
    refused = (store.get(REFUSED_HEAD_KEY) if store else None) or ""
    if refused:
        note = f"{note}; " if note else ""
        note += f"the newest head was not applied: {refused}"
    if store is None:
        note = f"{note}; " if note else ""
        note += nothing_recorded(ctx, "rollout")
    note = redact(note)  # errors name the source URL: never with its password
    names = [function] if function else all_functions(store, desired, live)
    docs = [function_status(store, name, desired, live) for name in names]
    leadership = leadership_for(store, ctx.config.ha.shards)  # None with SQLite
    if output == "json":
        document: dict[str, Any] = {"functions": docs, "note": note}
        if leadership is not None:
            document.update(leadership.json_fields())  # "leader" (and "shards")
        if presence is not None:
            document["dialOut"] = presence.to_json()
        click.echo(json.dumps(document, indent=2))
        return
    for line in leadership.lines() if leadership is not None else ():
        click.echo(line)
    if note:
        echo(note, fg="yellow")
    for text, fine in presence.lines() if presence is not None else ():
        echo(text, fg="green" if fine else "yellow")
    if not docs:
        where = f": {nothing_recorded(ctx, 'rollout')}" if store is not None else ""
        click.echo(f"no functions known yet{where}")  # (store None: the note said where)
    silent = {n["node"]: n["error"] for d in docs for n in d["nodes"] if not n["reachable"]}
    render_node_problems(silent)
    for d in docs:
        render_status(d)


# A rollout in one of these states has no current step to show.
ENDED = (RolloutState.COMPLETED, RolloutState.ROLLED_BACK, RolloutState.FAILED)


def render_status(d: dict[str, Any]) -> None:
    rollout = d["rollout"] or {}
    state = rollout.get("state", "-")
    colour = {
        RolloutState.COMPLETED: "green",
        RolloutState.ROLLED_BACK: "red",
        RolloutState.FAILED: "red",
    }.get(state, "yellow")
    echo(
        f"{d['function']}  desired {d['desiredVersion'] or '-'}  live "
        f"{', '.join(d['liveVersions']) or '-'}  [{rollout.get('strategy', '-')}] {state}",
        fg=colour,
        bold=True,
    )
    if rollout.get("step") and state not in ENDED:
        click.echo(f"  step:    {rollout['step']}")
    if d["waiting"]:
        click.echo(f"  waiting: {d['waiting']}")
    for node in d["nodes"]:
        if not node["reachable"]:
            # Why, in full, is said once per node above the functions (render_node_problems).
            problem = node_problem_short(node["error"])  # a refused token is not "unreachable"
            echo(f"  {node['region']:<12} {node['node']:<20} {problem}", fg="red")
            continue
        weights = ", ".join(f"{t['version']} {t['percent']:g}%" for t in node["traffic"])
        click.echo(f"  {node['region']:<12} {node['node']:<20} {weights}")


async def _desired_and_live(ctx: Ctx, store: Store | None) -> tuple[Any, Any, str]:
    """Desired state from the configured source (if any) and live state from its agents."""
    from gitopsd.errors import GitopsdError
    from gitopsd.fleet.live import LiveState
    from gitopsd.manifest.loader import load_snapshot
    from gitopsd.source.reader import take_snapshot

    desired = None
    note = ""
    addresses: dict[str, str] = {}
    if ctx.config.source.url:
        try:
            spec = ctx.source(None, None, None)
            desired = load_snapshot(await asyncio.to_thread(take_snapshot, spec, ctx.state_dir))
            addresses = {n: d.address for n, d in desired.nodes.items()}
        except GitopsdError as exc:
            note = f"desired state unknown: {str(exc).splitlines()[0]}"
    for row in store.rollouts(limit=200) if store is not None else []:
        for node in row.context.get("nodes", []):
            addresses.setdefault(node["name"], node["address"])
    if not addresses:
        return desired, LiveState(), note
    async with AgentClient(addresses, ctx.agent_token(), timeout=5.0, retries=0) as client:
        return desired, await client.live_state(addresses), note


def run_history(ctx: Ctx, function: str | None, output: str) -> None:
    store = existing_store(ctx)  # reading creates nothing
    rows = store.rollouts(function) if store is not None else []
    data: list[dict[str, Any]] = [
        {
            "id": r.id,
            "function": r.function,
            "version": r.version,
            "commit": r.commit,
            "strategy": r.strategy,
            "state": r.state,
            "message": r.message,
            "startedAt": _time(r.created_at),
            "finishedAt": _time(r.finished_at),
            "durationSeconds": round(r.finished_at - r.created_at, 3) if r.finished_at else None,
        }
        for r in rows
    ]
    if output == "json":
        click.echo(json.dumps({"rollouts": data}, indent=2))
        return
    if not data:
        what = f"rollout of {function}" if function else "rollout"
        click.echo(nothing_recorded(ctx, what))
    for d in data:
        click.echo(
            f"{d['startedAt']}  {d['function']:<20} {d['version']:<10} {d['commit'][:10]}  "
            f"{d['strategy']:<12} {d['state']:<12} {d['durationSeconds'] or '-'}s  {d['message']}"
        )


def run_rollback(ctx: Ctx, function: str, to_version: str | None) -> bool:
    """Roll back and print what happened; True when every node serves the chosen version."""
    from gitopsd.rollout.operator_rollback import rollback_function

    store = existing_store(ctx)
    if store is None or not store.rollouts(function, limit=1):
        raise ConfigError(f"{function}: nothing to roll back: {nothing_recorded(ctx, 'rollout')}")

    async def go() -> Any:
        async with AgentClient({}, ctx.agent_token(), ctx.config.fleet.timeout) as client:
            return await rollback_function(
                store, client, SystemClock(), function, to_version, render_event
            )

    row = asyncio.run(go())
    ok = bool(row.state == RolloutState.COMPLETED)
    echo(f"{function}: {row.state} - {row.message}", fg="green" if ok else "red")
    if ok:
        echo(store.controls(function).held_reason)
    return ok


def run_control(ctx: Ctx, action: str, function: str) -> str:
    """Record an operator's request; the engine (this or another process) acts on it."""
    store = existing_store(ctx)
    if store is None:  # nothing to act on: an error must not create a state database
        raise ConfigError(f"{function}: nothing to {action}: {nothing_recorded(ctx, 'rollout')}")
    now = SystemClock().now()
    active = [r for r in store.active_rollouts() if r.function == function]
    if action == "pause":
        if active:
            store.set_control(function, now, paused=1)
            return f"{function}: paused (the rollout stops before its next step)"
        if not store.rollouts(function, limit=1):
            what = f"rollout of {function}"
            raise ConfigError(f"{function}: nothing to pause: {nothing_recorded(ctx, what)}")
        store.set_control(function, now, paused=1)
        return (
            f"{function}: paused; no rollout of {function} is running: the next rollout of "
            f"{function} waits before its first step until `gitopsd resume {function}`"
        )
    if action == "resume":
        store.set_control(function, now, paused=0, held=0, held_reason="")
        store.put(waiting_key(function), "")  # what the last pass recorded: the next one says anew
        for row in active:
            if row.state != RolloutState.PAUSED:
                continue
            if ended_paused(store, row):
                # pauseOnFailure ended it: close it (FAILED: not all nodes took the version),
                # and the daemon rolls the version out anew.
                message = f"{row.message}; resumed by an operator: rolled out again"
                failed = RolloutState.FAILED
                store.update_rollout(row.id, now, state=failed, message=message, finished_at=now)
                store.put(retry_key(function), row.id)
                return f"{function}: resumed; {row.version} will be rolled out again"
            store.update_rollout(row.id, now, state=RolloutState.IN_PROGRESS, message="resumed")
        return f"{function}: resumed"
    if action == "promote":
        if not active:
            raise ConfigError(f"{function}: no rollout in progress to promote")
        store.set_control(function, now, promote=1)
        return f"{function}: promote requested"
    if action == "abort":
        if not active:
            raise ConfigError(f"{function}: no rollout in progress to abort")
        store.set_control(function, now, abort=1)
        for row in active:
            if row.state in WAITS_FOR_OPERATOR:
                store.update_rollout(row.id, now, state=RolloutState.IN_PROGRESS, aborting=1)
        return f"{function}: abort requested"
    if action == "approve":
        drafts = [r for r in active if r.state == RolloutState.DRAFT]
        if not drafts:
            raise ConfigError(f"{function}: no rollout waiting for approval")
        store.set_control(function, now, approved_version=drafts[-1].version)
        approved = RolloutState.APPROVED
        store.update_rollout(drafts[-1].id, now, state=approved, message="approved")
        return f"{function} {drafts[-1].version}: approved"
    print(f"unknown action {action}", file=sys.stderr)
    raise ConfigError(f"unknown action {action}")
