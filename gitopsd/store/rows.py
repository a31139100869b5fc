"""What the store holds, as values every store implementation returns (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gitopsd.rollout.steps import RolloutState

# Rollout states after which nothing more happens to a rollout (RolloutState.is_final).
FINAL_STATES: frozenset[RolloutState] = frozenset(s for s in RolloutState if s.is_final)

# Fields `Store.update_rollout` and `Store.set_control` accept; anything else is a bug.
ROLLOUT_FIELDS: frozenset[str] = frozenset({"state", "message", "step", "finished_at", "aborting"})
CONTROL_FIELDS: frozenset[str] = frozenset(
    {"paused", "held", "held_reason", "promote", "abort", "approved_version"}
)


@dataclass(frozen=True)
class RolloutRow:
    """A rollout as stored."""

    id: str
    function: str
    version: str
    commit: str
    strategy: str
    state: str
    message: str
    step: str
    context: Mapping[str, Any]
    created_at: float
    updated_at: float
    finished_at: float | None
    aborting: bool


@dataclass(frozen=True)
class JournalRow:
    """One journaled step; `outcome` is None while the step is under way."""

    seq: int
    step: Mapping[str, Any]
    outcome: Mapping[str, Any] | None
    started_at: float
    finished_at: float | None
    deadline: float | None


@dataclass(frozen=True)
class Controls:
    """Operator requests for one function (from the CLI, possibly another process)."""

    paused: bool = False
    held: bool = False
    held_reason: str = ""
    promote: bool = False
    abort: bool = False
    approved_version: str | None = None


class Record(Protocol):
    """A database row read by column name (sqlite3.Row, psycopg's dict rows)."""

    def __getitem__(self, key: str, /) -> Any: ...


def rollout_from_record(r: Record) -> RolloutRow:
    """A `rollouts` table row (SQLite or PostgreSQL, by column name) as a RolloutRow."""
    return RolloutRow(
        id=r["id"],
        function=r["function"],
        version=r["version"],
        commit=r["commit_sha"],
        strategy=r["strategy"],
        state=r["state"],
        message=r["message"],
        step=r["step"],
        context=json.loads(r["context"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        finished_at=r["finished_at"],
        aborting=bool(r["aborting"]),
    )


def journal_from_record(r: Record) -> JournalRow:
    """A `journal` table row (SQLite or PostgreSQL, by column name) as a JournalRow."""
    return JournalRow(
        seq=r["seq"],
        step=json.loads(r["step"]),
        outcome=json.loads(r["outcome"]) if r["outcome"] is not None else None,
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        deadline=r["deadline"],
    )


@dataclass(frozen=True)
class IntegrityReport:
    """The outcome of a store's integrity check: `problems` is empty when it is sound."""

    location: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        """The first problem, for one-line messages ("ok" when there is none)."""
        if not self.problems:
            return "ok"
        more = len(self.problems) - 1
        return self.problems[0] + (f" (and {more} more problem(s))" if more else "")
