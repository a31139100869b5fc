"""Judging a version from the agents' metrics: figures, trigger breaches, A/B verdicts.

Pure functions over the per-version metrics JSON of `GET /functions/{fn}/metrics`
(docs/agent-api.md, "Metrics of one version"); the engine fetches, this decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gitopsd.rollout.stats import mann_whitney_u

RATE_METRICS = ("error_rate", "crash_rate", "timeout_rate")
LATENCY_METRICS = ("avg_latency_ms", "p95_latency_ms", "p99_latency_ms")
METRICS = (*RATE_METRICS, *LATENCY_METRICS, "memory_mib")

SIGNIFICANCE = 0.05  # p-value below which an A/B latency difference counts as real
MIN_RANK_SAMPLES = 8  # below this the normal approximation of Mann-Whitney is too rough

Verdict = Literal["A", "B", "inconclusive"]
Histogram = tuple[tuple[float, int], ...]  # (upper bound ms, cumulative count), +Inf last


def _share(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


@dataclass(frozen=True)
class VersionFigures:
    """One version's raw counts on one node or merged over several, and the metrics from them.

    Counts are kept (not only rates) so that figures from several nodes merge exactly.
    """

    requests: int = 0
    errors: int = 0  # every failed call; traps and timeouts are subsets
    traps: int = 0
    timeouts: int = 0
    latency_sum_ms: float = 0.0
    latency_count: int = 0
    buckets: Histogram = ()
    samples: tuple[float, ...] = ()  # latencies (ms) of recent calls, for rank tests
    memory_peak_bytes: int = 0

    @property
    def error_rate(self) -> float:
        """Failed calls, % of requests."""
        return _share(self.errors, self.requests)

    @property
    def crash_rate(self) -> float:
        """Traps, % of requests."""
        return _share(self.traps, self.requests)

    @property
    def timeout_rate(self) -> float:
        """Calls over the time limit, % of requests."""
        return _share(self.timeouts, self.requests)

    @property
    def avg_latency_ms(self) -> float:
        # The histogram's sum/count covers every call; samples only the most recent ones.
        if self.latency_count:
            return self.latency_sum_ms / self.latency_count
        return sum(self.samples) / len(self.samples) if self.samples else 0.0

    @property
    def p95_latency_ms(self) -> float:
        return self.percentile(95)

    @property
    def p99_latency_ms(self) -> float:
        return self.percentile(99)

    @property
    def memory_mib(self) -> float:
        """Peak linear memory in MiB."""
        return self.memory_peak_bytes / (1024 * 1024)

    def percentile(self, q: float) -> float:
        """Latency percentile `q` (0-100): nearest rank over the samples, else the histogram."""
        if self.samples:
            ordered = sorted(self.samples)
            return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
        return _histogram_quantile(self.buckets, q / 100)

    def metric(self, name: str) -> float:
        """The value of metric `name` (one of METRICS)."""
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}: use one of {', '.join(METRICS)}")
        value: float = getattr(self, name)
        return value


def as_dict(figures: VersionFigures) -> dict[str, float]:
    """Figures for a StepOutcome and the journal: requests and every metric."""
    return {"requests": float(figures.requests), **{m: figures.metric(m) for m in METRICS}}


def _histogram_quantile(buckets: Histogram, q: float) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    rank_ = q * buckets[-1][1]
    lower, below = 0.0, 0
    for upper, cumulative in buckets:
        if cumulative >= rank_ and cumulative > below:
            if math.isinf(upper):  # the open top bucket: the best answer is its lower edge
                return lower
            return lower + (upper - lower) * (rank_ - below) / (cumulative - below)
        lower, below = (lower if math.isinf(upper) else upper), cumulative
    return lower


def _bound(key: str) -> float:
    return math.inf if key.strip().lower() in ("+inf", "inf") else float(key)


def summarize(metrics: Mapping[str, Any]) -> VersionFigures:
    """Figures of one version on one node from the agent's metrics JSON.

    Missing fields count as zero; raises ValueError for values that are not numbers.
    """
    try:
        latency = metrics.get("latencyMs") or {}
        buckets = sorted((_bound(k), int(v)) for k, v in (latency.get("buckets") or {}).items())
        return VersionFigures(
            requests=int(metrics.get("requests", 0)),
            errors=int(metrics.get("errors", 0)),
            traps=int(metrics.get("traps", 0)),
            timeouts=int(metrics.get("timeouts", 0)),
            latency_sum_ms=float(latency.get("sum", 0.0)),
            latency_count=int(latency.get("count", 0)),
            buckets=tuple(buckets),
            samples=tuple(float(s) for s in metrics.get("samples") or ()),
            memory_peak_bytes=int(metrics.get("memoryPeakBytes", 0)),
        )
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable version metrics: {exc}") from exc


def _merge_buckets(histograms: Iterable[Histogram]) -> Histogram:
    """Add cumulative histograms bound by bound.

    Agents share one bucket layout; should one lack a bound, its count at the nearest lower
    bound stands in (a slight undercount, never an invented request).
    """
    present = [h for h in histograms if h]
    bounds = sorted({b for h in present for b, _ in h})
    return tuple(
        (bound, sum(max((c for b, c in h if b <= bound), default=0) for h in present))
        for bound in bounds
    )


def merge(*figures: VersionFigures) -> VersionFigures:
    """One version's figures over several nodes: counts and samples add up, memory peaks max."""
    return VersionFigures(
        requests=sum(f.requests for f in figures),
        errors=sum(f.errors for f in figures),
        traps=sum(f.traps for f in figures),
        timeouts=sum(f.timeouts for f in figures),
        latency_sum_ms=sum(f.latency_sum_ms for f in figures),
        latency_count=sum(f.latency_count for f in figures),
        buckets=_merge_buckets(f.buckets for f in figures),
        samples=tuple(s for f in figures for s in f.samples),
        memory_peak_bytes=max((f.memory_peak_bytes for f in figures), default=0),
    )


