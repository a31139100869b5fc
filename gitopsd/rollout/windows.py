"""Deploy windows in the rollout layer: whether a rollout may start now, and the wait of a
running one at a step boundary while its windows are closed (gitopsd/manifest/deploy_windows.py
says what a window is)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitopsd.function_state import PassState
from gitopsd.manifest.deploy_windows import DeployWindows, waiting_message, window_state
from gitopsd.rollout.steps import Finish, Rollback, Step

WAITING_STATE = PassState.WAITING_FOR_WINDOW
"""The state a pass reports for a function outside its windows (an alias its importers use)."""


def windows_of(data: Mapping[str, Any] | None) -> DeployWindows | None:
    """The windows journaled with a rollout (`RolloutSpec.deploy_windows`), if any."""
    return DeployWindows.model_validate(data) if data else None


def why_not_now(windows: DeployWindows | None, now: float) -> str:
    """Why a new rollout must not start at `now` ("" when its windows allow it)."""
    if windows is None:
        return ""
    state = window_state(windows.windows, now)
    return "" if state.open else waiting_message(windows.windows, state, now)


def waits_at_boundary(windows: DeployWindows | None, step: Step) -> bool:
    """Does `step` wait for an open window? Rollbacks and the final step never do, nor
    anything of a rollout whose windows say `onClose: continue`."""
    return (
        windows is not None
        and windows.on_close == "pause"
        and not isinstance(step, Rollback | Finish)
    )
