"""Jinja2 templates and the filters they use (UTC times with a relative age)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jinja2

from gitopsd.ui.states import STATES


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
        self.env.globals["STATES"] = STATES

    def render(self, template: str, now: float, **context: Any) -> str:
        def ago(text: str | None) -> str:
            when = parse_iso(text)
            return age_text(now - when.timestamp()) if when else ""

        return self.env.get_template(template).render(ago=ago, **context)
