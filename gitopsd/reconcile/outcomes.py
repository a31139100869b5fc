"""The commit outcomes a pass publishes: the failure note of a refused commit, the
"pending" note of the rollouts it starts, and the final note followed by the last applied
commit. The pipeline (pipeline.py) is the one caller for `gitopsd sync`, the daemon and the
Python API; where the note goes (published at once, or queued) is the caller's `publish`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from gitopsd.diff import Action, ChangeSet
from gitopsd.errors import InvalidManifests
from gitopsd.function_state import RolloutState
from gitopsd.manifest.desired import DesiredFunction, DesiredState
from gitopsd.reconcile.results import FunctionResult, SyncReport
from gitopsd.report.notes import (
    CommitOutcome,
    FunctionOutcome,
    non_fast_forward_outcome,
    refused_outcome,
)
from gitopsd.source.ancestry import LAST_APPLIED_KEY, NonFastForward
from gitopsd.source.verify import SignatureRefused
from gitopsd.store.protocol import Store

Publish = Callable[[CommitOutcome], Awaitable[None]]
"""Publishes one outcome (git note, forge statuses): at once (CLI, API) or queued (daemon)."""

# What refuses a commit before anything of it is applied: its note says why.
Refusal = SignatureRefused | InvalidManifests | NonFastForward
REFUSALS = (SignatureRefused, InvalidManifests, NonFastForward)


def refusal_outcome(exc: Refusal) -> CommitOutcome:
    """The failure note of a commit refused before anything of it was applied."""
    if isinstance(exc, SignatureRefused):
        return refused_outcome(exc)
    if isinstance(exc, NonFastForward):
        return non_fast_forward_outcome(exc)
    return CommitOutcome(
        exc.commit,
        "failure",
        "invalid manifests; nothing applied",
        problems=tuple(str(p) for p in exc.problems),
    )


def started_outcome(commit: str, functions: Sequence[DesiredFunction]) -> CommitOutcome | None:
    """The "pending" note of the rollouts a pass starts (None: it starts none)."""
    if not functions:
        return None
    entries = {
        fn.name: FunctionOutcome(
            status="pending",
            version=fn.spec.version,
            strategy=fn.spec.strategy.type,
            state=RolloutState.IN_PROGRESS,
            message="rollout started",
        )
        for fn in functions
    }
    return CommitOutcome(commit, "pending", f"rolling out {', '.join(entries)}", entries)


def starting(
    desired: DesiredState, changes: ChangeSet, held: Callable[[DesiredFunction], str]
) -> list[DesiredFunction]:
    """The functions a one-shot pass is about to roll out, for its "pending" note. A held
    function starts none: its note must not say "rollout started"."""
    out = []
    for change in changes.changes:
        fn = desired.functions.get(change.function)
        if change.action is Action.PRUNE or change.only_unreachable or fn is None:
            continue
        if not held(fn):
            out.append(fn)
    return out


async def report_outcome(store: Store, publish: Publish, report: SyncReport) -> None:
    """The note of what a pass (or a rollout of the daemon's) finished, then the last applied
    commit when everything went well. A pass that found changes but finished none of them
    (all waiting in the background) leaves the "pending" note in place."""
    if report.results or not report.changes.changes:
        await publish(report.outcome())
    if report.ok:
        store.put(LAST_APPLIED_KEY, report.commit)


def finished_report(commit: str, results: Sequence[FunctionResult]) -> SyncReport:
    """The report of results that end apart from a pass (the daemon's rollout tasks, its
    prunes): its note names what ended, not the pass's changes."""
    return SyncReport(commit, ChangeSet(commit, (), ()), tuple(results))
