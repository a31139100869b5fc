"""`make demo` starts each agent with its own token: the one `gitopsd agent-token` prints."""

from __future__ import annotations

from pathlib import Path

from gitopsd.demo.run import DIAL_OUT_NODE, Demo, find_example
from tests.clirunner import Gitopsd
from tests.fleetfixture import running_fleet


def test_each_demo_agent_holds_what_agent_token_prints_for_it(tmp_path: Path) -> None:
    with running_fleet(tmp_path / "fleet") as fleet:
        demo = Demo(tmp_path, find_example(None), fleet)
        assert demo.start_fleet()  # the dial-out agent connected to the fleet's listener
        assert [n for n, node in fleet.nodes.items() if node.dial_out] == [DIAL_OUT_NODE]
        assert fleet.connected(DIAL_OUT_NODE)
        assert demo.show_tokens()  # own token 200, another node's 401, the fleet secret 401
        gitopsd = Gitopsd(tmp_path / "state", fleet.token_file)
        printed = {
            name: gitopsd(
                "agent-token",
                name,
                *(("--dial-out",) if node.dial_out else ("--address", node.url)),
            ).out.strip()
            for name, node in fleet.nodes.items()
        }
        assert len(set(printed.values())) == len(fleet.nodes) == 6
        for name, token in printed.items():
            assert fleet.inventory_status(name, token) == 200
