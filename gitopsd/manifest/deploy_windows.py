"""Deploy windows: when a function's rollouts may start and run (`spec.deployWindows`).

Each window is a cron schedule (five fields, as crontab(5)), a duration and a time zone:
it is active from every time the schedule fires until `duration` later. `allow` windows
limit rollouts to their active times; an active `deny` window forbids them, whatever the
allow windows say. With no allow window, every time not denied is allowed. Cron times are
local to the window's time zone (a window at 22:00 Europe/Berlin opens at 22:00 CET in
winter and 22:00 CEST in summer); the duration is elapsed time. The schedules are read by
APScheduler's CronTrigger (already the daemon's scheduler); only the day-of-week field is
translated first, because APScheduler numbers weekdays from Monday and crontab from Sunday.

The functions here are pure: time is a parameter (the engine's injected clock).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import AfterValidator, Field, model_validator

from gitopsd.manifest.base import ManifestModel
from gitopsd.manifest.durations import Duration

HORIZON_S = 400 * 86400.0  # how far ahead the next opening is looked for
MAX_EDGES = 1000  # and at most this many openings and closings (a window every minute...)
MAX_DURATION_S = 31 * 86400.0
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_NAMES = {name: i for i, name in enumerate(_DAYS)}


def _weekday(token: str) -> int:
    token = token.lower()
    if token in _DAY_NAMES:
        return _DAY_NAMES[token]
    if token.isdigit() and int(token) <= 7:
        return int(token) % 7  # 0 and 7 are Sunday
    raise ValueError(f"day of week {token!r}: use 0-7 (0 and 7 are Sunday) or sun-sat")


def _weekdays(field: str) -> str:
    """A crontab day-of-week field as APScheduler's day names (`1-5` -> `mon,tue,...`)."""
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"day of week {part!r}: the step must be a positive number")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _weekday(a), _weekday(b)
            if b == "7" or (b.lower() == "sun" and first > 0):
                last = 7  # `5-7`, `fri-sun`: through Sunday
            if last < first:
                raise ValueError(f"day of week {part!r}: a range must go forward")
        else:
            first = last = _weekday(base)
        days.update(d % 7 for d in range(first, last + 1, step or 1))
    # APScheduler's names are the same words; order them from Monday, its first day.
    return ",".join(_DAYS[d] for d in sorted(days, key=lambda d: (d - 1) % 7))


