"""Deploy windows as data: crontab day-of-week numbering, allow and deny, the next opening
across a daylight-saving change, the waiting text, and file:line problems."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gitopsd.manifest.deploy_windows import (
    DeployWindows,
    allowed_at,
    start_message,
    waiting_message,
    window_state,
)
from tests.manifest.support import docs, function, load, node, problems, snapshot


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def windows(*entries: dict[str, object]) -> DeployWindows:
    return DeployWindows.model_validate({"windows": list(entries)})


SHORT = "'0 22 * *'"
WEEKNIGHTS = {"schedule": "0 22 * * 1-5", "duration": "PT6H", "timeZone": "Europe/Berlin"}


def test_weekdays_count_from_sunday_as_in_crontab() -> None:
    w = windows(WEEKNIGHTS).windows[0]
    start = ts("2026-11-01T00:00:00")  # a Sunday
    fires = []
    for t in w.fires(start):
        if t >= start + 7 * 86400:
            break
        fires.append(datetime.fromtimestamp(t, UTC).strftime("%a %H:%M"))
    assert fires == ["Mon 21:00", "Tue 21:00", "Wed 21:00", "Thu 21:00", "Fri 21:00"]  # 22:00 CET


def test_allow_and_deny() -> None:
    both = windows(
        WEEKNIGHTS, {"kind": "deny", "schedule": "0 0 24 12 *", "duration": "P2D"}
    ).windows
    assert allowed_at(both, ts("2026-12-01T22:00:00"))  # Tuesday 23:00 CET
    assert not allowed_at(both, ts("2026-12-01T12:00:00"))  # Tuesday noon
    assert not allowed_at(both, ts("2026-12-24T22:00:00"))  # a weeknight, but denied
    only_deny = windows({"kind": "deny", "schedule": "0 9 * * *", "duration": "PT8H"}).windows
    assert allowed_at(only_deny, ts("2026-12-01T20:00:00"))
    assert not allowed_at(only_deny, ts("2026-12-01T12:00:00"))


def test_the_next_opening_crosses_the_end_of_summer_time() -> None:
    nightly = windows(
        {"schedule": "0 20 * * *", "duration": "PT2H", "timeZone": "Europe/Berlin"}
    ).windows
    # Saturday 24 October 2026, 22:10 CEST: closed since 22:00 CEST (20:00 UTC).
    now = ts("2026-10-24T20:10:00")
    state = window_state(nightly, now)
    assert not state.open
    # Summer time ends that night: the next 20:00 is CET, 19:00 UTC, not 18:00.
    assert state.changes_at == ts("2026-10-25T19:00:00")
    assert waiting_message(nightly, state, now) == (
        "waiting for deploy window, opens 20:00 CET (in 22h50m)"
    )
    assert window_state(nightly, ts("2026-10-25T19:30:00")) == window_state(
        nightly, ts("2026-10-25T19:00:00")
    )
    assert start_message(nightly, ts("2026-10-25T19:30:00")) == (
        "now (deploy window open until 22:00 CET)"
    )


def test_the_issues_example_text() -> None:
    now = ts("2026-10-26T17:48:00")  # Monday 18:48 CET
    w = windows(WEEKNIGHTS).windows
    assert start_message(w, now) == "waiting for deploy window, opens 22:00 CET (in 3h12m)"
    later = ts("2026-10-30T22:00:00")  # Friday 23:00 CET: open until Saturday 04:00
    assert start_message(w, later) == "now (deploy window open until 04:00 CET)"
    weekend = ts("2026-10-31T12:00:00")
    assert start_message(w, weekend) == (
        "waiting for deploy window, opens Mon 02 Nov 22:00 CET (in 2d9h)"
    )


def test_a_window_in_a_manifest_and_its_problems() -> None:
    good = docs(
        node("edge-a"),
        function(
            "a",
            "deployWindows:",
            "  windows: [{schedule: '0 22 * * 1-5', duration: PT6H, timeZone: Europe/Berlin}]",
            "  onClose: continue",
        ),
    )
    spec = load(snapshot({"s.yaml": good})).functions["a"].spec
    assert spec.deploy_windows is not None and spec.deploy_windows.on_close == "continue"
    bad = docs(
        node("edge-a"),
        function(
            "a",
            "deployWindows:",
            "  windows:",
            "    - {schedule: '0 22 * * 1-9', duration: PT6H}",
            "    - {schedule: '0 22 * *', duration: PT6H}",
            "    - {schedule: '0 22 * * *', duration: PT0S, timeZone: Mars/Olympus}",
            "  onClose: later",
        ),
    )
    lines = bad.splitlines()

    def at(needle: str) -> int:
        return next(i for i, t in enumerate(lines, 1) if needle in t)

    assert problems(snapshot({"s.yaml": bad})) == [
        f"s.yaml:{at('1-9')}: spec.deployWindows.windows[0]: schedule '0 22 * * 1-9': day of "
        "week '9': use 0-7 (0 and 7 are Sunday) or sun-sat",
        f"s.yaml:{at(SHORT)}: spec.deployWindows.windows[1]: schedule '0 22 * *': five fields "
        "(minute hour day-of-month month day-of-week)",
        f"s.yaml:{at('PT0S')}: spec.deployWindows.windows[2].duration: Input should be greater "
        "than 0, got 'PT0S'",
        f"s.yaml:{at('PT0S')}: spec.deployWindows.windows[2].timeZone: unknown time zone "
        "'Mars/Olympus': an IANA name such as Europe/Berlin",
        f"s.yaml:{at('later')}: spec.deployWindows.onClose: Input should be 'pause' or "
        "'continue', got 'later'",
    ]


@pytest.mark.parametrize("schedule", ["0 22 * * 5-1", "0 22 * * 1/0", "61 22 * * *"])
def test_bad_schedules_are_refused(schedule: str) -> None:
    with pytest.raises(ValueError, match="schedule"):
        windows({"schedule": schedule, "duration": "PT1H"})


POLICY = """\
apiVersion: gitopsd/v1
kind: DeployPolicy
metadata: {name: fleet}
spec:
  deployWindows:
    windows: [{kind: deny, schedule: '0 0 24 12 *', duration: P3D, timeZone: Europe/Berlin}]
