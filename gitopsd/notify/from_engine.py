"""Which engine events are worth telling a receiver, and as what.

rollout_started: the first step of a rollout begins (a replayed journal is not a start).
stage_passed: a stage's verdict was good: its analysis passed (every strategy ends each
stage, batch or region with one) or an A/B comparison chose the new version.
waiting_for_approval: a manual gate begins (`gitopsd promote` continues), or a rollout
was created waiting for `gitopsd approve` (see `draft_notification`).
completed / rolled_back / failed: the rollout's Finish step, by its final state.
"""

from __future__ import annotations

from gitopsd.notify.events import EventName, Notification
from gitopsd.rollout.engine import RolloutEvent
from gitopsd.rollout.preview import describe_step
from gitopsd.rollout.steps import Analyze, Compare, Finish, Gate, RolloutState

_FINAL: dict[RolloutState, EventName] = {
    RolloutState.COMPLETED: "completed",
    RolloutState.ROLLED_BACK: "rolled_back",
    RolloutState.FAILED: "failed",
}


def notification_of(event: RolloutEvent, at: float, commit: str) -> Notification | None:
    """The notification an engine event makes (None: nothing to tell)."""
    if event.replayed:
        return None  # a resumed rollout replays its journal: nothing new happened
    step, outcome = event.step, event.outcome
    name: EventName | None = None
    message = ""
    if outcome is None:
        if event.seq == 0:
            name, message = "rollout_started", f"rolling out {event.function} {event.version}"
        elif isinstance(step, Gate):
            name, message = "waiting_for_approval", step.reason
    elif isinstance(step, Finish):
        name, message = _FINAL.get(step.state), step.message or outcome.message
    elif outcome.ok and (
        (isinstance(step, Analyze) and outcome.verdict != "fail")
        or (isinstance(step, Compare) and outcome.verdict == "B")
    ):
        name, message = "stage_passed", outcome.message or "passed"
    if name is None:
        return None
    return Notification(
        event=name,
        function=event.function,
        version=event.version,
        message=message,
        at=at,
        rollout=event.rollout_id,
        commit=commit,
        step=describe_step(step, event.version),
    )


def draft_notification(
    function: str, version: str, rollout: str, commit: str, at: float
) -> Notification:
    """A rollout that waits for `gitopsd approve` before its first step (approval: manual)."""
    return Notification(
        event="waiting_for_approval",
        function=function,
        version=version,
        message=f"waiting for `gitopsd approve {function}`",
        at=at,
        rollout=rollout,
        commit=commit,
    )
