"""Durations: ISO 8601 and the short forms, and errors that say what is accepted."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from gitopsd.manifest.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT5M", 300),
        ("PT30S", 30),
        ("PT1H30M", 5400),
        ("P1D", 86400),
        ("P1DT2H", 93600),
        ("P1W", 604800),
        ("PT0.5S", 0.5),
        ("pt5m", 300),
        (" PT5S ", 5),
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1.5h", 5400),
        ("2d", 172800),
    ],
)
def test_accepted_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "P", "PT", "P1DT", "5", "5 m", "5M", "-PT5M", "PT-5M", "5min", "1h30m", "P400D"]
)
def test_refused_forms_name_the_accepted_ones(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601 like 'PT5M'.*'5m'"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(0) == "PT0S"
    assert format_duration(300) == "PT5M"
    assert format_duration(5400.25) == "PT1H30M0.25S"
    assert format_duration(86400) == "PT24H"
    assert format_duration(0.001) == "PT0.001S"


@given(st.integers(min_value=0, max_value=365 * 86400 * 1000))
def test_format_then_parse_round_trips(millis: int) -> None:
    assert math.isclose(parse_duration(format_duration(millis / 1000)), millis / 1000)


class _Model(BaseModel):
    d: Duration


@pytest.mark.parametrize("value", [True, None, [1], -1, float("inf"), float("nan")])
def test_field_refuses_non_durations(value: object) -> None:
    with pytest.raises(ValidationError, match="duration"):
        _Model(d=value)


def test_field_accepts_seconds_and_serialises_to_iso() -> None:
    assert _Model(d=90).d == 90.0
    assert _Model(d="PT90S").model_dump(mode="json") == {"d": "PT1M30S"}
