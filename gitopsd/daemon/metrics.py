"""The daemon's Prometheus metrics, through prometheus_client.

`Metrics` holds every series the daemon exports, in a registry of its own; the reconcile
loop, the fleet client and the webhook receiver update it, `render()` writes the exposition
text (format 0.0.4), and `serve_metrics` answers `GET /metrics` (and `GET /healthz`) on
`[metrics] listen`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gitopsd.http_guard import GuardedListener, start_guarded

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# No `<counter>_created` series: a process start time per label set is noise to the daemon's
# readers (its start time is in process metrics of the service manager anyway).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped there

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


class Metrics:
    """Every series `gitopsd run` exports. Thread-safe: update from any thread or task."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        # Compound updates (replace a set of label values) happen under the lock; single
        # updates are atomic in prometheus_client already.
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.reconcile_total = Counter(
            "gitopsd_reconcile_total",
            "Reconcile passes, by result.",
            ("result",),
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            "gitopsd_reconcile_duration_seconds",
            "Duration of a reconcile pass.",
            buckets=sorted(float(b) for b in buckets),
            registry=registry,
        )
        self.last_reconcile = Gauge(
            "gitopsd_last_reconcile_timestamp_seconds",
            "Unix time at which the last reconcile pass ended.",
            registry=registry,
        )
        self.last_applied_commit = Gauge(
            "gitopsd_last_applied_commit_info",
            "The last commit applied to the fleet (always 1, the commit is the label).",
            ("commit",),
            registry=registry,
        )
        self.rollouts = Gauge(
            "gitopsd_rollouts", "Rollouts by state.", ("state",), registry=registry
        )
        self._rollout_states: set[str] = set()
        self.agent_request_errors = Counter(
            "gitopsd_agent_request_errors_total",
            "Failed requests to edge agents (connection errors, timeouts, 5xx), by node.",
            ("node",),
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "gitopsd_webhook_deliveries_total",
            "Webhook deliveries received, by forge and result.",
            ("forge", "result"),
            registry=registry,
        )

    def observe_reconcile(self, result: str, duration: float, *, now: float | None = None) -> None:
        """One reconcile pass ended with `result` (e.g. `ok`, `changed`, `error`)."""
        self.reconcile_total.labels(result=result).inc()
        self.reconcile_duration.observe(duration)
        self.last_reconcile.set(time.time() if now is None else now)

    def set_last_applied_commit(self, commit: str) -> None:
        with self._lock:
            self.last_applied_commit.clear()
            self.last_applied_commit.labels(commit=commit).set(1)

    def set_rollouts(self, by_state: Mapping[str, int]) -> None:
        """Replace the rollout counts; a state seen before and absent now reads 0."""
        with self._lock:
            self._rollout_states.update(by_state)
            for state in self._rollout_states:
                self.rollouts.labels(state=state).set(by_state.get(state, 0))

    def set_leadership(self, led: frozenset[int], shards: int) -> None:
        """With a PostgreSQL state (several controllers): gitopsd_leader (1 when this process
        leads at least one shard) and gitopsd_shard_leader{shard} for every shard. The
        families appear at the first call, so a SQLite controller exports neither."""
        with self._lock:
            if not hasattr(self, "leader"):
                self.leader = Gauge(
                    "gitopsd_leader",
                    "1 when this process leads at least one shard, else 0.",
                    registry=self.registry,
                )
                self.shard_leader = Gauge(
                    "gitopsd_shard_leader",
                    "1 when this process leads the shard.",
                    ("shard",),
                    registry=self.registry,
                )
            self.leader.set(1 if led else 0)
            for shard in range(shards):
                self.shard_leader.labels(shard=str(shard)).set(1 if shard in led else 0)

    def agent_request_error(self, node: str) -> None:
        self.agent_request_errors.labels(node=node).inc()

    def webhook_delivery(self, forge: str, result: str) -> None:
        self.webhook_deliveries.labels(forge=forge, result=result).inc()

    def render(self) -> str:
        """The text exposition format, version 0.0.4 (ends with a newline)."""
        return generate_latest(self.registry).decode()


async def serve_metrics(metrics: Metrics, host: str, port: int) -> GuardedListener:
    """Serve `GET /metrics` and `GET /healthz` on host:port (0 picks a free port: see
    `runner.addresses`). Stop with `await runner.cleanup()`."""

    async def handle_metrics(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def handle_healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/healthz", handle_healthz)
    return await start_guarded(app, host, port)
