"""What the status page needs from whoever serves it (the daemon, a test, the benchmark).

The page reads the state store itself; the desired state, the agents' inventories, the
Git commit and the operator's rollback differ between callers and come in as ports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gitopsd.fleet.live import LiveState
from gitopsd.manifest.desired import DesiredState
from gitopsd.store.protocol import Store
from gitopsd.store.rows import RolloutRow
from gitopsd.ui.events import EventBus


@dataclass(frozen=True)
class CommitInfo:
    """The synced commit as the overview shows it."""

    sha: str
    message: str
    author: str
    time: float
    signature: str  # "verified", "signed, not verified here", "unsigned"


@dataclass(frozen=True)
class UiPorts:
    """Everything the page reads or does besides the store."""

    store: Store
    events: EventBus
    desired: Callable[[], DesiredState | None]
    live: Callable[[], Awaitable[LiveState]]
    commit: Callable[[str], Awaitable[CommitInfo | None]]
    notes: Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]
    rollback: Callable[[str, str | None], Awaitable[RolloutRow]] | None = None
    # `gitopsd pause|resume|promote|abort|approve FUNCTION` (action, function) -> what it
    # prints; blocking (the server runs it in a thread). None: the page cannot act.
    control: Callable[[str, str], str] | None = None
    daemon_error: Callable[[], str] = lambda: ""


async def no_commit(_sha: str) -> CommitInfo | None:
    """A `commit` port for callers without a Git repository."""
    return None


async def no_notes(_shas: list[str]) -> dict[str, dict[str, Any]]:
    """A `notes` port for callers without a Git repository."""
    return {}
