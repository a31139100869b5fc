"""Durations as the seeds write them: ISO 8601 (`PT5M`, `PT1H30M`, `P1D`), or `5m`/`30s`."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

ACCEPTED_FORMS = (
    "ISO 8601 like 'PT5M', 'PT30S', 'PT1H30M', 'P1D' (or '500ms', '30s', '5m', '1h', '1d')"
)
MAX_SECONDS = 366 * 86400.0  # a year and a day: anything longer is a typo, not a rollout delay

_NUM = r"\d+(?:\.\d+)?"
_ISO = re.compile(
    rf"^P(?:(?P<weeks>{_NUM})W)?(?:(?P<days>{_NUM})D)?"
    rf"(?:T(?:(?P<hours>{_NUM})H)?(?:(?P<minutes>{_NUM})M)?(?:(?P<seconds>{_NUM})S)?)?$"
)
_SHORT = re.compile(rf"^(?P<value>{_NUM})(?P<unit>ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ISO_SECONDS = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0}


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError naming the accepted forms."""
    value = text.strip()
    short = _SHORT.match(value)
    if short:
        return _bounded(float(short["value"]) * _UNIT_SECONDS[short["unit"]], text)
    upper = value.upper()
    iso = _ISO.match(upper)
    # The regex lets every part be absent: "P", "PT" and "P1DT" match it but are not durations.
    if iso and upper not in ("P", "PT") and not upper.endswith("T"):
        parts = {k: float(v) for k, v in iso.groupdict().items() if v is not None}
        seconds = parts.pop("seconds", 0.0)
        seconds += sum(_ISO_SECONDS[unit] * amount for unit, amount in parts.items())
        return _bounded(seconds, text)
    raise ValueError(f"invalid duration {text!r}: use {ACCEPTED_FORMS}")


def _bounded(seconds: float, text: str) -> float:
    if seconds > MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than a year: use {ACCEPTED_FORMS}")
    return seconds


def format_duration(seconds: float) -> str:
    """ISO 8601 form of `seconds` (millisecond precision), the inverse of parse_duration."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot format duration {seconds!r}")
    millis = round(seconds * 1000)
    whole, frac_ms = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = "PT"
    if hours:
        out += f"{hours}H"
    if minutes:
        out += f"{minutes}M"
    if frac_ms:
        out += f"{secs}.{frac_ms:03d}".rstrip("0") + "S"
    elif secs or out == "PT":
        out += f"{secs}S"
    return out


def _coerce(value: Any) -> float:
    # bool is an int subclass: `timeout: yes` must not become one second.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"a duration must be a string: use {ACCEPTED_FORMS}")
    if isinstance(value, str):
        return parse_duration(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid duration {value!r}: use {ACCEPTED_FORMS}")
    return _bounded(float(value), str(value))


_JSON_SCHEMA = {
    "anyOf": [
        {
            "type": "string",
            "pattern": r"^\s*([Pp]([0-9.]+[Ww])?([0-9.]+[Dd])?([Tt]([0-9.]+[Hh])?([0-9.]+[Mm])?"
            r"([0-9.]+[Ss])?)?|[0-9]+(\.[0-9]+)?(ms|s|m|h|d))\s*$",
        },
        {"type": "number", "minimum": 0},
    ],
    "description": f"A duration: {ACCEPTED_FORMS}, or a number of seconds.",
}

Duration = Annotated[
    float,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_JSON_SCHEMA, mode="validation"),
]
"""A duration field: accepts `PT5M`/`5m` (or plain seconds), holds seconds as float."""