"""


def test_a_deploy_policy_is_the_default_of_every_function_without_its_own() -> None:
    text = docs(
        node("edge-a"),
        POLICY,
        function("plain"),
        function("own", "deployWindows:", "  windows: [{schedule: '0 22 * * *', duration: PT1H}]"),
    )
    functions = load(snapshot({"s.yaml": text})).functions
    plain, own = functions["plain"].spec.deploy_windows, functions["own"].spec.deploy_windows
    assert plain is not None and [w.kind for w in plain.windows] == ["deny"]
    assert own is not None and [w.schedule for w in own.windows] == ["0 22 * * *"]


def test_a_second_deploy_policy_and_a_bad_one_are_problems() -> None:
    second = POLICY.replace("name: fleet", "name: other")
    text = docs(node("edge-a"), POLICY, second, function("plain"))
    lines = text.splitlines()
    other = next(i for i, t in enumerate(lines, 1) if "name: other" in t) - 2
    first = next(i for i, t in enumerate(lines, 1) if "kind: DeployPolicy" in t) - 1
    assert problems(snapshot({"s.yaml": text})) == [
        f"s.yaml:{other}: a second DeployPolicy: 'fleet' (s.yaml:{first}) already sets the "
        "fleet's defaults; keep one",
    ]
    bad = POLICY.replace("P3D", "P90D")
    text = docs(node("edge-a"), bad)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "P90D" in t)
    assert problems(snapshot({"s.yaml": text})) == [
        f"s.yaml:{line}: spec.deployWindows.windows[0].duration: Input should be less than or "
        "equal to 2678400, got 'P90D'",
    ]
