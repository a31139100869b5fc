"""Jinja2 templates and the filters they use (UTC times with a relative age)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jinja2
from markupsafe import Markup, escape

from gitopsd.function_state import RolloutState
from gitopsd.ui.states import STATES

# step status -> (state class, word, shape); rollout state -> (state class, shape)
STEP_BADGES = {
    "done": ("in-sync", "done", "circle"),
    "failed": ("failed", "failed", "cross"),
    "current": ("rolling-out", "now", "arrow"),
    "planned": ("unknown", "planned", "ring"),
}
# Every RolloutState has its badge (tests/test_function_state.py checks that none is missing).
ROLLOUT_BADGES: dict[RolloutState, tuple[str, str]] = {
    RolloutState.DRAFT: ("waiting", "hourglass"),
    RolloutState.APPROVED: ("rolling-out", "arrow"),
    RolloutState.PENDING: ("rolling-out", "arrow"),
    RolloutState.IN_PROGRESS: ("rolling-out", "arrow"),
    RolloutState.PAUSED: ("paused", "bars"),
    RolloutState.COMPLETED: ("in-sync", "circle"),
    RolloutState.ROLLED_BACK: ("failed", "cross"),
    RolloutState.FAILED: ("failed", "cross"),
}
# A state the store holds that no RolloutState names (a row of a newer or damaged store).
_UNKNOWN_ROLLOUT_BADGE = ("unknown", "ring")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def utc_text(text: str | None) -> str:
    """`2026-12-07T12:00:00Z` as `2026-12-07 12:00:00 UTC` ("-" for none)."""
    when = parse_iso(text)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "-"


def age_text(seconds: float) -> str:
    """A signed age in words: `5 s ago`, `3 min ago`, `in 2 h` (the page's JS says the same)."""
    future = seconds < 0
    s = abs(int(seconds))
    if s < 60:
        text = f"{s} s"
    elif s < 3600:
        text = f"{s // 60} min"
    elif s < 86400:
        text = f"{s // 3600} h"
    else:
        text = f"{s // 86400} d"
    return f"in {text}" if future else f"{text} ago"


def badge(state: str, label: str, shape: str) -> Markup:
    """A status as a word and a shape (and a colour): `<span class="badge s-failed">...`.

    Python, not a Jinja macro: the overview draws one per function and node (a macro call
    costs ~10 times as much)."""
    return Markup(
        f'<span class="badge s-{escape(state)}"><span class="shape shape-{escape(shape)}" '
        f'aria-hidden="true"></span>{escape(label)}</span>'
    )


def step_badge(status: str) -> Markup:
    state, word, shape = STEP_BADGES[status]
    return badge(state, word, shape)


def rollout_badge(state: str) -> Markup:
    """A rollout's state (as stored) as a badge; a name no RolloutState has reads unknown."""
    try:
        css, shape = ROLLOUT_BADGES[RolloutState(state)]
    except ValueError:
        css, shape = _UNKNOWN_ROLLOUT_BADGE
    return badge(css, state, shape)


def _pct(value: float) -> str:
    return f"{value:g}%"


_REACHABLE = str(badge("in-sync", "reachable", "circle"))
_UNREACHABLE = str(badge("failed", "unreachable", "cross"))


def node_rows(nodes: list[dict[str, Any]]) -> Markup:
    """The rows of a region's node table. Built here rather than in the template: the
    overview of a 500-node fleet has 500 of them, and Jinja takes ~10 times as long."""
    out = []
    for n in nodes:
        if n["reachable"]:
            status = _REACHABLE
        else:
            status = f'{_UNREACHABLE} <div class="detail">{escape(n["error"])}</div>'
        split = "<br>".join(
            f'<a href="/functions/{escape(s["function"])}">{escape(s["function"])}</a>: '
            + escape(" / ".join(f"{w['version']} {_pct(w['percent'])}" for w in s["weights"]))
            for s in n["splitTraffic"]
        )
        budget, used = n["memoryBudgetMiB"], n["memoryUsedMiB"] or 0.0
        memory = (
            f'<meter min="0" max="{budget}" value="{used}" high="{budget * 0.85}" '
            f'aria-label="memory used"></meter> {used:.0f}/{budget:.0f} MiB'
            if budget
            else "-"
        )
        functions = "-" if n["functions"] is None else n["functions"]
        out.append(
            f'<tr><th scope="row">{escape(n["name"])}</th><td>{status}</td><td>{functions}</td>'
            f"<td>{split or '-'}</td><td>{memory}</td></tr>\n"
        )
    return Markup("".join(out))


class Renderer:
    """The page templates; `now` gives the reference time of relative ages."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("gitopsd.ui", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters["utc"] = utc_text
        self.env.globals.update(
            STATES=STATES,
            badge=badge,
            step_badge=step_badge,
            rollout_state=rollout_badge,
            node_rows=node_rows,
        )

    def render(self, template: str, now: float, **context: Any) -> str:
        def ago(text: str | None) -> str:
            when = parse_iso(text)
            return age_text(now - when.timestamp()) if when else ""

        def when(text: str | None) -> Markup:
            """A UTC time with its age, which the page's script keeps current."""
            if not text:
                return Markup("-")
            return Markup(
                f'<time datetime="{escape(text)}">{escape(utc_text(text))}</time> '
                f'<span class="age" data-age="{escape(text)}">({escape(ago(text))})</span>'
            )

        return self.env.get_template(template).render(ago=ago, when=when, **context)
