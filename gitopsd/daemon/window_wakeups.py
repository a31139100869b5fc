"""The daemon's timers for deploy windows: a function that may not start now is looked at
again when its window opens, even if neither Git nor the fleet moved in between."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gitopsd.clock import Clock
from gitopsd.manifest.deploy_windows import DeployWindows, window_state
from gitopsd.rollout.windows import why_not_now


class WindowWakeups:
    """One timer per waiting function (on the injected clock), replaced when its opening
    time changes, cancelled when the function may start."""

    def __init__(self, clock: Clock, opened: Callable[[str], None]) -> None:
        self.clock = clock
        self.opened = opened
        self._timers: dict[str, tuple[float, asyncio.Task[None]]] = {}

    def why_not(self, function: str, windows: DeployWindows | None) -> str:
        """Why `function` may not start now ("" when it may); arms its wake-up if not."""
        now = self.clock.now()
        reason = why_not_now(windows, now)
        at = window_state(windows.windows, now).changes_at if reason and windows else None
        current = self._timers.get(function)
        if current is not None and (at is None or current[0] != at):
            current[1].cancel()
            del self._timers[function]
        if at is not None and function not in self._timers:
            self._timers[function] = (at, asyncio.create_task(self._wake(function, at)))
        return reason

    async def _wake(self, function: str, at: float) -> None:
        await self.clock.sleep_until(at)
        self._timers.pop(function, None)
        self.opened(function)

    def cancel(self) -> None:
        for _at, task in self._timers.values():
            task.cancel()
        self._timers.clear()

    @property
    def waiting(self) -> dict[str, float]:
        """Function -> when its window opens, for the functions being waited for."""
        return {f: at for f, (at, _task) in self._timers.items()}
