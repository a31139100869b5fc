"""When each pending rollout would start, under its deploy windows (`diff --plan`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gitopsd.cli.output import echo
from gitopsd.diff import Action
from gitopsd.manifest.deploy_windows import start_message, window_state
from gitopsd.reconcile.results import ReadResult


def start_times(read: ReadResult, now: float) -> dict[str, dict[str, Any]]:
    """Function -> {now, at, message} for every pending rollout of a function with windows."""
    out: dict[str, dict[str, Any]] = {}
    for change in read.changes.changes:
        fn = read.desired.functions.get(change.function)
        if fn is None or change.action is Action.PRUNE or fn.spec.deploy_windows is None:
            continue
        windows = fn.spec.deploy_windows.windows
        state = window_state(windows, now)
        at = now if state.open else state.changes_at
        out[fn.name] = {
            "now": state.open,
            "at": datetime.fromtimestamp(at, UTC).isoformat() if at is not None else None,
            "message": start_message(windows, now),
        }
    return out


def render_starts(starts: dict[str, dict[str, Any]]) -> None:
    for name, start in starts.items():
        text = f"starts {start['message']}" if start["now"] else start["message"]
        echo(f"{name}: {text}", fg="green" if start["now"] else "yellow")
