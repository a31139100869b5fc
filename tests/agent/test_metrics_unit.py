"""Per-version metrics (pure)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gitopsd.agent.metrics import (
    SAMPLES,
    AgentCollector,
    AgentCounters,
    NodeFigures,
    Series,
    VersionMetrics,
    exposition,
)
from gitopsd.agent.runtime import CallResult, Outcome


def _result(outcome: Outcome, ms: float, memory: int = 65536) -> CallResult:
    return CallResult(outcome, b"", b"", None, None, ms, memory)


def test_counters_histogram_samples_and_peak() -> None:
    m = VersionMetrics()
    for ms in (0.5, 3, 7, 30, 200):
        m.record(_result(Outcome.OK, ms))
    m.record(_result(Outcome.TRAP, 0.2, memory=1 << 20))
    m.record(_result(Outcome.TIMEOUT, 101))
    m.record(_result(Outcome.EXIT, 0.3))
    doc = m.to_json()
    assert (doc["requests"], doc["errors"], doc["traps"], doc["timeouts"]) == (8, 3, 1, 1)
    assert doc["latencyMs"]["buckets"] == {
        "1": 3,
        "5": 4,
        "10": 5,
        "25": 5,
        "50": 6,
        "100": 6,
        "+Inf": 8,
    }
    assert doc["latencyMs"]["count"] == 8
    assert doc["memoryPeakBytes"] == 1 << 20
    assert len(doc["samples"]) == 8


def test_samples_keep_the_most_recent() -> None:
    m = VersionMetrics()
    for i in range(SAMPLES + 50):
        m.record(_result(Outcome.OK, float(i)))
    assert len(m.samples) == SAMPLES
    assert m.samples[0] == 50.0


def _text(node: str, series: list[Series], counters: AgentCounters) -> str:
    registry = CollectorRegistry(auto_describe=False)
    figures = NodeFigures(node, 1, 1024 * 1024 * 1024, 64 * 1024 * 1024)
    registry.register(AgentCollector(lambda: figures, lambda: series, counters))
    return exposition(registry).decode()


def test_label_values_round_trip() -> None:
    text = _text('no"de', [Series("f", "1\\2\nx", VersionMetrics(), 100.0)], AgentCounters())
    labels = [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gitopsd_agent_requests_total"
    ]
    assert labels == [{"node": 'no"de', "function": "f", "version": "1\\2\nx"}]


def test_latency_in_seconds_memory_in_bytes_and_the_agents_own_counters() -> None:
    m = VersionMetrics()
    for ms in (0.5, 3, 30, 200):
        m.record(_result(Outcome.OK, ms))
    counters = AgentCounters()
    counters.internal_errors = 2
    counters.refuse("evicted")
    text = _text("n", [Series("f", "1", m, 25.0)], counters)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "gitopsd_agent_latency_ms" not in families
    latency = families["gitopsd_agent_latency_seconds"]
    assert latency.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in latency.samples if s.name.endswith("_bucket")}
    assert buckets == {
        "0.001": 1,
        "0.005": 2,
        "0.01": 2,
        "0.025": 2,
        "0.05": 3,
        "0.1": 3,
        "+Inf": 4,
    }
    [total] = [s.value for s in latency.samples if s.name.endswith("_sum")]
    assert total == 0.2335
    [used] = families["gitopsd_agent_memory_used_bytes"].samples
    [budget] = families["gitopsd_agent_memory_budget_bytes"].samples
    assert (used.value, budget.value) == (64 * 1024 * 1024, 1024 * 1024 * 1024)
    [internal] = families["gitopsd_agent_internal_errors"].samples
    assert (internal.name, internal.value) == ("gitopsd_agent_internal_errors_total", 2)
    refused = {s.labels["reason"]: s.value for s in families["gitopsd_agent_refused"].samples}
    assert refused["evicted"] == 1 and refused["idle_timeout"] == 0
