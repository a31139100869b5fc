"""What a pass read and what it did: ReadResult, FunctionResult per function, SyncReport."""

from __future__ import annotations

from dataclasses import dataclass, field

from gitopsd.diff import ChangeSet
from gitopsd.fleet.live import LiveState
from gitopsd.function_state import FunctionState, NoteStatus, PassState, RolloutState
from gitopsd.manifest.desired import DesiredState
from gitopsd.report.notes import CommitOutcome, FunctionOutcome
from gitopsd.source.snapshot import Snapshot

# States in which nothing failed: the function is where it should be, or starts later.
OK_STATES: frozenset[FunctionState] = frozenset(
    {
        RolloutState.COMPLETED,
        PassState.PRUNED,
        PassState.HELD,
        RolloutState.DRAFT,
        PassState.PAUSED_BY_OPERATOR,
        PassState.WAITING_FOR_WINDOW,  # outside its deploy windows: it starts later
    }
)
# States that leave the commit's note "pending": it completes by itself (or on approval).
PENDING_STATES: frozenset[FunctionState] = frozenset(
    {
        RolloutState.DRAFT,
        RolloutState.IN_PROGRESS,
        RolloutState.PENDING,
        PassState.PAUSED_BY_OPERATOR,
        PassState.WAITING_FOR_NODES,
        PassState.WAITING_FOR_WINDOW,
    }
)


@dataclass(frozen=True)
class ReadResult:
    """Desired and live state of one pass, and their diff."""

    snapshot: Snapshot
    desired: DesiredState
    live: LiveState
    changes: ChangeSet


@dataclass(frozen=True)
class FunctionResult:
    """What a pass did with one function."""

    function: str
    version: str
    action: str
    state: FunctionState
    message: str
    strategy: str = ""
    nodes_ok: tuple[str, ...] = ()
    nodes_failed: tuple[str, ...] = ()
    failed_step: str | None = None
    rollout_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in OK_STATES

    @property
    def note_status(self) -> NoteStatus:
        if self.state in PENDING_STATES:
            return "pending"
        return "success" if self.ok else "failure"


@dataclass(frozen=True)
class SyncReport:
    """Everything one pass did."""

    commit: str
    changes: ChangeSet
    results: tuple[FunctionResult, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.results)

    def outcome(self) -> CommitOutcome:
        failed = [r for r in self.results if not r.ok]
        # Nodes that are down leave the commit unfinished, not failed: it completes once
        # they answer.
        waiting = all(r.state == PassState.WAITING_FOR_NODES for r in failed) and not self.problems
        status: NoteStatus = "success" if self.ok else "pending" if waiting else "failure"
        if self.ok and any(r.note_status == "pending" for r in self.results):
            status = "pending"
        message = (
            "; ".join(f"{r.function}: {r.message}" for r in failed) or self.changes.summary
            if self.results
            else "fleet already matches this commit"
        )
        return CommitOutcome(
            commit=self.commit,
            status=status,
            message=message,
            functions={
                r.function: FunctionOutcome(
                    status=r.note_status,
                    version=r.version,
                    strategy=r.strategy,
                    state=r.state,
                    nodes_ok=r.nodes_ok,
                    nodes_failed=r.nodes_failed,
                    failed_step=r.failed_step,
                    message=r.message,
                )
                for r in self.results
            },
        )
