"""Content-addressed module upload: PUT and HEAD /modules/{sha256}."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp

from gitopsd.agent import Runtime, start_agent
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
