"""A function's state on the page: one word, its shape, and the sentence saying why.

The words are the issue's: in sync, rolling out, waiting, held, drifted, failed (plus
paused, and unknown while nothing is known of it). Each has a shape as well as a colour
(style.css), so the page reads the same in grey scale and to a screen reader.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitopsd.function_state import RolloutState
from gitopsd.store.sqlite import Controls
from gitopsd.ui.readmodel import RolloutHead

ACTIVE = frozenset({RolloutState.PENDING, RolloutState.IN_PROGRESS, RolloutState.APPROVED})
FINAL_BAD = frozenset({RolloutState.ROLLED_BACK, RolloutState.FAILED})

# state -> (label, shape): the shape is drawn by CSS and named for screen readers.
STATES: dict[str, tuple[str, str]] = {
    "in-sync": ("in sync", "circle"),
    "rolling-out": ("rolling out", "arrow"),
    "waiting": ("waiting", "hourglass"),
    "paused": ("paused", "bars"),
    "held": ("held", "square"),
    "drifted": ("drifted", "diamond"),
    "failed": ("failed", "cross"),
    "unknown": ("unknown", "ring"),
}


@dataclass(frozen=True)
class FunctionState:
    """`key` names the state (a key of STATES); `detail` says why, in one sentence."""

    key: str
    detail: str = ""

    @property
    def label(self) -> str:
        return STATES[self.key][0]

    @property
    def shape(self) -> str:
        return STATES[self.key][1]


def classify(
    desired: str | None,
    serving: set[str],
    unreachable: bool,
    head: RolloutHead | None,
    controls: Controls | None,
    waiting: str,
) -> FunctionState:
    """The state of one function from its newest rollout, controls and live versions.

    `serving` is every version with traffic on a reachable node; `waiting` the daemon's
    last recorded reason for not starting a rollout ("" when none)."""
    if controls is not None and controls.held:
        return FunctionState("held", controls.held_reason or "held by an operator")
    if head is not None and head.state in ACTIVE:
        return FunctionState("rolling-out", head.step or "starting")
    if head is not None and head.state == RolloutState.DRAFT:
        return FunctionState("waiting", f"waiting for approval of {head.version}")
    if head is not None and head.state == RolloutState.PAUSED:
        return FunctionState("paused", head.message or "paused")
    if head is not None and head.state in FINAL_BAD and head.version == desired:
        return FunctionState("failed", f"{head.state.lower().replace('_', ' ')}: {head.message}")
    if desired is None:
        return (
            FunctionState("unknown", "not in the synced commit")
            if serving
            else (FunctionState("unknown", "no version known"))
        )
    if serving == {desired} and not unreachable:
        return FunctionState("in-sync", "")
    if waiting:
        return FunctionState("waiting", waiting)
    if unreachable and serving <= {desired}:
        return FunctionState("waiting", "some of its nodes are unreachable")
    if head is not None and head.state == RolloutState.COMPLETED and head.version == desired:
        others = ", ".join(sorted(serving - {desired})) or "nothing"
        return FunctionState("drifted", f"nodes serve {others} instead of {desired}")
    return FunctionState("waiting", f"{desired} not rolled out yet")
