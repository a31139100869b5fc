"""spec.overrides through the daemon (`gitopsd run`): a pushed override reaches the nodes it
matches, with their own limits, and leaves the others' loaded version untouched."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_overrides_rollout import loaded, push
from tests.daemon.daemonsupport import DaemonProcess, wait_for
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote


def memory(fleet: Fleet) -> dict[str, int]:
    """Each node's memoryMiB for hello 1.0.0 (0 where it is not loaded yet)."""
    out = {}
    for node in fleet.nodes:
        try:
            out[node] = int(loaded(fleet, node)["limits"]["memoryMiB"])
        except KeyError:
            out[node] = 0
    return out


def finished(remote: GitRemote, sha: str) -> bool:
    """The commit's note says its rollouts ended well (no note yet: not finished)."""
    try:
        return bool(json.loads(remote.note(sha))["status"] == "success")
    except RuntimeError:
        return False


def test_the_daemon_applies_a_pushed_override_to_its_nodes_only(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    first = push(remote)
    daemon = DaemonProcess(tmp_path / "daemon", remote, fleet)  # the watch sees each push
    try:
        daemon.start()
        wait_for(lambda: set(memory(fleet).values()) == {64}, 60, "first sync")
        # Loaded everywhere is not finished: the rolling rollout still moves traffic after.
        wait_for(lambda: finished(remote, first), 60, "the first rollout's note")
        untouched = {n: fleet.inventory(n)["generation"] for n in ("edge-a", "edge-b")}
        push(remote, "  overrides:\n    - {regions: [eu-central], limits: {memoryMiB: 128}}\n")
        wait_for(lambda: memory(fleet)["edge-c"] == 128, 60, "the override on edge-c")
        assert memory(fleet) == {"edge-a": 64, "edge-b": 64, "edge-c": 128}
        assert {n: fleet.inventory(n)["generation"] for n in untouched} == untouched
    finally:
        daemon.close()
