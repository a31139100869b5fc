"""GET /functions/{fn}/metrics (JSON) and GET /metrics (Prometheus text)."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from tests.agent.conftest import Client


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample, read with prometheus_client's parser (which refuses malformed text)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_function_metrics_json(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "1", wasm["ok"])
    await client.deploy("f", "2", wasm["trap"])
    await client.traffic(
        "f",
        weights=[{"version": "1", "percent": 100}],
        rules=[{"header": "X-Trap", "equals": "yes", "version": "2"}],
    )
    for _ in range(4):
        await client.call("f")
    await client.call("f", headers={"X-Trap": "yes"})
    doc = await client.get_json("/functions/f/metrics")
    assert doc["function"] == "f"
    one, two = doc["versions"]["1"], doc["versions"]["2"]
    assert set(one) == {
        "requests",
        "errors",
        "traps",
        "timeouts",
        "latencyMs",
        "samples",
        "memoryPeakBytes",
    }
    assert (one["requests"], one["errors"], two["requests"], two["traps"]) == (4, 0, 1, 1)
    latency = one["latencyMs"]
    assert list(latency["buckets"]) == ["1", "5", "10", "25", "50", "100", "+Inf"]
    assert latency["buckets"]["+Inf"] == latency["count"] == 4
    assert latency["sum"] > 0
    assert len(one["samples"]) == 4
    assert one["memoryPeakBytes"] > 0
    async with client.session.get("/functions/nope/metrics", headers=client.auth) as r:
        assert r.status == 404


async def test_prometheus_text(client: Client, wasm: dict[str, bytes]) -> None:
    await client.deploy("f", "1", wasm["ok"])
    await client.deploy("g", "a", wasm["trap"])
    for _ in range(3):
        await client.call("f")
    await client.call("g")
    async with client.session.get("/metrics", headers=client.auth) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        samples = parse_prometheus(await r.text())

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset({"node": "edge-test-1", **labels}.items()))]

    assert value("gitopsd_agent_requests_total", function="f", version="1") == 3
    assert value("gitopsd_agent_traps_total", function="g", version="a") == 1
    assert value("gitopsd_agent_latency_seconds_bucket", function="f", version="1", le="+Inf") == 3
    assert value("gitopsd_agent_latency_seconds_count", function="f", version="1") == 3
    assert value("gitopsd_agent_traffic_percent", function="f", version="1") == 100
    assert value("gitopsd_agent_generation") == 2
    assert value("gitopsd_agent_memory_used_bytes") == 128 * 1024 * 1024
    assert value("gitopsd_agent_internal_errors_total") == 0
    assert value("gitopsd_agent_refused_total", reason="evicted") == 0
    # Latency in seconds: the JSON's milliseconds / 1000, bucket by bucket.
    async with client.session.get("/functions/f/metrics", headers=client.auth) as r:
        latency = (await r.json())["versions"]["1"]["latencyMs"]
    for bound_ms, count in latency["buckets"].items():
        le = "+Inf" if bound_ms == "+Inf" else repr(int(bound_ms) / 1000)
        assert value("gitopsd_agent_latency_seconds_bucket", function="f", version="1", le=le) == (
            count
        )
    seconds = value("gitopsd_agent_latency_seconds_sum", function="f", version="1")
    # The JSON's sum is rounded to a microsecond: three fast calls sum to well under 1 ms.
    assert math.isclose(seconds * 1000, latency["sum"], rel_tol=1e-3, abs_tol=0.0005)
