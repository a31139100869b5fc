"""`GET /inventory?wait=`: the request the daemon holds open to learn of every change."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from gitopsd.agent import Runtime, start_agent
from tests.agent.conftest import Client, settings_for


async def _etag(client: Client) -> str:
    async with client.session.get("/inventory", headers=client.auth) as r:
        assert r.status == 200
        return r.headers["ETag"]


async def _held(client: Client, etag: str, wait: str) -> tuple[int, str, bytes]:
    headers = {**client.auth, "If-None-Match": etag}
    async with client.session.get("/inventory", params={"wait": wait}, headers=headers) as r:
        return r.status, r.headers.get("ETag", ""), await r.read()


async def test_a_held_request_answers_with_the_change(
    client: Client, wasm: dict[str, bytes]
) -> None:
    etag = await _etag(client)
    held = asyncio.create_task(_held(client, etag, "60"))
    await asyncio.sleep(0.05)
    assert not held.done()  # nothing changed: the agent holds it
    await client.deploy("f", "1.0.0", wasm["ok"])
    status, new_etag, body = await asyncio.wait_for(held, 30)
    assert status == 200
    assert new_etag != etag
    assert b'"f"' in body  # the new inventory, with the function just loaded


async def test_the_wait_ends_with_304_and_a_stale_etag_gets_200_at_once(
    client: Client, wasm: dict[str, bytes]
) -> None:
    etag = await _etag(client)
    status, same, body = await _held(client, etag, "0.2")
    assert (status, same, body) == (304, etag, b"")
    await client.deploy("f", "1.0.0", wasm["ok"])
    status, _, body = await _held(client, etag, "60")  # the ETag moved before the request
    assert status == 200 and b'"f"' in body


async def test_a_bad_wait_is_refused(client: Client) -> None:
    etag = await _etag(client)
    for bad in ("-1", "301", "soon", "nan"):
        status, _, body = await _held(client, etag, bad)
        assert status == 400, bad
        assert b"wait must be a number of seconds" in body


async def test_a_stopping_agent_answers_its_held_requests(tmp_path: Path, runtime: Runtime) -> None:
    agent = await start_agent(settings_for(tmp_path / "data"), runtime)
    try:
        async with aiohttp.ClientSession(base_url=agent.url) as session:
            client = Client(agent, session)
            etag = await _etag(client)
            held = asyncio.create_task(_held(client, etag, "300"))
            await asyncio.sleep(0.05)
            await agent.close()
            # Released with an answer that says why, not cut off when the grace time ends.
            status, _, body = await asyncio.wait_for(held, 30)
            assert status == 503 and b"agent stopping" in body
    finally:
        await agent.close()
