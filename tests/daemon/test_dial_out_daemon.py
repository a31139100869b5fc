"""The daemon with `[fleet] listen`: a dial-out agent connects to it, is rolled out to like
any node, and a change made on it behind the daemon's back reaches the daemon at once over
the tunnel (the held inventory request answered as a push), with polling an hour away."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clirunner import Gitopsd
from tests.daemon.daemonsupport import DaemonProcess, free_port, wait_for
from tests.fleetfixture import Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push


@pytest.fixture
def setup(tmp_path: Path, remote: GitRemote) -> Iterator[tuple[DaemonProcess, Fleet, int]]:
    with running_fleet(tmp_path / "fleet") as fleet:
        port = free_port()
        fleet.add("edge-a", "us-east")
        fleet.add_dial_out("edge-nat", "eu-central", controller=f"http://127.0.0.1:{port}")
        remote.write("nodes.yaml", fleet.manifests())
        push(remote, "hello", "1.0.0", "{type: blue-green}")
        daemon = DaemonProcess(tmp_path / "d", remote, fleet, interval="PT1H")
        text = daemon.config.read_text()
        daemon.config.write_text(
            text.replace("[fleet]\n", f'[fleet]\nlisten = "127.0.0.1:{port}"\n', 1)
        )
        try:
            yield daemon, fleet, port
        finally:
            daemon.close()


def serving(fleet: Fleet, version: str) -> bool:
    return set(fleet.serving("hello").values()) == {version}


def rollouts(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM rollouts").fetchone()[0])


def test_the_daemon_serves_dial_out_agents(
    setup: tuple[DaemonProcess, Fleet, int], remote: GitRemote, tmp_path: Path
) -> None:
    daemon, fleet, _port = setup
    daemon.start()
    wait_for(lambda: serving(fleet, "1.0.0"), 60, "1.0.0 on both nodes")
    assert fleet.nodes["edge-nat"].agent.dialout.state == "serving"  # type: ignore[union-attr]

    push(remote, "hello", "2.0.0", "{type: blue-green}")
    wait_for(lambda: serving(fleet, "2.0.0"), 60, "2.0.0 on both nodes")

    # Behind the daemon's back, on the dial-out agent's own listener: the daemon hears of it
    # over the tunnel (no poll for an hour) and puts the function back.
    db = daemon.state / "gitopsd.db"
    before = rollouts(db)
    req = urllib.request.Request(
        f"{fleet.nodes['edge-nat'].url}/functions/hello",
        method="DELETE",
        headers={"Authorization": f"Bearer {fleet.token('edge-nat')}"},
    )
    urllib.request.urlopen(req).close()
    wait_for(lambda: rollouts(db) > before, 60, "a healing rollout")
    wait_for(lambda: serving(fleet, "2.0.0"), 60, "edge-nat healed")

    gitopsd = Gitopsd(tmp_path / "cli-state", fleet.token_file, daemon.config)
    out = gitopsd("status", "--output", "json").out
    # (the agents run in this process and log to the same stdout: the document is what
    # starts at the first line that opens it)
    doc = json.loads(out[out.index("{\n") :])["dialOut"]
    assert doc["nodes"]["edge-nat"]["connected"] is True
    assert doc["nodes"]["edge-nat"]["from"].startswith("127.0.0.1:")
    assert doc["unknownAgents"] == []
