"""What a receiver can be told: the seven event names and one notification's content."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

EventName = Literal[
    "rollout_started",
    "stage_passed",
    "waiting_for_approval",
    "rolled_back",
    "failed",
    "completed",
    "drift_found",
]
EVENT_NAMES: tuple[EventName, ...] = get_args(EventName)

MESSAGE_MAX = 2000  # a step message can quote an agent's answer: receivers get a bounded text


@dataclass(frozen=True)
class Notification:
    """One thing that happened to one function. `rollout` and `step` are empty for drift."""

    event: EventName
    function: str
    version: str
    message: str
    at: float
    rollout: str = ""
    commit: str = ""
    step: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "function": self.function,
            "version": self.version,
            "message": _bounded(self.message),
            "at": self.at,
            "rollout": self.rollout,
            "commit": self.commit,
            "step": _bounded(self.step),
        }


def _bounded(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."
