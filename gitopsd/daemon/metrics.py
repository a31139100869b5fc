"""The daemon's Prometheus metrics: a small registry, text format 0.0.4, no client library.

`Metrics` holds every series the daemon exports; the reconcile loop, the fleet client and
the webhook receiver update it, `render()` writes the exposition text, and `serve_metrics`
answers `GET /metrics` (and `GET /healthz`) on `[metrics] listen`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from aiohttp import web

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; a reconcile is a Git fetch plus a diff, or a whole rollout step.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

LabelValues = tuple[str, ...]


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """`3`, `0.25`, `+Inf`, `NaN`: integral values without a trailing `.0`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Family:
    """One metric family: name, HELP, TYPE, label names, and its samples by label values."""

    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {list(self.labelnames)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> Iterable[str]:
        raise NotImplementedError


class _Scalar(_Family):
    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self.values: dict[LabelValues, float] = {}

    def samples(self) -> Iterable[str]:
        for key in sorted(self.values):
            yield f"{self.name}{_labels(self.labelnames, key)} {format_value(self.values[key])}"


class Counter(_Scalar):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up, got {amount}")
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount


class Gauge(_Scalar):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        self.values[self._key(labels)] = float(value)

    def clear(self) -> None:
        self.values.clear()


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct and not empty, got {buckets}")
        self.bounds = tuple(bounds)
        self.counts = [0] * len(bounds)  # per bucket, not cumulative; +Inf is `count`
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.count += 1
        self.sum += value

    def samples(self) -> Iterable[str]:
        cumulative = 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            yield f'{self.name}_bucket{{le="{format_value(bound)}"}} {cumulative}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{self.name}_sum {format_value(self.sum)}"
        yield f"{self.name}_count {self.count}"


class Metrics:
    """Every series `gitopsd run` exports. Thread-safe: update from any thread or task."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self._lock = threading.Lock()
        self.reconcile_total = Counter(
            "gitopsd_reconcile_total", "Reconcile passes, by result.", ("result",)
        )
        self.reconcile_duration = Histogram(
            "gitopsd_reconcile_duration_seconds", "Duration of a reconcile pass.", buckets
        )
        self.last_reconcile = Gauge(
            "gitopsd_last_reconcile_timestamp_seconds",
            "Unix time at which the last reconcile pass ended.",
        )
        self.last_applied_commit = Gauge(
            "gitopsd_last_applied_commit_info",
            "The last commit applied to the fleet (always 1, the commit is the label).",
            ("commit",),
        )
        self.rollouts = Gauge("gitopsd_rollouts", "Rollouts by state.", ("state",))
        self.agent_request_errors = Counter(
            "gitopsd_agent_request_errors_total",
            "Failed requests to edge agents (connection errors, timeouts, 5xx), by node.",
            ("node",),
        )
        self.webhook_deliveries = Counter(
            "gitopsd_webhook_deliveries_total",
            "Webhook deliveries received, by forge and result.",
            ("forge", "result"),
        )
        self._families: tuple[_Family, ...] = (
            self.reconcile_total,
            self.reconcile_duration,
            self.last_reconcile,
            self.last_applied_commit,
            self.rollouts,
            self.agent_request_errors,
            self.webhook_deliveries,
        )

    def observe_reconcile(self, result: str, duration: float, *, now: float | None = None) -> None:
        """One reconcile pass ended with `result` (e.g. `ok`, `changed`, `error`)."""
        with self._lock:
            self.reconcile_total.inc(result=result)
            self.reconcile_duration.observe(duration)
            self.last_reconcile.set(time.time() if now is None else now)

    def set_last_applied_commit(self, commit: str) -> None:
        with self._lock:
            self.last_applied_commit.clear()
            self.last_applied_commit.set(1, commit=commit)

    def set_rollouts(self, by_state: Mapping[str, int]) -> None:
        """Replace the rollout counts; a state seen before and absent now reads 0."""
        with self._lock:
            for key in self.rollouts.values:
                self.rollouts.values[key] = 0.0
            for state, n in by_state.items():
                self.rollouts.set(n, state=state)

    def set_leadership(self, led: frozenset[int], shards: int) -> None:
        """With a PostgreSQL state (several controllers): gitopsd_leader (1 when this process
        leads at least one shard) and gitopsd_shard_leader{shard} for every shard. The
        families appear at the first call, so a SQLite controller exports neither."""
        with self._lock:
            if not hasattr(self, "leader"):
                self.leader = Gauge(
                    "gitopsd_leader", "1 when this process leads at least one shard, else 0."
                )
                self.shard_leader = Gauge(
                    "gitopsd_shard_leader", "1 when this process leads the shard.", ("shard",)
                )
                self._families = (*self._families, self.leader, self.shard_leader)
            self.leader.set(1 if led else 0)
            for shard in range(shards):
                self.shard_leader.set(1 if shard in led else 0, shard=str(shard))

    def agent_request_error(self, node: str) -> None:
        with self._lock:
            self.agent_request_errors.inc(node=node)

    def webhook_delivery(self, forge: str, result: str) -> None:
        with self._lock:
            self.webhook_deliveries.inc(forge=forge, result=result)

    def render(self) -> str:
        """The text exposition format, version 0.0.4 (ends with a newline)."""
        lines: list[str] = []
        with self._lock:
            for family in self._families:
                lines.extend(family.header())
                lines.extend(family.samples())
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """Serve `GET /metrics` and `GET /healthz` on host:port (0 picks a free port: see
    `runner.addresses`). Stop with `await runner.cleanup()`."""

    async def handle_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def handle_healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
