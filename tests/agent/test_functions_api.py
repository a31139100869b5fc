"""Loading versions, traffic, deletion, inventory and generation."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.agent.conftest import Client
from tests.wasm_modules import compile_wat, handler_wasm


async def _generation(client: Client) -> int:
    inventory = await client.inventory()
    return int(inventory["generation"])


async def test_inventory_shape(client: Client, wasm: dict[str, bytes]) -> None:
    empty = await client.inventory()
    assert empty == {
        "node": "edge-test-1",
        "region": "test-region",
        "labels": {"tier": "test"},
        "generation": 0,
        "memoryBudgetMiB": 1024,
        "memoryUsedMiB": 0,
        "functions": {},
    }
    await client.deploy(
        "image-processor",
        "1.2.0",
        wasm["ok"],
        limits={"memoryMiB": 32, "timeoutMs": 250},
        healthCheck={"function": "health_check", "expect": "OK"},
        stickyHeader="X-Session",
    )
    inventory = await client.inventory()
    assert inventory["generation"] == 1
    assert inventory["memoryUsedMiB"] == 32
    fn = inventory["functions"]["image-processor"]
    version = fn["versions"]["1.2.0"]
    assert version["sha256"] == hashlib.sha256(wasm["ok"]).hexdigest()
    assert version["limits"] == {"memoryMiB": 32, "timeoutMs": 250}
    assert version["healthCheck"] == {"function": "health_check", "expect": "OK"}
    assert isinstance(version["loadedAt"], float)
    assert fn["traffic"] == [{"version": "1.2.0", "percent": 100}]
    assert fn["rules"] == []
    assert fn["stickyHeader"] == "X-Session"


async def test_defaults_and_several_versions(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "1.0.0", wasm["ok"])
    await client.deploy("f", "1.1.0", handler_wasm("v2"))
    await client.deploy("f", "2.0.0", handler_wasm("v3"))
    inventory = await client.inventory()
    fn = inventory["functions"]["f"]
    assert set(fn["versions"]) == {"1.0.0", "1.1.0", "2.0.0"}
    assert fn["versions"]["1.1.0"]["limits"] == {"memoryMiB": 64, "timeoutMs": 100}
    assert fn["stickyHeader"] == "X-User-Id"
    # Only the first version got traffic; the others wait for PUT .../traffic.
    assert fn["traffic"] == [{"version": "1.0.0", "percent": 100}]
    assert inventory["memoryUsedMiB"] == 3 * 64
    assert inventory["generation"] == 3
    for _ in range(5):
        assert await client.call("f") == (200, "1.0.0", b"hello")


async def test_generation_counts_changes_only(client: Client, wasm: dict[str, bytes]) -> None:
    await client.upload(wasm["echo"])
    assert await _generation(client) == 0  # uploads are not state changes
    await client.deploy("f", "1", wasm["ok"])
    assert await _generation(client) == 1
    await client.deploy("f", "1", wasm["ok"])  # same sha: no-op
    assert await _generation(client) == 1
    await client.deploy("f", "1", wasm["ok"], limits={"memoryMiB": 8})  # new limits
    assert await _generation(client) == 2
    await client.deploy("f", "1", wasm["echo"])  # another sha replaces the version
    assert await _generation(client) == 3
    assert (await client.call("f", b"!"))[2] == b"hello!"
    await client.deploy("f", "2", wasm["ok"])
    status, _ = await client.traffic("f", weights=[{"version": "1", "percent": 100}])
    assert status == 200
    assert await _generation(client) == 4  # the same weights again change nothing
    await client.traffic(
        "f", weights=[{"version": "2", "percent": 50}, {"version": "1", "percent": 50}]
    )
    assert await _generation(client) == 5
    await client.traffic(
        "f", weights=[{"version": "2", "percent": 0}, {"version": "1", "percent": 100}]
    )
    async with client.session.delete("/functions/f/versions/2", headers=client.auth) as r:
        assert r.status == 200
    assert await _generation(client) == 7


async def test_load_errors(client: Client, wasm: dict[str, bytes]) -> None:
    async def load(body: dict[str, Any], path: str = "/functions/f/versions/1") -> tuple[int, str]:
        async with client.session.put(path, json=body, headers=client.auth) as r:
            return r.status, (await r.json())["error"]

    missing = hashlib.sha256(b"never uploaded").hexdigest()
    status, error = await load({"sha256": missing})
    assert status == 404
    assert "upload it" in error
    sha = await client.upload(wasm["ok"])
    status, error = await load({"sha256": sha, "limits": {"timeoutMS": 5}})
    assert status == 400
    assert "timeoutMS" in error
    status, error = await load({"sha256": sha, "limits": {"memoryMiB": 0}})
    assert status == 400
    assert "memoryMiB" in error
    status, error = await load({"sha256": "abc"})
    assert (status, "64 hex digits" in error) == (400, True)
    status, error = await load({"sha256": sha}, "/functions/f/versions/bad%20name")
    assert status == 400
    assert "version name" in error
    async with client.session.put(
        "/functions/f/versions/1", data=b"{not json", headers=client.auth
    ) as r:
        assert r.status == 400
        assert "JSON" in (await r.json())["error"]
    # Does not link: an import outside wasi_snapshot_preview1.
    bad = compile_wat('(module (import "env" "now" (func)) (func (export "_start")))')
    status, error = await load({"sha256": await client.upload(bad)})
    assert status == 400
    assert "does not link" in error
    assert "env" in error
    # Does not instantiate: a memory minimum of 20 pages (1.25 MiB) over a 1 MiB limit.
    big = compile_wat('(module (memory 20) (func (export "_start")))')
    status, error = await load({"sha256": await client.upload(big), "limits": {"memoryMiB": 1}})
    assert status == 400
    assert "instantiate" in error
    assert (await client.inventory())["functions"] == {}


async def test_traffic_validation(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "1", wasm["ok"])
    await client.deploy("f", "2", wasm["ok"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"weights": [{"version": "1", "percent": 60}]}, "sum to 60"),
        ({"weights": [{"version": "3", "percent": 100}]}, "no loaded version '3'"),
        (
            {
                "weights": [{"version": "1", "percent": 100}],
                "rules": [{"header": "X-V", "equals": "b", "version": "9"}],
            },
            "'9'",
        ),
        ({"weights": [{"version": "1", "percent": 50}, {"version": "1", "percent": 50}]}, "twice"),
        ({"weights": []}, "weights"),
        ({"weights": [{"version": "1", "percent": 100}], "stickyHeader": "bad header"}, "sticky"),
    ]
    for body, message in cases:
        status, answer = await client.traffic("f", **body)
        assert status == 400, body
        assert message in answer["error"], answer
    status, _ = await client.traffic("nope", weights=[{"version": "1", "percent": 100}])
    assert status == 404


async def test_delete_rules(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "1", wasm["ok"])
    await client.deploy("f", "2", wasm["ok"])
    await client.traffic(
        "f",
        weights=[{"version": "2", "percent": 10}, {"version": "1", "percent": 90}],
        rules=[{"header": "X-Variant", "equals": "b", "version": "2"}],
    )

    async def delete(path: str) -> int:
        async with client.session.delete(path, headers=client.auth) as r:
            return r.status

    assert await delete("/functions/f/versions/2") == 409  # still has 10 %
    assert await delete("/functions/f/versions/9") == 404
    assert await delete("/functions/nope/versions/1") == 404
    await client.traffic(
        "f",
        weights=[{"version": "1", "percent": 100}],
        rules=[{"header": "X-Variant", "equals": "b", "version": "2"}],
    )
    assert await delete("/functions/f/versions/2") == 200  # no weight: allowed
    fn = (await client.inventory())["functions"]["f"]
    assert set(fn["versions"]) == {"1"}
    assert fn["rules"] == []  # the rule naming the deleted version went with it
    # The last version may go even with 100 %: the function goes with it.
    assert await delete("/functions/f/versions/1") == 200
    assert (await client.inventory())["functions"] == {}
    assert (await client.call("f"))[0] == 404

    await client.deploy("g", "1", wasm["ok"])
    await client.deploy("g", "2", wasm["ok"])
    assert await delete("/functions/g") == 200
    assert await delete("/functions/g") == 404
    assert (await client.inventory())["functions"] == {}
