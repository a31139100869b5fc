"""The data plane: POST /fn/{fn}, routing, failures contained."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.agent.conftest import Client
from tests.wasm_modules import handler_wasm


async def test_answers_with_the_serving_version(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "1.0.0", wasm["ok"])
    async with client.session.post("/fn/f", data=b"") as r:
        assert r.status == 200
        assert r.headers["X-Gitopsd-Version"] == "1.0.0"
        assert await r.read() == b"hello"


async def test_unknown_function_is_404(client: Client) -> None:
    async with client.session.post("/fn/nope") as r:
        assert r.status == 404
        assert "nope" in (await r.json())["error"]


async def test_body_on_stdin_and_metadata_in_env(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("echo", "1", wasm["echo"])
    await client.deploy("env", "7.1.0", wasm["env"])
    body = b"\x00binary\xffbody" * 1000
    assert await client.call("echo", body) == (200, "1", b"hello" + body)
    assert await client.call("env") == (200, "7.1.0", b"7.1.0")


async def test_cgi_headers_set_status_and_type(client: Client) -> None:
    module = handler_wasm("content-type: text/plain\nstatus: 418\n\nteapot")
    await client.deploy("cgi", "1", module)
    async with client.session.post("/fn/cgi") as r:
        assert r.status == 418
        assert r.headers["Content-Type"] == "text/plain"
        assert await r.text() == "teapot"


async def test_failures_are_contained_and_counted(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("ok", "1", wasm["ok"])
    await client.deploy("trap", "1", wasm["trap"])
    await client.deploy("exit", "1", wasm["exit1"])
    await client.deploy("grow", "1", wasm["grow"], limits={"memoryMiB": 2})
    for _ in range(3):
        assert (await client.call("trap"))[:2] == (500, "1")
    status, version, body = await client.call("exit")
    assert (status, version) == (500, "1")
    assert b"exited with code 1" in body
    assert (await client.call("grow"))[0] == 500
    assert await client.call("ok") == (200, "1", b"hello")
    trap = (await client.get_json("/functions/trap/metrics"))["versions"]["1"]
    assert (trap["requests"], trap["errors"], trap["traps"], trap["timeouts"]) == (3, 3, 3, 0)
    exit1 = (await client.get_json("/functions/exit/metrics"))["versions"]["1"]
    assert (exit1["errors"], exit1["traps"]) == (1, 0)
    grow = (await client.get_json("/functions/grow/metrics"))["versions"]["1"]
    assert grow["traps"] == 1
    assert grow["memoryPeakBytes"] == 2 * 1024 * 1024  # grew up to the limit, not past it


async def test_timeout_is_504_and_the_agent_keeps_serving(
    client: Client, wasm: dict[str, bytes]
) -> None:
    await client.deploy("spin", "1", wasm["loop"], limits={"memoryMiB": 1, "timeoutMs": 1500})
    await client.deploy("ok", "1", wasm["ok"])
    spinning = asyncio.create_task(client.call("spin"))
    await asyncio.sleep(0)  # let the request go out
    for _ in range(5):
        async with client.session.get("/healthz") as r:
            assert r.status == 200
        assert await client.call("ok") == (200, "1", b"hello")
    # All of the above was answered while the spinning call was still running.
    assert not spinning.done()
    status, version, body = await spinning
    assert (status, version) == (504, "1")
    assert b"timeout" in body
    metrics = (await client.get_json("/functions/spin/metrics"))["versions"]["1"]
    assert (metrics["requests"], metrics["errors"], metrics["timeouts"]) == (1, 1, 1)


async def test_weights_with_sticky_bucketing(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "old", handler_wasm("old"))
    await client.deploy("f", "new", handler_wasm("new"))
    status, _ = await client.traffic(
        "f", weights=[{"version": "new", "percent": 30}, {"version": "old", "percent": 70}]
    )
    assert status == 200
    keys = [f"user-{i}" for i in range(2000)]
    sem = asyncio.Semaphore(32)

    async def call(key: str) -> str | None:
        async with sem:
            status, version, body = await client.call("f", headers={"X-User-Id": key})
            assert status == 200
            assert body.decode() == version
            return version

    first = await asyncio.gather(*(call(k) for k in keys))
    share = Counter(first)["new"] / len(keys)
    assert 0.25 <= share <= 0.35
    # The same key always lands on the same version.
    again = await asyncio.gather(*(call(k) for k in keys[:300]))
    assert again == first[:300]


async def test_header_rules(client: Client) -> None:
    await client.deploy("f", "a", handler_wasm("a"))
    await client.deploy("f", "b", handler_wasm("b"))
    await client.traffic(
        "f",
        weights=[{"version": "a", "percent": 100}],
        rules=[{"header": "X-Variant", "equals": "b", "version": "b"}],
    )
    assert (await client.call("f", headers={"x-variant": "b"}))[1] == "b"
    assert (await client.call("f", headers={"X-Variant": "c"}))[1] == "a"
    assert (await client.call("f"))[1] == "a"
