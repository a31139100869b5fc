"""Bearer auth on every control endpoint; /healthz and /fn stay open."""

from __future__ import annotations

import hashlib

import pytest

from tests.agent.conftest import Client

SHA = hashlib.sha256(b"x").hexdigest()
CONTROL = [
    ("HEAD", f"/modules/{SHA}"),
    ("PUT", f"/modules/{SHA}"),
    ("PUT", "/functions/f/versions/1"),
    ("DELETE", "/functions/f/versions/1"),
    ("DELETE", "/functions/f"),
    ("PUT", "/functions/f/traffic"),
    ("POST", "/functions/f/versions/1/health"),
    ("GET", "/inventory"),
    ("GET", "/functions/f/metrics"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_control_endpoints_need_the_token(
    client: Client, wasm: dict[str, bytes], headers: dict[str, str]
) -> None:
    await client.deploy("f", "1", wasm["ok"])
    for method, path in CONTROL:
        async with client.session.request(method, path, headers=headers, data=b"x") as r:
            assert r.status == 401, (method, path)
            if method != "HEAD":
                assert "bearer token" in (await r.json())["error"]
    inventory = await client.inventory()
    assert set(inventory["functions"]["f"]["versions"]) == {"1"}  # nothing was changed


async def test_healthz_and_data_plane_are_open(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "1", wasm["ok"])
    async with client.session.get("/healthz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok", "node": "edge-test-1"}
    assert (await client.call("f"))[0] == 200


async def test_right_token_is_accepted(client: Client) -> None:
    async with client.session.get("/inventory", headers=client.auth) as r:
        assert r.status == 200
