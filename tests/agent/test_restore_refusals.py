"""What an agent refuses of its own data dir at start and at load (red-team leftovers):

- a state.json whose versions' `limits.memoryMiB` no longer fit in `--memory-mib` (written
  under a larger budget, or edited): the versions that do not fit are refused by the rule
  a load obeys, the rest restores, and the agent stays within its budget;
- a module file swapped on disk (its bytes no longer hash to the digest it is stored
  under): refused, moved aside, so the controller's next deploy uploads it again.

Real agents on loopback, the controller's own fleet client, real modules.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gitopsd.agent import RunningAgent, Runtime, start_agent
from gitopsd.agent.settings import AgentSettings
from gitopsd.errors import AgentError
from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.tokens import FleetAuth
from tests.agent.conftest import TOKEN, Client, settings_for
from tests.wasm_modules import handler_wasm


def refusals(logs: list[dict[str, Any]]) -> dict[tuple[str, str | None], str]:
    return {
        (entry["function"], entry.get("version")): entry["reason"]
        for entry in logs
        if entry["event"] == "agent.restore_refused"
    }


async def deploy(fleet: AgentClient, function: str, version: str, module: bytes) -> None:
    """What a rollout's deploy step does on one node (rollout/executor.py)."""
    sha = hashlib.sha256(module).hexdigest()
    await fleet.ensure_module("edge-1", sha, module)
    body = {"sha256": sha, "limits": {"memoryMiB": 8, "timeoutMs": 1000}}
    await fleet.load_version("edge-1", function, version, body)


def controller(agent: RunningAgent) -> AgentClient:
    return AgentClient({"edge-1": agent.url}, FleetAuth(TOKEN, mode="shared"), retries=0)


# --- the memory budget at restore ---------------------------------------------------------


async def test_a_restart_under_a_smaller_budget_restores_only_what_fits(
    tmp_path: Path, runtime: Runtime
) -> None:
    settings = settings_for(tmp_path / "data", memory_mib=128)
    agent = await start_agent(settings, runtime)
    async with aiohttp.ClientSession(base_url=agent.url) as session:
        client = Client(agent, session)
        for name, mib in (("a", 64), ("b", 32), ("c", 16)):
            await client.deploy(name, "1", handler_wasm(f"{name}-reply"), limits={"memoryMiB": mib})
        before = await client.inventory()
    await agent.close()
    assert before["memoryUsedMiB"] == 112

    smaller = settings_for(tmp_path / "data", memory_mib=80)
    with capture_logs() as logs:
        again = await start_agent(smaller, runtime)
    try:
        async with aiohttp.ClientSession(base_url=again.url) as session:
            client = Client(again, session)
            inventory = await client.inventory()
            # a (64) fits, b (32 more: 96) does not, c (16 more: 80) does.
            assert set(inventory["functions"]) == {"a", "c"}
            assert inventory["memoryUsedMiB"] == 80 <= inventory["memoryBudgetMiB"]
            assert inventory["generation"] == before["generation"] + 1  # the controller looks
            assert await client.call("a") == (200, "1", b"a-reply")
            assert await client.call("c") == (200, "1", b"c-reply")
            assert (await client.call("b"))[0] == 404
            # The controller's redeploy of b is refused by the same rule, with the figures.
            refused = await client.load("b", "1", handler_wasm("b-reply"), limits={"memoryMiB": 32})
            assert refused.status == 409
    finally:
        await again.close()
    reasons = refusals(logs)
    assert set(reasons) == {("b", "1")}
    for figure in ("needs 32 MiB", "budget is 80 MiB", "64 MiB taken"):
        assert figure in reasons[("b", "1")], reasons
    assert not [e for e in logs if e["event"] == "agent.over_memory_budget"]
    state = json.loads((smaller.data_dir / "state.json").read_text())
    assert set(state["functions"]) == {"a", "c"}  # refused entries are gone from disk too


