"""The daemon's deploy-window timers: a function that may not start is looked at again when
its window opens (on the injected clock), and only one timer waits per function."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gitopsd.clock import FakeClock
from gitopsd.daemon.window_wakeups import WindowWakeups
from gitopsd.manifest.deploy_windows import DeployWindows


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NIGHTLY = DeployWindows.model_validate(
    {"windows": [{"schedule": "0 20 * * *", "duration": "PT2H", "timeZone": "Europe/Berlin"}]}
)


async def test_a_waiting_function_is_woken_when_its_window_opens() -> None:
    clock = FakeClock(ts("2026-10-24T20:10:00"))
    opened: list[tuple[str, float]] = []
    wakeups = WindowWakeups(clock, lambda fn: opened.append((fn, clock.now())))
    reason = wakeups.why_not("fn", NIGHTLY)
    assert reason == "waiting for deploy window, opens 20:00 CET (in 22h50m)"
    assert wakeups.why_not("fn", NIGHTLY) == reason  # the same pass again: still one timer
    assert wakeups.waiting == {"fn": ts("2026-10-25T19:00:00")}
    for _ in range(5):
        await asyncio.sleep(0)
    assert opened == [("fn", ts("2026-10-25T19:00:00"))]
    assert wakeups.why_not("fn", NIGHTLY) == "" and wakeups.waiting == {}
    assert wakeups.why_not("other", None) == ""


async def test_a_function_that_may_start_has_no_timer() -> None:
    clock = FakeClock(ts("2026-10-24T20:10:00"))
    wakeups = WindowWakeups(clock, lambda fn: None)
    wakeups.why_not("fn", NIGHTLY)
    assert "fn" in wakeups.waiting
    clock.advance(0)  # the manifest lost its windows: the timer goes
    assert wakeups.why_not("fn", None) == "" and wakeups.waiting == {}
    wakeups.cancel()
