"""Deploy windows through the CLI on real agents: `diff --plan` says when the rollout would
start, `sync --once` does not start it outside its window (exit 0: nothing failed) and
`status` says why. The window opens one minute a year (New Year, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jsonschema

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

NEW_YEAR = "  deployWindows:\n    windows: [{schedule: '0 0 1 1 *', duration: PT1M}]\n"


def test_outside_its_window_a_rollout_waits_and_says_when_it_starts(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "1.0.0", "{type: blue-green}", extra=NEW_YEAR)
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file)
    next_year = datetime.now(UTC).year + 1

    text = gitopsd("diff", str(remote.bare), "--plan")
    assert text.code == 1
    opens = datetime(next_year, 1, 1, tzinfo=UTC)
    soon = opens.timestamp() - datetime.now(UTC).timestamp() < 86400
    when = "00:00 UTC" if soon else f"{opens:%a %d %b} 00:00 UTC"
    assert f"fn: waiting for deploy window, opens {when} (in " in text.out
    doc = gitopsd("diff", str(remote.bare), "--plan", "--output", "json").json()
    jsonschema.validate(doc, gitopsd("schema", "--output-docs").json()["diff"])
    start = doc["starts"]
    assert start["fn"]["now"] is False
    assert start["fn"]["at"] == f"{next_year}-01-01T00:00:00+00:00"

    sync = gitopsd("sync", str(remote.bare), "--once")
    assert sync.code == 0, sync.out + sync.err
    assert "fn 1.0.0: WAITING_FOR_WINDOW - waiting for deploy window, opens" in sync.out
    assert set(fleet.serving("fn").values()) == {None}
    status = gitopsd("status", "fn", "--output", "json").json()
    assert "waiting for deploy window, opens" in str(status)
