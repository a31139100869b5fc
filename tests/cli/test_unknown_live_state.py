"""Issue 22 item 12: with nodes unreachable, `diff` and `sync` say only what is known: a
function on no node that answered is "unknown", not "nothing -> version", and "the rest"
counts only the nodes that answered."""

from __future__ import annotations

from pathlib import Path

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push


def test_unreachable_fleet_is_unknown_not_nothing(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file)
    source = str(remote.bare)
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "1.0.0", "{type: blue-green}")
    assert gitopsd("sync", source, "--once").code == 0
    for name in fleet.nodes:
        fleet.stop(name)
    push(remote, "newfn", "2.4.0", "{type: blue-green}")

    diff = gitopsd("diff", source)
    assert diff.code == 1
    assert "nothing -> 2.4.0" not in diff.out, diff.out
    assert "? unknown newfn (no target node answered) -> 2.4.0" in diff.out, diff.out
    assert "2 unknown (no target node answered)" in diff.out
    doc = gitopsd("diff", source, "--output", "json").json()
    assert {c["function"]: c["action"] for c in doc["changes"]} == {
        "fn": "unknown",
        "newfn": "unknown",
    }
    assert doc["summary"]["unknown"] == 2 and doc["summary"]["deploy"] == 0

    sync = gitopsd("sync", source, "--once")
    assert "the rest of the fleet" not in sync.out and "already run" not in sync.out, sync.out
    assert "no target node answered, what they run is unknown" in sync.out, sync.out

    fleet.start("edge-a")  # one node answers again: only it counts as running the version
    sync = gitopsd("sync", source, "--once")
    line = next(x for x in sync.out.splitlines() if x.startswith("fn 1.0.0:"))
    assert "waiting for unreachable nodes (edge-c, edge-b)" in line, line  # by region, name
    assert "the 1 target node that answered already runs this version" in line, line
    assert "+ deploy newfn nothing (2 nodes unknown) -> 2.4.0" in gitopsd("diff", source).out
