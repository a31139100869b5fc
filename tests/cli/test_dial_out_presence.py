"""`diff` and `status` show each dial-out node as connected (since when, from where) or not,
and list agents Git does not name as unknown; `sync --once` reaches dial-out nodes through
the controller's `[fleet] listen`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gitopsd.fleet.tokens import dial_out_token
from tests.clirunner import Gitopsd
from tests.fleet.tunnelsupport import mixed_fleet, wait_until
from tests.fleetfixture import TOKEN, Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path / "fleet") as fleet:
        mixed_fleet(fleet)
        yield fleet


def cli(tmp_path: Path, fleet: Fleet, remote: GitRemote, listen: bool = True) -> Gitopsd:
    remote.write("nodes.yaml", fleet.manifests())
    config = tmp_path / "gitopsd.toml"
    text = f'[source]\nurl = "{remote.bare}"\n'
    if listen:
        text += f'[fleet]\nlisten = "{fleet.relay.removeprefix("http://")}"\n'
    config.write_text(text)
    return Gitopsd(tmp_path / "state", fleet.token_file, config)


def test_status_and_diff_show_who_is_connected_from_where(
    tmp_path: Path, mixed: Fleet, remote: GitRemote
) -> None:
    gitopsd = cli(tmp_path, mixed, remote)
    push(remote, "fn", "1.0.0", "{type: rolling}")
    synced = gitopsd("sync", "--once")
    assert synced.code == 0, synced.out + synced.err
    assert mixed.serving("fn") == {n: "1.0.0" for n in mixed.nodes}

    async def stray() -> aiohttp.ClientWebSocketResponse:
        session = aiohttp.ClientSession()
        headers = {
            "Authorization": f"Bearer {dial_out_token(TOKEN, 'edge-stray')}",
            "X-Gitopsd-Node": "edge-stray",
        }
        ws = await session.ws_connect(f"{mixed.relay}/agents/connect", headers=headers)
        ws._gitopsd_session = session  # type: ignore[attr-defined]
        return ws

    ws = mixed._run(stray())
    mixed.stop("edge-nat-2")
    wait_until(lambda: not mixed.connected("edge-nat-2"), "edge-nat-2's tunnel to end")

    doc = gitopsd("status", "--output", "json").json()["dialOut"]
    assert doc["nodes"]["edge-nat-1"]["connected"] is True
    assert doc["nodes"]["edge-nat-1"]["from"].startswith("127.0.0.1:")
    assert doc["nodes"]["edge-nat-1"]["since"].endswith("+00:00")
    assert doc["nodes"]["edge-nat-2"] == {"connected": False}
    assert [u["name"] for u in doc["unknownAgents"]] == ["edge-stray"]
    assert "edge-a" not in doc["nodes"]  # an addressed node is not a dial-out one

    text = gitopsd("status").out
    assert "edge-nat-1: dial-out, connected since " in text and " from 127.0.0.1:" in text
    assert "edge-nat-2: dial-out, not connected to the controller" in text
    assert "edge-stray: unknown agent" in text
    assert "not connected to the controller" in text.split("fn ", 1)[1]  # its node row

    diff = gitopsd("diff")
    assert "edge-nat-1: dial-out, connected since " in diff.out
    assert "edge-nat-2: dial-out, not connected to the controller" in diff.out
    assert gitopsd("diff", "--output", "json").json()["dialOut"]["nodes"]["edge-nat-2"] == {
        "connected": False
    }

    async def close() -> None:
        await ws.close()
        await ws._gitopsd_session.close()  # type: ignore[attr-defined]

    mixed._run(close())


def test_without_fleet_listen_a_dial_out_node_is_reported_not_guessed(
    tmp_path: Path, mixed: Fleet, remote: GitRemote
) -> None:
    gitopsd = cli(tmp_path, mixed, remote, listen=False)
    push(remote, "fn", "1.0.0", "{type: rolling}")
    diff = gitopsd("diff")
    assert "reached only through the controller's [fleet] listen" in diff.out
    assert "[fleet] listen is not set in this config" in diff.out
