"""spec.overrides end to end, through the CLI against real agents: a change to an override
is a diff of the nodes it matches, and `sync` reloads those nodes alone with their limits;
the other nodes keep their loaded version untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.wasm_modules import handler_wat


def push(remote: GitRemote, overrides: str = "", version: str = "1.0.0") -> str:
    remote.write(
        "functions/hello.yaml",
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\nmetadata: {name: hello}\nspec:\n"
        f'  version: "{version}"\n  module: modules/hello.wat\n  strategy: {{type: rolling}}\n'
        f"  limits: {{memoryMiB: 64, timeoutMs: 100}}\n{overrides}",
    )
    remote.write("functions/modules/hello.wat", handler_wat(f"hello {version}"))
    return remote.commit_push(f"hello {version}")


def loaded(fleet: Fleet, node: str, version: str = "1.0.0") -> dict[str, Any]:
    """What `node`'s agent says of hello's `version` (limits, load time...)."""
    found: dict[str, Any] = fleet.inventory(node)["functions"]["hello"]["versions"][version]
    return found


@pytest.fixture
def gitopsd(tmp_path: Path, fleet: Fleet) -> Gitopsd:
    return Gitopsd(tmp_path / "state", fleet.token_file)


def test_a_changed_override_rolls_out_to_the_nodes_it_matches_only(
    remote: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote)
    src = str(remote.bare)
    assert gitopsd("sync", src, "--once").code == 0
    before = {n: loaded(fleet, n) for n in fleet.nodes}
    assert {n: v["limits"]["memoryMiB"] for n, v in before.items()} == {
        "edge-a": 64,
        "edge-b": 64,
        "edge-c": 64,
    }
    generations = {n: fleet.inventory(n)["generation"] for n in ("edge-a", "edge-b")}

    sha = push(remote, "  overrides:\n    - {regions: [eu-central], limits: {memoryMiB: 128}}\n")
    diff = gitopsd("diff", src, "--output", "json")
    assert diff.code == 1
    (change,) = diff.json()["changes"]
    pending = {n["node"]: n["detail"] for n in change["nodes"] if n["action"] != "ok"}
    assert pending == {
        "edge-c": "limits memoryMiB 64, timeoutMs 100 (want memoryMiB 128, timeoutMs 100)"
    }
    plan = gitopsd("diff", src, "--plan").out
    assert "    edge-c: update (limits memoryMiB 64, timeoutMs 100 (want memoryMiB 128" in plan
    assert "1. deploy the new version to edge-c\n" in plan
    assert "edge-a" not in plan and "edge-b" not in plan

    sync = gitopsd("sync", src, "--once")
    assert sync.code == 0, sync.out + sync.err
    assert loaded(fleet, "edge-c")["limits"] == {"memoryMiB": 128, "timeoutMs": 100}
    # The nodes the override does not match were not touched: same load, same generation.
    for n in ("edge-a", "edge-b"):
        assert loaded(fleet, n) == before[n]
        assert fleet.inventory(n)["generation"] == generations[n]
    note = json.loads(remote.note(sha))
    assert note["status"] == "success"
    assert note["functions"]["hello"]["nodesOk"] == ["edge-c"]
    assert gitopsd("diff", src).code == 0
    assert fleet.serving("hello") == {"edge-a": "1.0.0", "edge-b": "1.0.0", "edge-c": "1.0.0"}

    # A later override matching a label of every node wins field by field: timeoutMs
    # everywhere, and edge-c keeps the memoryMiB of the first.
    push(
        remote,
        "  overrides:\n    - {regions: [eu-central], limits: {memoryMiB: 128}}\n"
        "    - {selector: {tier: prod}, limits: {timeoutMs: 250}}\n",
    )
    assert gitopsd("sync", src, "--once").code == 0
    assert {n: loaded(fleet, n)["limits"] for n in fleet.nodes} == {
        "edge-a": {"memoryMiB": 64, "timeoutMs": 250},
        "edge-b": {"memoryMiB": 64, "timeoutMs": 250},
        "edge-c": {"memoryMiB": 128, "timeoutMs": 250},
    }
    assert gitopsd("diff", src).code == 0


def test_an_invalid_override_is_refused_with_file_and_line(
    remote: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "  overrides:\n    - {regions: [eu-central], strategy: {type: canary}}\n")
    result = gitopsd("validate", str(remote.bare))
    assert result.code != 0
    assert (
        "functions/hello.yaml:10: spec.overrides[0]: strategy applies to the function as a "
        "whole and cannot be overridden per node" in result.out + result.err
    )

    # An override no node matches today validates, with a warning at its line.
    push(remote, "  overrides:\n    - {regions: [ap-south], limits: {memoryMiB: 128}}\n")
    result = gitopsd("validate", str(remote.bare))
    assert result.code == 0, result.out + result.err
    assert (
        "warning: functions/hello.yaml:10: override 1 of function 'hello' matches none of its "
        "target nodes" in result.err
    )


def test_an_operator_rollback_brings_back_each_node_s_limits(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{remote.bare}"\n')
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file, config)
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "  overrides: [{regions: [eu-central], limits: {memoryMiB: 128}}]\n")
    assert gitopsd("sync", "--once").code == 0
    push(remote, version="2.0.0")  # the override is gone with 2.0.0
    assert gitopsd("sync", "--once").code == 0
    assert loaded(fleet, "edge-c", "2.0.0")["limits"]["memoryMiB"] == 64

    result = gitopsd("rollback", "hello")
    assert result.code == 0, result.out + result.err
    assert set(fleet.serving("hello").values()) == {"1.0.0"}
    assert {n: loaded(fleet, n)["limits"]["memoryMiB"] for n in fleet.nodes} == {
        "edge-a": 64,
        "edge-b": 64,
        "edge-c": 128,
    }