def _show(metric: str, value: float) -> str:
    if metric in RATE_METRICS:
        return f"{value:.1f}%"
    if metric == "memory_mib":
        return f"{value:.1f} MiB"
    return f"{value:.1f} ms"


def _show_limit(metric: str, value: float) -> str:
    unit = "%" if metric in RATE_METRICS else " MiB" if metric == "memory_mib" else " ms"
    return f"{value:g}{unit}"


def evaluate_triggers(
    figures: VersionFigures,
    triggers: Iterable[tuple[str, float]],
    baseline: VersionFigures | None = None,
) -> list[str]:
    """One message per autoRollback trigger whose metric is above its threshold.

    E.g. `error_rate 12.0% > 5%`. Raises ValueError for an unknown metric. With a `baseline`
    (the old version on the same nodes), a latency breach counts only when the new version is
    also significantly slower than the old one (one-sided Mann-Whitney, p < 0.05, enough
    samples on both sides): a node that is slow for everyone does not fail the new version.
    """
    breaches = []
    slower = None
    for metric, threshold in triggers:
        value = figures.metric(metric)
        if value <= threshold:
            continue
        if metric in LATENCY_METRICS and baseline is not None:
            slower = _slower_than(figures, baseline) if slower is None else slower
            if not slower:
                continue
        breaches.append(f"{metric} {_show(metric, value)} > {_show_limit(metric, threshold)}")
    return breaches


def _slower_than(new: VersionFigures, old: VersionFigures) -> bool:
    """True unless the samples show the new version is *not* significantly slower."""
    if min(len(new.samples), len(old.samples)) < MIN_RANK_SAMPLES:
        return True  # too little to tell: the threshold alone decides
    result = mann_whitney_u(new.samples, old.samples)
    return result.z > 0 and result.p_value / 2 < SIGNIFICANCE


@dataclass(frozen=True)
class Measurement:
    """One look at the metrics: the trigger breaches found, or why there were no figures."""

    breaches: tuple[str, ...] = ()
    error: str = ""  # set when the agents did not answer: the measurement counts as an error


