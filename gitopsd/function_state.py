"""The states a function can be reported in, typed: one enum per concept, no bare strings.

A rollout has its own lifecycle (`RolloutState`, journaled by the engine). A reconcile pass
also reports functions for which no rollout says what happened (`PassState`): pruned, held
by an operator, blocked by `dependsOn`, waiting for unreachable nodes or for a deploy
window. Both are `StrEnum`s whose values are the names written into notes, JSON output and
the store, so that those contracts stay exactly what they were.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from gitopsd.rollout.steps import RolloutState

__all__ = ["FunctionState", "NoteStatus", "PassState", "RolloutState", "parse_function_state"]


class PassState(StrEnum):
    """What a pass reports for a function when no rollout state says it."""

    PRUNED = "PRUNED"  # removed from the fleet (no longer in Git, prune on)
    PRUNE_FAILED = "PRUNE_FAILED"
    PRUNE_REFUSED = "PRUNE_REFUSED"  # Git names no function at all (source.allow_empty off)
    HELD = "HELD"  # `gitopsd rollback` holds a version until released
    BLOCKED = "BLOCKED"  # a `dependsOn` function is not healthy
    WAITING_FOR_NODES = "WAITING_FOR_NODES"  # nodes unreachable: completes once they answer
    PAUSED_BY_OPERATOR = "PAUSED_BY_OPERATOR"  # `gitopsd pause`
    WAITING_FOR_WINDOW = "WAITING_FOR_WINDOW"  # outside its deploy windows: starts later


FunctionState = RolloutState | PassState
"""What a pass reports for one function."""

NoteStatus = Literal["pending", "success", "failure"]
"""The overall status of a commit (and of each function) in its note."""


def parse_function_state(text: str) -> FunctionState:
    """The state named `text` (read back from the store or a note); ValueError if none."""
    for kind in (RolloutState, PassState):
        try:
            return kind(text)
        except ValueError:
            continue
    raise ValueError(f"not a function state: {text!r}")
