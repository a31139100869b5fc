"""How the executor carries a rollback out on real agents: every node is flipped back before
any node unloads the new version, so users are back as early as the slowest flip."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from gitopsd.fleet.client import AgentClient
from gitopsd.rollout.executor import StepExecutor
from gitopsd.rollout.spec import RolloutSpec, TargetNode
from gitopsd.rollout.steps import Rollback
from gitopsd.store.sqlite import SqliteStore
from tests.faults.faultproxy import FaultProxy, Rule, run_on
from tests.fleetfixture import TOKEN, Fleet
from tests.wasm_modules import handler_wasm


class RecordingClient(AgentClient):
    """The real client, remembering when each call started and ended."""

    calls: list[str]

    async def _call(self, node: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        self.calls.append(f"start {method} {node}")
        try:
            return await super()._call(node, method, path, **kwargs)
        finally:
            self.calls.append(f"end {method} {node}")


async def _serve_both(client: AgentClient, nodes: list[str]) -> None:
    """Every node runs 1.0.0 and 2.0.0, with all traffic on 2.0.0 (a flipped blue-green)."""
    for version in ("1.0.0", "2.0.0"):
        wasm = handler_wasm(version)
        sha = hashlib.sha256(wasm).hexdigest()
        for node in nodes:
            await client.ensure_module(node, sha, wasm)
            await client.load_version(node, "fn", version, {"sha256": sha})
    for node in nodes:
        await client.set_traffic(node, "fn", [("2.0.0", 100.0)])


def test_rollback_flips_every_node_before_unloading_the_new_version(
    fleet: Fleet, tmp_path: Path
) -> None:
    nodes = sorted(fleet.nodes)
    # edge-c flips slowly: with one call chain per node, the others would unload meanwhile
    proxy = FaultProxy(fleet.nodes["edge-c"].url)
    run_on(fleet.loop, proxy.start())
    fleet.readdress("edge-c", proxy.url)  # its token is the one for the proxy's address
    addresses = {n: fleet.nodes[n].url for n in nodes} | {"edge-c": proxy.url}
    spec = RolloutSpec(
        function="fn",
        version="2.0.0",
        commit="c" * 40,
        sha256="0" * 64,
        strategy={"type": "blue-green"},
        nodes=tuple(TargetNode(n, "r", addresses[n], old_version="1.0.0") for n in nodes),
    )

    async def rollback() -> tuple[bool, list[str]]:
        async with RecordingClient(addresses, TOKEN) as client:
            client.calls = []
            await _serve_both(client, nodes)
            client.calls.clear()
            proxy.rules[:] = [Rule("slow", "PUT", "/functions/fn/traffic", delay=0.5)]
            store = SqliteStore(tmp_path / "state")
            try:
                executor = StepExecutor(spec, client, store, lambda: 0.0)
                outcome = await executor.rollback(Rollback(tuple(nodes)))
            finally:
                store.close()
            return outcome.ok, client.calls

    try:
        ok, calls = asyncio.run(rollback())
    finally:
        run_on(fleet.loop, proxy.close())
    assert ok
    first_unload = calls.index(next(c for c in calls if c.startswith("start DELETE")))
    assert calls.index("end PUT edge-c") < first_unload, calls
    for node in nodes:
        assert list(fleet.inventory(node)["functions"]["fn"]["versions"]) == ["1.0.0"]
    assert set(fleet.serving("fn").values()) == {"1.0.0"}
