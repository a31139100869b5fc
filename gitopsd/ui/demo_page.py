"""The status page of `gitopsd demo`: its address is printed when the agents are up, it
follows the demo's rollouts live, and on a terminal it stays up after the demo until Enter
is pressed (elsewhere the demo ends by itself, as before)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from gitopsd.errors import GitopsdError
from gitopsd.manifest.desired import DesiredState
from gitopsd.reconcile import Reconciler
from gitopsd.rollout.engine import EventSink, RolloutEvent
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import current_commit
from gitopsd.store.sqlite import SqliteStore
from gitopsd.ui.events import EventBus
from gitopsd.ui.fleet_reader import FleetReader
from gitopsd.ui.ports import UiPorts, no_commit, no_notes
from gitopsd.ui.standalone import PageThread


class SyncedState:
    """The desired state of the commit the demo's repository points at, loaded once per
    commit from the reconciler's copy (never fetched here: the demo's sync fetches)."""

    def __init__(self, reconciler: Reconciler, source: SourceSpec, state_dir: Path) -> None:
        self._reconciler = reconciler
        self._source = source
        self._state_dir = state_dir
        self._desired: DesiredState | None = None

    def __call__(self) -> DesiredState | None:
        try:
            commit = current_commit(self._source, self._state_dir, fetch=False)
            if self._desired is None or self._desired.commit != commit:
                self._desired = self._reconciler.load(self._source, fetch=False)[1]
        except GitopsdError:
            pass  # no commit yet, or a bad one: keep what was shown
        return self._desired


def open_demo_page(
    reconciler: Reconciler, store: SqliteStore, source: SourceSpec, state_dir: Path
) -> PageThread:
    """Serve a read-only page for the demo and feed it the reconciler's rollout events."""
    bus = EventBus()
    desired = SyncedState(reconciler, source, state_dir)
    fleet = FleetReader(desired, lambda: reconciler.client({}))
    ports = UiPorts(store, bus, desired, fleet.live, no_commit, no_notes)
    page = PageThread(ports, on_close=(fleet.aclose,))
    shown: EventSink = reconciler.on_event or (lambda _e: None)

    def both(event: RolloutEvent) -> None:
        shown(event)
        bus.rollout_sink(event)

    reconciler.on_event = both
    click.secho(f"status page: {page.url}  (live while the demo runs)", bold=True)
    return page


def close_demo_page(page: PageThread) -> None:
    """On a terminal, keep the page up until Enter; then (or at once) stop it."""
    if sys.stdin.isatty():
        click.secho(f"\nstatus page still at {page.url}: press Enter to stop", bold=True)
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            input()
    page.close()