async def test_the_version_that_serves_is_restored_before_a_retained_one(
    tmp_path: Path, runtime: Runtime
) -> None:
    """Blue-green keeps the old version loaded with no traffic: under a budget for one of
    the two, the one that serves is kept, whatever their order in state.json."""
    agent = await start_agent(settings_for(tmp_path / "data", memory_mib=128), runtime)
    async with aiohttp.ClientSession(base_url=agent.url) as session:
        client = Client(agent, session)
        await client.deploy("f", "old", handler_wasm("old"), limits={"memoryMiB": 64})
        await client.deploy("f", "new", handler_wasm("new"), limits={"memoryMiB": 48})
        status, _ = await client.traffic("f", weights=[{"version": "new", "percent": 100}])
        assert status == 200
    await agent.close()

    with capture_logs() as logs:
        again = await start_agent(settings_for(tmp_path / "data", memory_mib=64), runtime)
    try:
        async with aiohttp.ClientSession(base_url=again.url) as session:
            client = Client(again, session)
            inventory = await client.inventory()
            assert set(inventory["functions"]["f"]["versions"]) == {"new"}
            assert await client.call("f") == (200, "new", b"new")
    finally:
        await again.close()
    assert set(refusals(logs)) == {("f", "old")}


# --- a module swapped on disk ---------------------------------------------------------------


async def test_a_module_swapped_while_stopped_is_refused_and_the_next_deploy_uploads_it(
    tmp_path: Path, runtime: Runtime
) -> None:
    settings: AgentSettings = settings_for(tmp_path / "data")
    genuine = handler_wasm("genuine")
    sha = hashlib.sha256(genuine).hexdigest()
    agent = await start_agent(settings, runtime)
    try:
        async with controller(agent) as fleet:
            await deploy(fleet, "f", "1", genuine)
    finally:
        await agent.close()
    module_file = settings.data_dir / "modules" / f"{sha}.wasm"
    module_file.write_bytes(handler_wasm("evil"))  # same name, other bytes

    with capture_logs() as logs:
        again = await start_agent(settings, runtime)
    try:
        async with aiohttp.ClientSession(base_url=again.url) as session:
            client = Client(again, session)
            assert "f" not in (await client.inventory())["functions"]
            assert (await client.call("f"))[0] == 404
            # The controller's next deploy: HEAD says the module is not stored, so it is
            # uploaded again (before: HEAD 200, no upload, and the load refused for ever).
            async with controller(again) as fleet:
                await deploy(fleet, "f", "1", genuine)
            assert await client.call("f") == (200, "1", b"genuine")
    finally:
        await again.close()
    assert "corrupt" in refusals(logs)[("f", "1")]
    refused = [e for e in logs if e["event"] == "agent.module_refused"]
    assert [e["sha256"] for e in refused] == [sha]
    # Kept aside for whoever investigates, not deleted.
    (aside,) = module_file.parent.glob(f"{sha}.wasm.corrupt-*")
    assert aside.read_bytes() == handler_wasm("evil")
    assert module_file.read_bytes() == genuine


async def test_a_module_swapped_while_running_is_refused_at_load_then_uploaded_again(
    tmp_path: Path, runtime: Runtime
) -> None:
    settings = settings_for(tmp_path / "data")
    genuine = handler_wasm("genuine")
    sha = hashlib.sha256(genuine).hexdigest()
    agent = await start_agent(settings, runtime)
    try:
        async with controller(agent) as fleet:
            await fleet.ensure_module("edge-1", sha, genuine)
            (settings.data_dir / "modules" / f"{sha}.wasm").write_bytes(handler_wasm("evil"))
            with pytest.raises(AgentError) as failure:
                await deploy(fleet, "f", "1", genuine)
            assert failure.value.status == 400
            assert "corrupt" in failure.value.reason and "upload it again" in failure.value.reason
            await deploy(fleet, "f", "1", genuine)  # the next deploy
        async with aiohttp.ClientSession(base_url=agent.url) as session:
            assert await Client(agent, session).call("f") == (200, "1", b"genuine")
    finally:
        await agent.close()


async def test_an_upload_replaces_a_stored_file_that_does_not_match_its_digest(
    tmp_path: Path, runtime: Runtime
) -> None:
    agent = await start_agent(settings_for(tmp_path / "data"), runtime)
    genuine = handler_wasm("genuine")
    try:
        async with aiohttp.ClientSession(base_url=agent.url) as session:
            client = Client(agent, session)
            sha = await client.upload(genuine)
            stored = agent.settings.data_dir / "modules" / f"{sha}.wasm"
            stored.write_bytes(b"\0asm swapped")
            await client.deploy("f", "1", genuine)  # uploads the genuine bytes again, loads
            assert stored.read_bytes() == genuine
            assert await client.call("f") == (200, "1", b"genuine")
    finally:
        await agent.close()
