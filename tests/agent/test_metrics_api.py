"""GET /functions/{fn}/metrics (JSON) and GET /metrics (Prometheus text)."""

from __future__ import annotations

import re

from tests.agent.conftest import Client

# One sample line of the text exposition format: name{labels} value
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
    r" (?P<value>[-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the text format strictly enough to catch malformed output."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed line: {line!r}"
        name = match["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"sample before its TYPE: {line!r}"
        labels = frozenset(_LABEL.findall(match["labels"] or ""))
        samples[(name, labels)] = float(match["value"])
    return samples


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
    assert value("gitopsd_agent_latency_ms_bucket", function="f", version="1", le="+Inf") == 3
    assert value("gitopsd_agent_latency_ms_count", function="f", version="1") == 3
    assert value("gitopsd_agent_traffic_percent", function="f", version="1") == 100
    assert value("gitopsd_agent_generation") == 2
    assert value("gitopsd_agent_memory_used_mib") == 128
