"""`gitopsd diff --plan --what-if SPEC` on real agents: the example of the issue (a failed
health check on edge-ap-south-1), as text and JSON, from a YAML file, and refusals."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

CANARY = "{type: canary, stages: [34, 100], evaluationPeriod: PT1M}"


@pytest.fixture
def gitopsd(tmp_path: Path, big_fleet: Fleet, remote: GitRemote) -> Gitopsd:
    remote.write("nodes.yaml", big_fleet.manifests())
    run = Gitopsd(tmp_path / "state", big_fleet.token_file)
    push(remote, "fn", "1.0.0", "{type: blue-green}")
    assert run("sync", str(remote.bare), "--once").code == 0
    push(remote, "fn", "2.0.0", CANARY)
    return run


def test_what_if_text_shows_the_path_the_rollback_and_the_note(
    gitopsd: Gitopsd, remote: GitRemote
) -> None:
    out = gitopsd("diff", str(remote.bare), "--plan", "--what-if", "fail health on edge-ap-south-1")
    assert out.code == 1, out.err  # changes pending, as without --what-if
    assert "What if: fail health on edge-ap-south-1" in out.out
    assert "fn 2.0.0: ends ROLLED_BACK" in out.out
    assert "health check failed (what-if) [fail health on edge-ap-south-1]" in out.out
    assert "rolled back: edge-ap-south-1" in out.out
    assert "serving after: edge-ap-south-1 1.0.0, edge-ap-south-2 1.0.0" in out.out
    assert "note: failure (ROLLED_BACK)" in out.out


def test_what_if_json_and_a_file_of_outcomes(
    gitopsd: Gitopsd, remote: GitRemote, tmp_path: Path
) -> None:
    spec = tmp_path / "what-if.yaml"
    spec.write_text(
        "outcomes:\n"
        "  - {fail: metric, metric: error_rate, nodes: [edge-eu-central-1], stage: 1}\n"
        "  - {fail: unreachable, nodes: [edge-us-east-2], stage: 3}\n"
    )
    out = gitopsd("diff", str(remote.bare), "--plan", "--what-if", str(spec), "--output", "json")
    assert out.code == 1, out.err
    jsonschema.validate(out.json(), gitopsd("schema", "--output-docs").json()["diff"])
    doc = out.json()["whatIf"]
    assert doc["injected"] == [
        "breach error_rate on edge-eu-central-1 at stage 1",
        "unreachable on edge-us-east-2 at stage 3",
    ]
    assert doc["neverHappened"] == ["unreachable on edge-us-east-2 at stage 3"]
    fn = doc["functions"]["fn"]
    assert fn["state"] == "ROLLED_BACK" and fn["note"]["status"] == "failure"
    judged = [s for s in fn["steps"] if s["injected"]]
    assert [s["step"]["kind"] for s in judged] == ["analyze"]
    assert judged[0]["verdict"] == "fail" and judged[0]["stage"] == 1
    assert set(fn["serving"]["edge-eu-central-1"]) == {"1.0.0"}


def test_what_if_refusals(gitopsd: Gitopsd, remote: GitRemote) -> None:
    no_plan = gitopsd("diff", str(remote.bare), "--what-if", "edge-a unreachable")
    assert no_plan.code == 2 and "--what-if needs --plan" in no_plan.err
    unknown = gitopsd("diff", str(remote.bare), "--plan", "--what-if", "edge-zz unreachable")
    assert unknown.code == 2 and "no node edge-zz in the manifests" in unknown.err
    garbled = gitopsd("diff", str(remote.bare), "--plan", "--what-if", "explode edge-a")
    assert garbled.code == 2 and "cannot read 'explode edge-a'" in garbled.err
