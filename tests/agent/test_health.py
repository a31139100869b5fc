"""POST /functions/{fn}/versions/{version}/health."""

from __future__ import annotations

from typing import Any

from tests.agent.conftest import Client
from tests.wasm_modules import compile_wat, handler_wasm


async def _health(client: Client, version: str, body: Any = None) -> tuple[int, Any]:
    async with client.session.post(
        f"/functions/f/versions/{version}/health", json=body, headers=client.auth
    ) as r:
        return r.status, await r.json()


async def test_healthy_and_unhealthy(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "good", wasm["ok"])
    await client.deploy("f", "bad", handler_wasm(health="FAIL"))
    await client.deploy(
        "f", "custom", handler_wasm(health="ready\n"), healthCheck={"expect": "ready"}
    )
    status, good = await _health(client, "good")
    assert status == 200
    assert good["healthy"] is True
    assert good["output"] == "OK"
    assert good["error"] is None
    assert isinstance(good["durationMs"], float)
    status, bad = await _health(client, "bad", {"timeoutMs": 1000})
    assert (status, bad["healthy"], bad["output"]) == (200, False, "FAIL")
    assert "expected 'OK'" in bad["error"]
    status, custom = await _health(client, "custom")
    assert custom["healthy"] is True  # stdout is compared stripped
    # Health checks are not counted as requests.
    metrics = await client.get_json("/functions/f/metrics")
    assert all(v["requests"] == 0 for v in metrics["versions"].values())


async def test_failing_health_exports(client: Client, wasm: dict[str, bytes]) -> None:
    spin = compile_wat(
        '(module (memory (export "memory") 1) (func (export "_start"))'
        ' (func (export "health_check") (loop (br 0))))'
    )
    await client.deploy("f", "spin", spin)
    await client.deploy("f", "none", wasm["ok"], healthCheck={"function": "ready"})
    status, answer = await _health(client, "spin", {"timeoutMs": 50})
    assert (status, answer["healthy"]) == (200, False)
    assert "timeout" in answer["error"]
    status, answer = await _health(client, "none")
    assert (status, answer["healthy"]) == (200, False)
    assert "ready" in answer["error"]


async def test_unknown_version(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "1", wasm["ok"])
    assert (await _health(client, "2"))[0] == 404
