"""Per-version metrics (pure)."""

from __future__ import annotations

from gitopsd.agent.metrics import SAMPLES, Series, VersionMetrics, prometheus_text
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


def test_label_values_are_escaped() -> None:
    text = prometheus_text('no"de', [Series("f", "1\\2", VersionMetrics(), 100.0)], 1, 1024, 64)
    assert 'node="no\\"de"' in text
    assert 'version="1\\\\2"' in text
