"""How the daemon and `gitopsd sync` feed the dispatcher: the engine's events, drift seen
in a pass, and rollouts left waiting for `gitopsd approve`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gitopsd.diff import Action, ChangeSet
from gitopsd.function_state import RolloutState
from gitopsd.manifest.desired import DesiredState
from gitopsd.notify.dispatcher import NotificationDispatcher, dispatcher_from_config
from gitopsd.store.protocol import Store

if TYPE_CHECKING:
    from gitopsd.config import NotifyConfig
    from gitopsd.reconcile import FunctionResult, Reconciler
    from gitopsd.rollout.engine import EventSink, RolloutEvent


def fan_out(*sinks: EventSink) -> EventSink:
    """One EventSink that hands each event to every sink, in order."""

    def sink(event: RolloutEvent) -> None:
        for each in sinks:
            each(event)

    return sink


def commit_lookup(store: Store) -> Callable[[str], str]:
    """The commit a rollout was started for (its notifications name it)."""

    def commit_of(rollout_id: str) -> str:
        row = store.rollout(rollout_id)
        return row.commit if row is not None else ""

    return commit_of


def is_drift(store: Store, function: str, version: str, sha256: str) -> bool:
    """True when the last finished rollout already put this very version out: the fleet
    moved away from it (the daemon's rule for selfHeal: gitopsd/reconcile/policy.py)."""
    from gitopsd.reconcile.policy import is_drift as drifted  # the one rule; no import cycle

    return drifted(store.rollouts(function, limit=5), version, sha256)


def observe_drift(
    notes: NotificationDispatcher, store: Store, desired: DesiredState, changes: ChangeSet
) -> None:
    """Tell `drift_found` for every function whose fleet left a completed version."""
    drifted = set()
    for change in changes.changes:
        fn = desired.functions.get(change.function)
        if fn is None or change.action is Action.PRUNE or change.only_unreachable:
            continue
        if is_drift(store, fn.name, fn.spec.version, fn.module.sha256):
            drifted.add(fn.name)
            notes.drift(fn.name, fn.spec.version, change.reason, desired.commit)
    for name in desired.functions:
        if name not in drifted:
            notes.drift_healed(name)


def observe_results(
    notes: NotificationDispatcher, results: Iterable[FunctionResult], commit: str = ""
) -> None:
    """Rollouts a pass left waiting for `gitopsd approve` (told once per rollout); the
    commit is the rollout's own when not given."""
    for result in results:
        if result.state == RolloutState.DRAFT and result.rollout_id:
            rollout = result.rollout_id
            sha = commit or notes.commit_of(rollout)
            notes.draft(result.function, result.version, rollout, sha)


@contextlib.asynccontextmanager
async def notifying(
    rec: Reconciler, entries: Sequence[NotifyConfig], state_dir: Path
) -> AsyncIterator[NotificationDispatcher]:
    """`gitopsd sync`'s dispatcher for one pass: the reconciler's engine events go to it too;
    on the way out it waits a little for deliveries (what is left is sent by the next run)."""
    notes = dispatcher_from_config(entries, state_dir, commit_lookup(rec.store))
    before = rec.on_event
    rec.on_event = fan_out(before, notes.rollout_sink) if before else notes.rollout_sink
    try:
        async with notes:
            yield notes
    finally:
        rec.on_event = before
