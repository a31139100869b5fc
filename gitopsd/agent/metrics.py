"""Per-version call metrics, as the JSON of docs/agent-api.md and as Prometheus text.

Updated only from the event loop thread, after a call returns, so no locking is needed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gitopsd.agent.runtime import CallResult, Outcome

# Upper bounds (ms) of the latency histogram, as in the contract; "+Inf" is implicit.
LATENCY_BUCKETS_MS: tuple[int, ...] = (1, 5, 10, 25, 50, 100)
SAMPLES = 1000


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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def prometheus_text(
    node: str,
    series: Iterable[Series],
    generation: int,
    memory_budget_mib: int,
    memory_used_mib: int,
) -> str:
    """Prometheus text exposition format (0.0.4) of every function and version."""
    rows = list(series)
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    node_labels = _labels(node=node)
    family("gitopsd_agent_generation", "gauge", "State generation of the agent.")
    lines.append(f"gitopsd_agent_generation{node_labels} {generation}")
    family("gitopsd_agent_memory_budget_mib", "gauge", "Memory budget of the agent (MiB).")
    lines.append(f"gitopsd_agent_memory_budget_mib{node_labels} {memory_budget_mib}")
    family("gitopsd_agent_memory_used_mib", "gauge", "Sum of memory limits of loaded versions.")
    lines.append(f"gitopsd_agent_memory_used_mib{node_labels} {memory_used_mib}")

    counters = (
        ("requests", "Calls served."),
        ("errors", "Failed calls (traps, timeouts and non-zero exits included)."),
        ("traps", "Calls that trapped."),
        ("timeouts", "Calls that exceeded their timeout."),
    )
    for field, help_text in counters:
        name = f"gitopsd_agent_{field}_total"
        family(name, "counter", help_text)
        for s in rows:
            labels = _labels(node=node, function=s.function, version=s.version)
            lines.append(f"{name}{labels} {getattr(s.metrics, field)}")

    family("gitopsd_agent_latency_ms", "histogram", "Call latency in milliseconds.")
    for s in rows:
        for bound, count in s.metrics.buckets().items():
            labels = _labels(node=node, function=s.function, version=s.version, le=bound)
            lines.append(f"gitopsd_agent_latency_ms_bucket{labels} {count}")
        labels = _labels(node=node, function=s.function, version=s.version)
        lines.append(f"gitopsd_agent_latency_ms_sum{labels} {_number(s.metrics.latency_sum)}")
        lines.append(f"gitopsd_agent_latency_ms_count{labels} {s.metrics.latency_count}")

    family("gitopsd_agent_memory_peak_bytes", "gauge", "Largest linear memory seen in a call.")
    for s in rows:
        labels = _labels(node=node, function=s.function, version=s.version)
        lines.append(f"gitopsd_agent_memory_peak_bytes{labels} {s.metrics.memory_peak_bytes}")

    family("gitopsd_agent_traffic_percent", "gauge", "Traffic weight of the version.")
    for s in rows:
        labels = _labels(node=node, function=s.function, version=s.version)
        lines.append(f"gitopsd_agent_traffic_percent{labels} {_number(s.traffic_percent)}")
    return "\n".join(lines) + "\n"


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

    def prometheus_text(self, node: str) -> str:
        """The node's agent counters, Prometheus text (appended to the versions')."""
        lines = [
            "# HELP gitopsd_agent_internal_errors_total Requests the agent failed by its own "
            "fault (not counted against any version).",
            "# TYPE gitopsd_agent_internal_errors_total counter",
            f"gitopsd_agent_internal_errors_total{_labels(node=node)} {self.internal_errors}",
            "# HELP gitopsd_agent_refused_total Client requests and connections the agent "
            "refused or closed, by reason.",
            "# TYPE gitopsd_agent_refused_total counter",
        ]
        for reason, count in self.refused.items():
            lines.append(f"gitopsd_agent_refused_total{_labels(node=node, reason=reason)} {count}")
        return "\n".join(lines) + "\n"
