"""Bearer auth on every control endpoint; /healthz and /fn stay open."""

from __future__ import annotations

import asyncio
import hashlib
import json

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


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer \xff\xfe", b"Bearer test-token-0123456789\xff", b"\xc3(Bearer"],
    ids=["not-utf8", "right-token-then-junk", "junk-scheme"],
)
async def test_a_token_that_is_not_utf8_is_refused_with_401(
    client: Client, authorization: bytes
) -> None:
    # Issue 14, finding 9: aiohttp hands such bytes over as surrogates, which the token
    # comparison could not encode (500 with a traceback).
    reader, writer = await asyncio.open_connection("127.0.0.1", client.agent.port)
    writer.write(
        b"GET /inventory HTTP/1.1\r\nHost: edge\r\nAuthorization: " + authorization + b"\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 401 "), head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = json.loads(await reader.readexactly(length))
    assert "wrong bearer token" in body["error"]
    writer.close()