@lru_cache(maxsize=1024)
def cron_trigger(schedule: str, time_zone: str) -> CronTrigger:
    """The trigger of a crontab line; ValueError says what is wrong with it."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(
            f"schedule {schedule!r}: five fields (minute hour day-of-month month day-of-week)"
        )
    minute, hour, day, month, weekdays = fields
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_weekdays(weekdays),
            timezone=ZoneInfo(time_zone),
        )
    except ValueError as exc:
        raise ValueError(f"schedule {schedule!r}: {exc}") from None


def _check_zone(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name) or len(name) > 64:
        raise ValueError(f"unknown time zone {name!r}: an IANA name such as Europe/Berlin")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: an IANA name such as Europe/Berlin"
        ) from None
    return name


class DeployWindow(ManifestModel):
    """One allowed or denied window: `schedule` opens it, `duration` later it closes."""

    kind: Literal["allow", "deny"] = Field(
        "allow", description="`allow`: rollouts may run while it is active; `deny`: they may not."
    )
    schedule: Annotated[str, Field(max_length=200)] = Field(
        description="When the window opens: a crontab(5) line, e.g. `0 22 * * 1-5` (22:00, "
        "Monday to Friday; 0 and 7 are Sunday)."
    )
    duration: Annotated[Duration, Field(gt=0, le=MAX_DURATION_S)] = Field(
        description="How long the window stays open after each opening, e.g. `PT6H`."
    )
    time_zone: Annotated[str, AfterValidator(_check_zone)] = Field(
        "UTC", description="IANA time zone the schedule's times are in, e.g. `Europe/Berlin`."
    )

    @model_validator(mode="after")
    def _schedule_parses(self) -> DeployWindow:
        cron_trigger(self.schedule, self.time_zone)  # ValueError: a problem at this window
        return self

    def fires(self, start: float) -> Iterator[float]:
        """Opening times from `start` (inclusive, to the second) on."""
        trigger = cron_trigger(self.schedule, self.time_zone)
        now = datetime.fromtimestamp(start, UTC)
        previous = None
        while True:
            fire = trigger.get_next_fire_time(previous, now)
            if fire is None:
                return
            yield fire.timestamp()
            previous, now = fire, fire + timedelta(seconds=1)

    def active(self, t: float) -> bool:
        """True while an opening of this window is less than `duration` ago."""
        first = next(self.fires(t - self.duration + 0.001), None)
        return first is not None and first <= t


class DeployWindows(ManifestModel):
    """When rollouts of this function may run: allowed and denied windows."""

    windows: list[DeployWindow] = Field(
        min_length=1,
        max_length=50,
        description="The windows. With at least one `allow` window, rollouts run only inside "
        "one; inside an active `deny` window they never run.",
    )
    on_close: Literal["pause", "continue"] = Field(
        "pause",
        description="A rollout still running when the window closes: `pause` stops it at its "
        "next step boundary until a window opens again; `continue` lets it finish. Rollbacks "
        "always run.",
    )


def allowed_at(windows: Sequence[DeployWindow], t: float) -> bool:
    """May a rollout run at `t`?"""
    if any(w.kind == "deny" and w.active(t) for w in windows):
        return False
    allows = [w for w in windows if w.kind == "allow"]
    return not allows or any(w.active(t) for w in allows)


def _edges(windows: Sequence[DeployWindow], start: float) -> Iterator[float]:
    """Every time at or after `start` when some window opens or closes, in order."""
    streams: list[Iterator[float]] = []
    for w in windows:
        streams.append(w.fires(start))
        streams.append(_closings(w, start))
    heads = [(next(s, None), i) for i, s in enumerate(streams)]
    while True:
        live = [(t, i) for t, i in heads if t is not None]
        if not live:
            return
        t, i = min(live)
        yield t
        heads[i] = (next(streams[i], None), i)


def _closings(window: DeployWindow, start: float) -> Iterator[float]:
    for opened in window.fires(start - window.duration):
        yield opened + window.duration


@dataclass(frozen=True)
class WindowState:
    """Open or closed now, and when that changes (None: not within HORIZON_S, or not within
    MAX_EDGES openings and closings of its windows)."""

    open: bool
    changes_at: float | None


def window_state(windows: Sequence[DeployWindow], now: float) -> WindowState:
    is_open = allowed_at(windows, now)
    for count, edge in enumerate(_edges(windows, now)):
        if edge > now + HORIZON_S or count >= MAX_EDGES:
            break
        if edge > now and allowed_at(windows, edge) != is_open:
            return WindowState(is_open, edge)
    return WindowState(is_open, None)


def _in(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{mins:02d}m" if hours else f"{mins}m"


def local_time(t: float, windows: Sequence[DeployWindow], now: float) -> str:
    """`22:00 CET`, with the day when it is not within a day: `Mon 27 Oct 22:00 CET`."""
    zone = ZoneInfo(windows[0].time_zone)
    when = datetime.fromtimestamp(t, zone)
    return f"{when:%H:%M %Z}" if t - now < 86400 else f"{when:%a %d %b %H:%M %Z}"


def waiting_message(windows: Sequence[DeployWindow], state: WindowState, now: float) -> str:
    """What `status` says about a rollout held by its windows."""
    if state.changes_at is None:
        return "waiting for deploy window, none opens in the time looked ahead"
    at = local_time(state.changes_at, windows, now)
    return f"waiting for deploy window, opens {at} (in {_in(state.changes_at - now)})"


def start_message(windows: Sequence[DeployWindow], now: float) -> str:
    """When a rollout would start: `now (deploy window open until ...)` or the waiting text."""
    state = window_state(windows, now)
    if not state.open:
        return waiting_message(windows, state, now)
    if state.changes_at is None:
        return "now"
    return f"now (deploy window open until {local_time(state.changes_at, windows, now)})"
