"""Per-version call metrics, as the JSON of docs/agent-api.md and, through prometheus_client
(a custom collector), as Prometheus text.

Updated only from the event loop thread, after a call returns, so no locking is needed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gitopsd.agent.runtime import CallResult, Outcome

# Upper bounds (ms) of the latency histogram, as in the contract; "+Inf" is implicit.
LATENCY_BUCKETS_MS: tuple[int, ...] = (1, 5, 10, 25, 50, 100)
SAMPLES = 1000
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what `exposition` writes


class VersionMetrics:
    """Counters, latency histogram, recent latency samples and memory peak of one version."""

    __slots__ = (
        "_bucket_counts",
        "errors",
        "latency_count",
        "latency_sum",
        "memory_peak_bytes",
        "requests",
        "samples",
        "timeouts",
        "traps",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.traps = 0
        self.timeouts = 0
        self._bucket_counts = [0] * len(LATENCY_BUCKETS_MS)  # not cumulative; see buckets()
        self.latency_sum = 0.0
        self.latency_count = 0
        self.samples: deque[float] = deque(maxlen=SAMPLES)
        self.memory_peak_bytes = 0

    def record(self, result: CallResult) -> None:
        """Count one call."""
        self.requests += 1
        if result.outcome is not Outcome.OK:
            self.errors += 1
            if result.outcome is Outcome.TRAP:
                self.traps += 1
            elif result.outcome is Outcome.TIMEOUT:
                self.timeouts += 1
        latency = result.duration_ms
        for i, bound in enumerate(LATENCY_BUCKETS_MS):
            if latency <= bound:
                self._bucket_counts[i] += 1
                break
        self.latency_sum += latency
        self.latency_count += 1
        self.samples.append(round(latency, 3))
        self.memory_peak_bytes = max(self.memory_peak_bytes, result.memory_bytes)

    def buckets(self) -> dict[str, int]:
        """Cumulative counts per upper bound, Prometheus-style, ending with "+Inf"."""
        out: dict[str, int] = {}
        running = 0
        for bound, count in zip(LATENCY_BUCKETS_MS, self._bucket_counts, strict=True):
            running += count
            out[str(bound)] = running
        out["+Inf"] = self.latency_count
        return out

    def to_json(self) -> dict[str, Any]:
        """The METRICS object of the contract."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "traps": self.traps,
            "timeouts": self.timeouts,
            "latencyMs": {
                "buckets": self.buckets(),
                "sum": round(self.latency_sum, 3),
                "count": self.latency_count,
            },
            "samples": list(self.samples),
            "memoryPeakBytes": self.memory_peak_bytes,
        }


@dataclass(frozen=True, slots=True)
class Series:
    """The metrics of one loaded version, with what identifies it."""

    function: str
    version: str
    metrics: VersionMetrics
    traffic_percent: float


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """What the agent says about itself in `/metrics`, beside the versions."""

    node: str
    generation: int
    memory_budget_bytes: int
    memory_used_bytes: int


# Upper bounds of the Prometheus latency histogram, in seconds (the JSON's, in ms, / 1000).
LATENCY_BUCKETS_S: tuple[float, ...] = tuple(ms / 1000 for ms in LATENCY_BUCKETS_MS)


class AgentCollector(Collector):
    """The agent's `/metrics`, gathered at each scrape (prometheus_client's custom collector):
    per loaded version (versions come and go, so no series is kept for one unloaded) and
    per node. Latency in seconds, memory in bytes, as Prometheus names them."""

    def __init__(
        self,
        node: Callable[[], NodeFigures],
        series: Callable[[], Iterable[Series]],
        counters: AgentCounters,
    ) -> None:
        self._node = node
        self._series = series
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        figures = self._node()
        rows = list(self._series())
        node = [figures.node]
        for name, help_text, value in (
            ("gitopsd_agent_generation", "State generation of the agent.", figures.generation),
            (
                "gitopsd_agent_memory_budget_bytes",
                "Memory budget of the agent.",
                figures.memory_budget_bytes,
            ),
            (
                "gitopsd_agent_memory_used_bytes",
                "Sum of the memory limits of the loaded versions.",
                figures.memory_used_bytes,
            ),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=["node"])
            gauge.add_metric(node, value)
            yield gauge
        labels = ["node", "function", "version"]
        for field, help_text in (
            ("requests", "Calls served."),
            ("errors", "Failed calls (traps, timeouts and non-zero exits included)."),
            ("traps", "Calls that trapped."),
            ("timeouts", "Calls that exceeded their timeout."),
        ):
            counter = CounterMetricFamily(f"gitopsd_agent_{field}", help_text, labels=labels)
            for s in rows:
                counter.add_metric([figures.node, s.function, s.version], getattr(s.metrics, field))
            yield counter
        latency = HistogramMetricFamily(
            "gitopsd_agent_latency_seconds", "Call latency.", labels=labels
        )
        for s in rows:
            cumulative = s.metrics.buckets()
            buckets = [
                (repr(bound), cumulative[str(ms)])
                for bound, ms in zip(LATENCY_BUCKETS_S, LATENCY_BUCKETS_MS, strict=True)
            ]
            buckets.append(("+Inf", cumulative["+Inf"]))
            latency.add_metric(
                [figures.node, s.function, s.version], buckets, s.metrics.latency_sum / 1000
            )
        yield latency
        peak = GaugeMetricFamily(
            "gitopsd_agent_memory_peak_bytes",
            "Largest linear memory seen in a call.",
            labels=labels,
        )
        traffic = GaugeMetricFamily(
            "gitopsd_agent_traffic_percent", "Traffic weight of the version.", labels=labels
        )
        for s in rows:
            peak.add_metric([figures.node, s.function, s.version], s.metrics.memory_peak_bytes)
            traffic.add_metric([figures.node, s.function, s.version], s.traffic_percent)
        yield peak
        yield traffic
        internal = CounterMetricFamily(
            "gitopsd_agent_internal_errors",
            "Requests the agent failed by its own fault (not counted against any version).",
            labels=["node"],
        )
        internal.add_metric(node, self._counters.internal_errors)
        yield internal
        refused = CounterMetricFamily(
            "gitopsd_agent_refused",
            "Client requests and connections the agent refused or closed, by reason.",
            labels=["node", "reason"],
        )
        for reason, count in self._counters.refused.items():
            refused.add_metric([figures.node, reason], count)
        yield refused


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the text format (CONTENT_TYPE)."""
    return generate_latest(registry)


# Why the agent refused or dropped a request or connection of a client (`AgentCounters`).
REFUSALS = (
    "bad_header",  # a header value that is not UTF-8 (400)
    "body_budget",  # the bodies held at once would exceed body_buffer_bytes (503)
    "body_timeout",  # a body did not arrive within body_timeout_s (408)
    "connection_limit",  # a connection beyond the cap, or a call beyond its data share
    "evicted",  # a connection without a request in progress, closed to make room
    "head_timeout",  # a request head did not arrive within head_timeout_s
    "idle_timeout",  # a kept-alive connection idle for idle_timeout_s
)


class AgentCounters:
    """What the agent itself did to requests, never counted against a version: requests
    it failed by its own fault (a bug: 500) and clients it refused (by reason)."""

    __slots__ = ("internal_errors", "refused")

    def __init__(self) -> None:
        self.internal_errors = 0
        self.refused = dict.fromkeys(REFUSALS, 0)

    def refuse(self, reason: str) -> None:
        """Count one refusal; `reason` is one of REFUSALS."""
        self.refused[reason] += 1
