"""A third-party strategy from an installed package (tests/plugins/shadow, laid out as an
installed distribution with its entry point) used from manifests: options checked by the
plugin's model with file:line problems, previewed by `diff --plan`, rolled out by `sync`
on real agents (and rolled back), journaled and resumed after a SIGKILL, listed in
`gitopsd schema`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from gitopsd.manifest.strategy_plugins import PluginStrategyOptions
from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.manifest.support import docs, function, load, node, problems, snapshot
from tests.plugins.install import installed
from tests.rollout.livesupport import push

SHADOW = "{type: shadow, observeFor: PT0S}"


@pytest.fixture
def shadow(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The plugin installed for this process; the environment that installs it for others."""
    with installed("shadow", tmp_path / "site") as env:
        yield env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitopsd.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def line_of(text: str, needle: str) -> int:
    (line,) = [i for i, t in enumerate(text.splitlines(), 1) if needle in t]
    return line


def test_options_are_checked_by_the_plugins_model_with_file_and_line(
    shadow: dict[str, str],
) -> None:
    text = docs(
        node("edge-a"),
        function("a", "strategy:", "  type: shadow", "  observeFor: soon", "  mirror: 5"),
        function("b", "strategy: {type: shadow, observeFor: PT2M, analyse: false}"),
    )
    soon, mirror = line_of(text, "observeFor: soon"), line_of(text, "mirror: 5")
    assert problems(snapshot({"s.yaml": text})) == [
        f"s.yaml:{soon}: spec.strategy.observeFor: invalid duration 'soon': use ISO 8601 like "
        "'PT5M', 'PT30S', 'PT1H30M', 'P1D' (or '500ms', '30s', '5m', '1h', '1d')",
        f"s.yaml:{mirror}: spec.strategy.mirror: unknown field",
    ]
    ok = docs(node("edge-a"), function("b", "strategy: {type: shadow, observeFor: PT2M}"))
    strategy = load(snapshot({"s.yaml": ok})).functions["b"].spec.strategy
    assert isinstance(strategy, PluginStrategyOptions)
    assert (strategy.type, strategy.options()) == ("shadow", {"observeFor": "PT2M"})


def test_without_the_plugin_its_type_is_unknown() -> None:
    text = docs(node("edge-a"), function("a", "strategy: {type: shadow}"))
    assert problems(snapshot({"s.yaml": text})) == [
        f"s.yaml:{line_of(text, 'strategy: {type: shadow}')}: spec.strategy.type: unknown type "
        "'shadow': expected one of 'rolling', "
        "'blue-green', 'canary', 'regional', 'ab-test', 'feature-flag'",
    ]


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    return remote


def test_diff_plan_previews_the_plugin(
    shadow: dict[str, str], repo: GitRemote, fleet: Fleet
) -> None:
    push(repo, "fn", "1.0.0", "{type: shadow, observeFor: PT10M}")
    token = ("--agent-token-file", str(fleet.token_file))
    out = cli(shadow, "diff", str(repo.bare), "--plan", "--output", "json", *token)
    assert out.returncode == 1, out.stderr
    steps = json.loads(out.stdout)["plans"]["fn"]
    assert [s["kind"] for s in steps] == [
        "deploy",
        "health",
        "traffic",
        "wait",
        "analyze",
        "traffic",
        "finish",
    ]
    assert steps[3]["seconds"] == 600 and steps[-1]["state"] == "COMPLETED"
    text = cli(shadow, "validate", str(repo.bare))
    assert text.returncode == 0, text.stderr


def test_sync_rolls_the_plugin_out_and_back(
    shadow: dict[str, str], repo: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file)
    push(repo, "fn", "1.0.0", SHADOW)
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    push(repo, "fn", "2.0.0", SHADOW)
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    assert set(fleet.serving("fn").values()) == {"2.0.0"}
    push(repo, "fn", "3.0.0", SHADOW, health="FAIL")
    failed = gitopsd("sync", str(repo.bare), "--once")
    assert failed.code == 1 and "shadow health failed" in failed.out
    assert set(fleet.serving("fn").values()) == {"2.0.0"}  # users never saw 3.0.0
    history = gitopsd("history", "fn", "--output", "json").json()
    assert {row["strategy"] for row in history["rollouts"]} == {"shadow"}


def _journal(db: Path) -> list[tuple[int, str, float, str | None]]:
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute("SELECT seq, step, started_at, outcome FROM journal ORDER BY rowid")
        )


def test_a_plugin_rollout_is_journaled_and_resumed_after_sigkill(
    shadow: dict[str, str], repo: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    args = ("sync", str(repo.bare), "--once", "--state-dir", str(state))
    args += ("--agent-token-file", str(fleet.token_file))
    push(repo, "fn", "1.0.0", SHADOW)
    assert cli(shadow, *args).returncode == 0
    push(repo, "fn", "2.0.0", "{type: shadow, observeFor: PT3S}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitopsd.cli.main", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **shadow},
    )
    db = state / "gitopsd.db"
    deadline = time.monotonic() + 60
    while not any('"wait"' in step and done is None for _s, step, _t, done in _journal(db)):
        assert time.monotonic() < deadline, "the rollout never reached its wait"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    before = _journal(db)
    again = cli(shadow, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    after = _journal(db)
    # Steps finished before the kill were replayed from the journal, not run again.
    assert [r for r in after if r in before and r[3] is not None] == [
        r for r in before if r[3] is not None
    ]
    assert '"finish"' in after[-1][1] and "COMPLETED" in after[-1][1]
    serving = fleet.serving("fn")
    assert set(serving.values()) == {"2.0.0"}, (serving, after, again.stdout)


def test_schema_lists_the_installed_plugin(shadow: dict[str, str]) -> None:
    out = cli(shadow, "schema")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    function_doc = {
        "apiVersion": "gitopsd/v1",
        "kind": "EdgeFunction",
        "metadata": {"name": "fn"},
        "spec": {
            "version": "1.0.0",
            "module": "m.wat",
            "strategy": {"type": "shadow", "observeFor": "PT1M"},
        },
    }
    jsonschema.Draft202012Validator(schema).validate(function_doc)
    function_doc["spec"]["strategy"] = {"type": "shadow", "mirror": 5}  # type: ignore[index]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(function_doc)
    assert "urn:gitopsd:strategy-plugin:shadow" in out.stdout
    # Without the plugin, its name is in no branch of the schema.
    bare = cli({}, "schema")
    assert "shadow" not in bare.stdout