@dataclass(frozen=True)
class AnalysisPolicy:
    """How many bad measurements an analysis tolerates (Argo Rollouts' AnalysisTemplate limits).

    `failure_limit`: measurements with breaches tolerated (0: the first one fails the analysis).
    `consecutive_error_limit`: measurements in a row without figures tolerated (agents that do
    not answer); one more fails the analysis, as an unobservable version is not a healthy one.
    """

    failure_limit: int = 0
    consecutive_error_limit: int = 4

    def judge(self, measurements: Sequence[Measurement]) -> tuple[str, str]:
        """("pass" | "fail" | "inconclusive", reason) for the measurements taken so far.

        "inconclusive": no measurement produced figures yet, but the error limit is not hit.
        """
        failed = [m for m in measurements if not m.error and m.breaches]
        if len(failed) > self.failure_limit:
            return "fail", (
                f"{len(failed)} failed measurements (limit {self.failure_limit}): "
                + "; ".join(failed[-1].breaches)
            )
        streak = longest = 0
        for m in measurements:
            streak = streak + 1 if m.error else 0
            longest = max(longest, streak)
        errors = [m for m in measurements if m.error]
        if longest > self.consecutive_error_limit:
            return "fail", (
                f"{longest} measurements in a row without metrics "
                f"(limit {self.consecutive_error_limit}): {errors[-1].error}"
            )
        if len(errors) == len(measurements):
            return "inconclusive", "no metrics yet" + (f": {errors[-1].error}" if errors else "")
        return "pass", "metrics within limits"


def _improvement(a: float, b: float, comparison: str) -> float:
    """How much better B is than A, in % of A (negative: worse), as the seed's DetermineWinner."""
    gain = a - b if comparison == "lower_is_better" else b - a
    if a == 0:
        return 0.0 if gain == 0 else math.copysign(math.inf, gain)
    return gain / abs(a) * 100


def judge_ab(
    a: VersionFigures,
    b: VersionFigures,
    metric: str,
    threshold: float,
    comparison: str,
    minimum_sample_size: int,
) -> tuple[Verdict, str, dict[str, float]]:
    """A/B verdict, reason and the figures behind it.

    B wins when it is at least `threshold` % better on `metric`, A when B is that much worse
    (seed DetermineWinner). Below `minimum_sample_size` requests on either side, or when a
    latency difference is not significant (Mann-Whitney p ≥ 0.05 with ≥ 8 samples each
    side), the answer is "inconclusive".
    """
    va, vb = a.metric(metric), b.metric(metric)
    figures = {
        "a_requests": float(a.requests),
        "b_requests": float(b.requests),
        f"a_{metric}": va,
        f"b_{metric}": vb,
    }
    if min(a.requests, b.requests) < minimum_sample_size:
        return (
            "inconclusive",
            (
                f"not enough requests: A {a.requests}, B {b.requests} "
                f"(need {minimum_sample_size} each)"
            ),
            figures,
        )
    gain = _improvement(va, vb, comparison)
    if math.isfinite(gain):
        figures["improvement_pct"] = gain
    said = f"{metric} A {_show(metric, va)}, B {_show(metric, vb)} ({_gain_text(gain)} for B)"
    verdict: Verdict = "B" if gain >= threshold else "A" if gain <= -threshold else "inconclusive"
    if verdict == "inconclusive":
        return verdict, f"{said}: within ±{threshold:g}%", figures
    if metric in LATENCY_METRICS and min(len(a.samples), len(b.samples)) >= MIN_RANK_SAMPLES:
        p = mann_whitney_u(a.samples, b.samples).p_value
        figures["p_value"] = p
        if p >= SIGNIFICANCE:
            return "inconclusive", f"{said}: not significant (Mann-Whitney p={p:.3g})", figures
        said += f", Mann-Whitney p={p:.3g}"
    return verdict, f"{said}: {'B' if verdict == 'B' else 'A'} wins", figures


def _gain_text(gain: float) -> str:
    if math.isinf(gain):
        return "infinitely better" if gain > 0 else "infinitely worse"
    return f"{abs(gain):.1f}% {'better' if gain >= 0 else 'worse'}"
