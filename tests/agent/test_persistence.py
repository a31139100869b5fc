"""State under --data-dir survives a restart; the token; one agent per data dir."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from gitopsd.agent import Runtime, start_agent
from gitopsd.errors import ConfigError
from tests.agent.conftest import Client, settings_for
from tests.wasm_modules import handler_wasm


async def test_restart_restores_functions_traffic_and_generation(
    tmp_path: Path, runtime: Runtime
) -> None:
    settings = settings_for(tmp_path / "data")
    agent = await start_agent(settings, runtime)
    async with aiohttp.ClientSession(base_url=agent.url) as session:
        client = Client(agent, session)
        await client.deploy("f", "1", handler_wasm("one"), limits={"memoryMiB": 8})
        await client.deploy("f", "2", handler_wasm("two"), stickyHeader="X-Session")
        await client.traffic(
            "f",
            weights=[{"version": "2", "percent": 25}, {"version": "1", "percent": 75}],
            rules=[{"header": "X-Variant", "equals": "b", "version": "2"}],
        )
        await client.deploy("g", "0.1", handler_wasm("gee"))
        before = await client.inventory()
    await agent.close()
    # A crash mid-write would leave a temporary file, never a torn state.json.
    assert not list(settings.data_dir.glob(".*.tmp"))
    json.loads((settings.data_dir / "state.json").read_text())

    # A fresh runtime, as after a process restart: modules come back from the data dir.
    fresh = Runtime(workers=2)
    again = await start_agent(settings, fresh)
    try:
        async with aiohttp.ClientSession(base_url=again.url) as session:
            client = Client(again, session)
            after = await client.inventory()
            assert after == before
            assert after["generation"] == 4
            assert await client.call("g") == (200, "0.1", b"gee")
            assert (await client.call("f", headers={"X-Variant": "b"}))[1] == "2"
            await client.deploy("f", "3", handler_wasm("three"))
            assert (await client.inventory())["generation"] == 5
    finally:
        await again.close()
        fresh.close()


async def test_a_missing_module_drops_its_version_not_the_agent(
    tmp_path: Path, runtime: Runtime
) -> None:
    settings = settings_for(tmp_path / "data")
    agent = await start_agent(settings, runtime)
    async with aiohttp.ClientSession(base_url=agent.url) as session:
        client = Client(agent, session)
        await client.deploy("f", "1", handler_wasm("keep"))
        await client.deploy("g", "1", handler_wasm("lose"))
        lost = (await client.inventory())["functions"]["g"]["versions"]["1"]["sha256"]
    await agent.close()
    (settings.data_dir / "modules" / f"{lost}.wasm").unlink()
    again = await start_agent(settings, runtime)
    try:
        async with aiohttp.ClientSession(base_url=again.url) as session:
            client = Client(again, session)
            inventory = await client.inventory()
            assert set(inventory["functions"]) == {"f"}
            assert inventory["generation"] == 3  # dropping g was a change of state
            assert await client.call("f") == (200, "1", b"keep")
    finally:
        await again.close()


async def test_corrupt_state_is_moved_aside(tmp_path: Path, runtime: Runtime) -> None:
    settings = settings_for(tmp_path / "data")
    settings.data_dir.mkdir()
    (settings.data_dir / "state.json").write_text("{torn")
    agent = await start_agent(settings, runtime)
    try:
        assert agent.service.inventory()["functions"] == {}
        assert len(list(settings.data_dir.glob("state.json.corrupt-*"))) == 1
    finally:
        await agent.close()


async def test_generated_token_is_private_and_reused(tmp_path: Path, runtime: Runtime) -> None:
    settings = settings_for(tmp_path / "data", token=None)
    first = await start_agent(settings, runtime)
    await first.close()
    token_file = settings.data_dir / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(first.token) == 64
    assert token_file.read_text().strip() == first.token
    second = await start_agent(settings, runtime)
    await second.close()
    assert second.token == first.token


async def test_token_file_first_line(tmp_path: Path, runtime: Runtime) -> None:
    token_file = tmp_path / "agent-token"
    token_file.write_text("  s3cret  \nignored\n")
    agent = await start_agent(
        settings_for(tmp_path / "d", token=None, token_file=token_file), runtime
    )
    try:
        assert agent.token == "s3cret"
        assert not (tmp_path / "d" / "token").exists()
        async with (
            aiohttp.ClientSession(base_url=agent.url) as session,
            session.get("/inventory", headers={"Authorization": "Bearer s3cret"}) as r,
        ):
            assert r.status == 200
    finally:
        await agent.close()
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        await start_agent(settings_for(tmp_path / "d", token=None, token_file=token_file), runtime)


async def test_one_agent_per_data_dir(tmp_path: Path, runtime: Runtime) -> None:
    settings = settings_for(tmp_path / "data")
    agent = await start_agent(settings, runtime)
    try:
        with pytest.raises(ConfigError, match="in use"):
            await start_agent(settings, runtime)
    finally:
        await agent.close()
    # Released on close: it can start again.
    await (await start_agent(settings, runtime)).close()


async def test_busy_port_is_a_config_error(tmp_path: Path, runtime: Runtime) -> None:
    agent = await start_agent(settings_for(tmp_path / "a"), runtime)
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            await start_agent(settings_for(tmp_path / "b", port=agent.port), runtime)
        # The failed start released its data dir.
        await (await start_agent(settings_for(tmp_path / "b"), runtime)).close()
    finally:
        await agent.close()


async def test_tampered_state_entries_are_refused_and_the_rest_restores(
    tmp_path: Path, runtime: Runtime
) -> None:
    """state.json is checked as the requests that wrote it were (issue 14, finding 12)."""
    settings = settings_for(tmp_path / "data")
    agent = await start_agent(settings, runtime)
    async with aiohttp.ClientSession(base_url=agent.url) as session:
        client = Client(agent, session)
        for name in ("good", "victim", "split", "sticky"):
            await client.deploy(name, "1", handler_wasm(f"{name}-reply"))
        stored = await client.inventory()
    await agent.close()
    functions = stored["functions"]
    # The module file of "victim" replaced behind the agent's back; the runtime of this
    # process still has the genuine module compiled under that digest.
    victim_sha = functions["victim"]["versions"]["1"]["sha256"]
    (settings.data_dir / "modules" / f"{victim_sha}.wasm").write_bytes(handler_wasm("evil"))
    state_path = settings.data_dir / "state.json"
    state = json.loads(state_path.read_text())
    edited = state["functions"]
    edited["split"]["traffic"] = [{"version": "1", "percent": 100}] * 3  # 300 %
    edited["sticky"]["stickyHeader"] = "X-User-Id\r\nX-Injected"
    edited["bad\nname"] = edited["good"]
    edited["good"]["versions"]["../x"] = edited["good"]["versions"]["1"]
    edited["good"]["versions"]["UPPER"] = dict(
        edited["good"]["versions"]["1"], sha256=victim_sha.upper()
    )
    state_path.write_text(json.dumps(state))

    with capture_logs() as logs:
        again = await start_agent(settings, runtime)
    try:
        async with aiohttp.ClientSession(base_url=again.url) as session:
            client = Client(again, session)
            inventory = await client.inventory()
            assert set(inventory["functions"]) == {"good"}
            assert set(inventory["functions"]["good"]["versions"]) == {"1"}
            assert inventory["generation"] == stored["generation"] + 1
            assert await client.call("good") == (200, "1", b"good-reply")
            for refused in ("victim", "split", "sticky"):
                assert (await client.call(refused))[0] == 404
    finally:
        await again.close()
    refusals = {
        (entry.get("function"), entry.get("version")): entry["reason"]
        for entry in logs
        if entry["event"] == "agent.restore_refused"
    }
    assert set(refusals) == {
        ("victim", "1"),
        ("split", None),
        ("sticky", None),
        ("bad\nname", None),
        ("good", "../x"),
        ("good", "UPPER"),
    }
    assert "corrupt" in refusals[("victim", "1")]
    assert "sum to 300" in refusals[("split", None)]
    assert "sticky header" in refusals[("sticky", None)]
    # What was refused is gone from state.json too, not only from memory.
    assert set(json.loads(state_path.read_text())["functions"]) == {"good"}
