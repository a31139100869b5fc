"""Human output: diffs coloured like `git diff`, plans, and one line per rollout event."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import click

from gitopsd.diff import Action, Change, ChangeSet
from gitopsd.errors import InvalidManifests
from gitopsd.fleet.tokens import NOT_ALLOWED, REFUSED_TOKEN, node_problem
from gitopsd.rollout.engine import RolloutEvent
from gitopsd.rollout.preview import describe_step
from gitopsd.rollout.steps import Step

_MARK = {
    Action.DEPLOY: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.PRUNE: ("-", "red"),
    Action.UNKNOWN: ("?", "magenta"),
}


def echo(text: str = "", **style: object) -> None:
    click.echo(click.style(text, **style) if style else text, color=sys.stdout.isatty())  # type: ignore[arg-type]


def render_change(change: Change) -> None:
    mark, colour = _MARK.get(change.action, ("?", "white"))
    live = ", ".join(change.live_versions) or "nothing"
    unknown = sum(1 for n in change.nodes if n.action is Action.UNKNOWN)
    if change.action is Action.UNKNOWN:
        live = "(no target node answered)"  # what they run is unknown, not "nothing"
    elif unknown:
        live += f" ({unknown} node{'s' if unknown > 1 else ''} unknown)"
    if change.action is Action.PRUNE:
        head = f"{mark} {change.action} {change.function} ({live})"
    else:
        head = f"{mark} {change.action} {change.function} {live} -> {change.version}"
    echo(head, fg=colour, bold=True)
    for node in change.nodes:
        # A node that did not answer is named once, with why, under the changes (`! NODE`):
        # repeated for every function it would drown the rest.
        if node.action not in (Action.OK, Action.UNKNOWN):
            echo(f"    {node.node}: {node.action} ({node.detail})", fg=colour)


def render_changes(changes: ChangeSet, plans: dict[str, Sequence[Step]] | None = None) -> None:
    echo(f"commit {changes.commit or '(working tree)'}", fg="cyan")
    for change in changes.changes:
        render_change(change)
        if plans is not None and change.only_unreachable:
            # A sync starts no rollout for it (reconcile.py waits for the nodes): no plan.
            echo("      no rollout: only nodes that did not answer differ", dim=True)
        for i, step in enumerate((plans or {}).get(change.function, ())):
            echo(f"      {i + 1:>2}. {describe_step(step)}")
    render_node_problems(changes.unreachable)
    echo(f"Plan: {changes.summary}.", bold=True)


def render_node_problems(errors: Mapping[str, str]) -> None:
    """One line per node that did not answer, with why (a refused token is not
    "unreachable"): said once, however many functions the node runs."""
    for node, error in sorted(errors.items()):
        echo(f"! {node} {node_problem(error)}", fg="red")


NOT_CONNECTED = "not connected to the controller"  # a dial-out node's tunnel (fleet/tunnel.py)


def node_problem_short(error: str) -> str:
    """The kind of a node's problem, for a line that refers to the full one."""
    if REFUSED_TOKEN in error:
        return "refused our token"
    if NOT_ALLOWED in error:
        return "not asked: outside [fleet] allowed_addresses"
    if NOT_CONNECTED in error:
        return "dial-out, not connected to the controller"
    return "unreachable"


def render_problems(exc: InvalidManifests) -> None:
    for problem in exc.problems:
        click.echo(str(problem), err=True)


def render_event(event: RolloutEvent) -> None:
    """One line per step start and end, for logs and non-TTY output."""
    prefix = f"[{event.function} {event.version}] {event.seq + 1:>2}."
    text = describe_step(event.step)
    if event.outcome is None:
        # Only waits announce their start: everything else is reported once, when it ends.
        if event.deadline is not None:
            until = datetime.fromtimestamp(event.deadline, UTC).strftime("%H:%M:%S")
            echo(f"{prefix} {text} (until {until} UTC) ...")
        return
    if event.replayed:
        echo(f"{prefix} {text}: done before restart", dim=True)
        return
    status = "ok" if event.outcome.ok else "FAILED"
    message = event.outcome.message
    detail = f" - {message}" if message and message not in text else ""
    echo(f"{prefix} {text}: {status}{detail}", fg="green" if event.outcome.ok else "red")
