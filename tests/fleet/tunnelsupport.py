"""Helpers for dial-out tests: a mixed fleet, waiting for tunnels, a syncer that reaches both."""

from __future__ import annotations

import time
from pathlib import Path

from gitopsd.reconcile import Reconciler
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import HookClock, Syncer


def wait_until(condition: object, what: str, seconds: float = 20.0) -> None:
    """Poll `condition()` (a test helper's wait for a background connection, not a timing
    assertion: it only bounds how long a broken build hangs)."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_connected(fleet: Fleet, *names: str) -> None:
    for name in names:
        wait_until(lambda n=name: fleet.connected(n), f"{name}'s tunnel")


def mixed_fleet(fleet: Fleet) -> None:
    """Two addressed agents and two dial-out agents in two regions."""
    fleet.add("edge-a", "us-east", tier="prod")
    fleet.add_dial_out("edge-nat-1", "us-east", tier="prod")
    fleet.add("edge-b", "eu-central", tier="prod")
    fleet.add_dial_out("edge-nat-2", "eu-central", tier="prod")
    wait_connected(fleet, "edge-nat-1", "edge-nat-2")


def tunnel_syncer(state: Path, remote: GitRemote, fleet: Fleet, clock: HookClock) -> Syncer:
    """`sync --once` whose controller holds the fleet secret and the tunnel's relay."""
    sync = Syncer(state, remote, clock)
    sync.reconciler = Reconciler(sync.store, state, clock, fleet.auth())
    return sync
