"""Content-addressed module upload: PUT and HEAD /modules/{sha256}; loads within the agent's
memory budget (--memory-mib)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest

from gitopsd.agent import RunningAgent, Runtime, start_agent
from gitopsd.errors import AgentError
from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.tokens import FleetAuth
from tests.agent.conftest import TOKEN, Client, settings_for
from tests.wasm_modules import handler_wat

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_upload_then_head(client: Client, wasm: dict[str, bytes]) -> None:
    sha = hashlib.sha256(wasm["ok"]).hexdigest()
    async with client.session.head(f"/modules/{sha}", headers=AUTH) as r:
        assert r.status == 404
    async with client.session.put(
        f"/modules/{sha}",
        data=wasm["ok"],
        headers={**AUTH, "Content-Type": "application/wasm"},
    ) as r:
        assert r.status == 201
        assert await r.json() == {"sha256": sha}
    async with client.session.head(f"/modules/{sha}", headers=AUTH) as r:
        assert r.status == 200
    stored = client.agent.settings.data_dir / "modules" / f"{sha}.wasm"
    assert stored.read_bytes() == wasm["ok"]
    # Uploading the same bytes again is fine.
    assert await client.upload(wasm["ok"]) == sha


async def test_wrong_digest_is_refused(client: Client, wasm: dict[str, bytes]) -> None:
    other = hashlib.sha256(b"something else").hexdigest()
    async with client.session.put(f"/modules/{other}", data=wasm["ok"], headers=AUTH) as r:
        assert r.status == 400
        assert "sha256 of the body" in (await r.json())["error"]
    async with client.session.head(f"/modules/{other}", headers=AUTH) as r:
        assert r.status == 404


async def test_invalid_wasm_is_refused(client: Client) -> None:
    for body in (b"not wasm at all", handler_wat().encode(), b"\0asm\x01\0\0\0\x01"):
        sha = hashlib.sha256(body).hexdigest()
        async with client.session.put(f"/modules/{sha}", data=body, headers=AUTH) as r:
            assert r.status == 400, body[:20]
            assert "WASM" in (await r.json())["error"]


async def test_malformed_digest(client: Client) -> None:
    async with client.session.put("/modules/xyz", data=b"\0asm", headers=AUTH) as r:
        assert r.status == 400
    async with client.session.head("/modules/xyz", headers=AUTH) as r:
        assert r.status == 404


async def test_over_the_size_cap(tmp_path: Path, runtime: Runtime) -> None:
    agent = await start_agent(settings_for(tmp_path, max_module_bytes=1024), runtime)
    try:
        body = b"\0asm" + bytes(4096)
        sha = hashlib.sha256(body).hexdigest()
        async with (
            aiohttp.ClientSession(base_url=agent.url) as session,
            session.put(f"/modules/{sha}", data=body, headers=AUTH) as r,
        ):
            assert r.status == 413
            assert "cap" in (await r.json())["error"]
    finally:
        await agent.close()


async def test_a_load_over_the_memory_budget_is_refused_with_the_figures(
    tmp_path: Path, runtime: Runtime, wasm: dict[str, bytes]
) -> None:
    agent = await start_agent(settings_for(tmp_path / "data", memory_mib=100), runtime)
    try:
        async with aiohttp.ClientSession(base_url=agent.url) as session:
            client = Client(agent, session)
            await client.deploy("f", "1", wasm["ok"], limits={"memoryMiB": 64})
            generation = (await client.inventory())["generation"]
            refused = await client.load("g", "1", wasm["ok"], limits={"memoryMiB": 40})
            assert refused.status == 409
            async with session.put(
                "/functions/g/versions/1",
                json={
                    "sha256": hashlib.sha256(wasm["ok"]).hexdigest(),
                    "limits": {"memoryMiB": 40},
                },
                headers=AUTH,
            ) as r:
                body = await r.json()
            error = body["error"]
            assert (body["budgetMiB"], body["usedMiB"], body["requestedMiB"]) == (100, 64, 40)
            for figure in ("needs 40 MiB", "budget is 100 MiB", "64 MiB used", "104 MiB after"):
                assert figure in error, error
            inventory = await client.inventory()
            assert set(inventory["functions"]) == {"f"}
            assert inventory["generation"] == generation  # nothing changed
            assert inventory["memoryUsedMiB"] == 64
            # Replacing a version frees its own share: 64 -> 90 MiB fits in 100.
            await client.deploy("f", "1", wasm["ok"], limits={"memoryMiB": 90})
            assert (await client.inventory())["memoryUsedMiB"] == 90
    finally:
        await agent.close()
    # Restarted with a smaller budget: what no longer fits is not restored (the rule of a
    # load, tests/agent/test_restore_refusals.py), loading it again is refused, what fits loads.
    smaller = await start_agent(settings_for(tmp_path / "data", memory_mib=50), runtime)
    try:
        async with aiohttp.ClientSession(base_url=smaller.url) as session:
            client = Client(smaller, session)
            assert (await client.inventory())["memoryUsedMiB"] == 0
            assert (await client.load("f", "1", wasm["ok"], limits={"memoryMiB": 90})).status == 409
            await client.deploy("f", "1", wasm["ok"], limits={"memoryMiB": 50})
            assert (await client.load("f", "1", wasm["ok"], limits={"memoryMiB": 51})).status == 409
    finally:
        await smaller.close()


async def test_the_controller_reports_a_load_over_budget_as_that_nodes_failure(
    tmp_path: Path, runtime: Runtime, wasm: dict[str, bytes]
) -> None:
    agent = await start_agent(settings_for(tmp_path / "data", memory_mib=32), runtime)
    sha = hashlib.sha256(wasm["ok"]).hexdigest()
    body = {"sha256": sha, "limits": {"memoryMiB": 64, "timeoutMs": 100}}
    try:
        async with AgentClient({"edge-1": agent.url}, FleetAuth(TOKEN, mode="shared")) as fleet:
            await fleet.ensure_module("edge-1", sha, wasm["ok"])
            with pytest.raises(AgentError) as failure:
                await fleet.load_version("edge-1", "f", "1", body)
    finally:
        await agent.close()
    assert failure.value.node == "edge-1"
    assert failure.value.status == 409
    assert "needs 64 MiB" in failure.value.reason and "budget is 32 MiB" in failure.value.reason
    assert fleet.request_errors == 0  # an answer, not an unreachable agent: not retried


async def test_a_head_answer_keeps_the_connection(
    agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    """HEAD /modules answers say where they end (Content-Length: 0), so the controller's
    client keeps the connection for the deploy's next request instead of opening another."""
    made: list[str] = []
    trace = aiohttp.TraceConfig()

    async def created(*_: object) -> None:
        made.append("connection")

    trace.on_connection_create_end.append(created)
    sha = hashlib.sha256(wasm["ok"]).hexdigest()
    async with aiohttp.ClientSession(base_url=agent.url, trace_configs=[trace]) as session:
        async with session.head(f"/modules/{sha}", headers=AUTH) as r:
            assert (r.status, r.headers.get("Content-Length")) == (404, "0")
        async with session.put(
            f"/modules/{sha}", data=wasm["ok"], headers={**AUTH, "Content-Type": "application/wasm"}
        ) as r:
            assert r.status == 201
        async with session.head(f"/modules/{sha}", headers=AUTH) as r:
            assert (r.status, r.headers.get("Content-Length")) == (200, "0")
        async with session.get("/inventory", headers=AUTH) as r:
            assert r.status == 200
    assert made == ["connection"]
