"""Judging one analysis look: fixed thresholds alone, or against a concurrent baseline.

Two judges share one entry point, `look`, called by the executor's Analyze step and by the
judgment benchmark (bench/judgment.py) on the same figures:

* `thresholds` (the judge before issue 18): every node's and the merged figures of the new
  version against the autoRollback triggers; the first breach fails the analysis.
* `concurrent` (the default): the new version against the *old version serving at the same
  time on the same nodes* (a canary node whose traffic is split between both), as Kayenta
  compares a canary with a baseline of the same age. Both sides count only the requests
  since the new version got traffic on that node, so a slow node or a noisy neighbour hits
  both sides alike. Three one-sided tests, each stratified by node (the per-node statistics
  are summed, so node differences never count as a version difference):

  - latency ranks: Mann-Whitney U on the exact latencies while the agents' rings of recent
    samples (1,000 per version) still hold every call since the versions began sharing the
    node, on the latency histograms (ties within a bucket) after that;
  - latency tail: the share of calls above the bucket bound that holds the baseline's
    99th percentile (Cochran-Mantel-Haenszel), which catches a slow 5 % the ranks barely see;
  - error rate (Cochran-Mantel-Haenszel).

  Each test is sequential: its mixture likelihood ratio (`stats.mixture_likelihood_ratio`)
  stays valid however often the analysis looks again, at every stage and every extension,
  so repeated looks do not inflate false rollbacks. The false-rollback budget `1 - confidence`
  is split evenly over the three tests. Below `minimumSamples` requests on either side, or
  when a test leans towards a regression without reaching its boundary, the verdict is
  "inconclusive" and asks the strategy to extend its wait, up to `maxExtension` in total.
  The triggers stay hard limits: a rate limit counts once `minimumSamples` requests are in
  or once the rate's lower confidence bound is above it, a latency limit once
  `minimumSamples` requests are in; on a look that cannot be extended (another strategy
  than the canary, or `maxExtension` spent) every limit counts on the figures as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Literal

from gitopsd.rollout import analysis
from gitopsd.rollout.analysis import LATENCY_METRICS, RATE_METRICS, VersionFigures
from gitopsd.rollout.stats import (
    mixture_boundary,
    mixture_likelihood_ratio,
    u_statistic,
    wilson_interval,
)
from gitopsd.rollout.steps import NodeResult, StepOutcome

Baseline = Literal["concurrent", "thresholds"]

# The mixing prior's scale, in requests per side: it sets where the sequential boundary is
# tightest (a few hundred to a few thousand requests, where canary decisions are made).
MIXTURE_SCALE = 250.0
TESTS = 3  # latency ranks, latency tail, error rate: the alpha is split over all three
TAIL_QUANTILE = 0.99
EXTENSION_LOOKS = 10  # maxExtension is spent in up to this many extra looks
MIN_EXTENSION_STEP = 10.0  # seconds


@dataclass(frozen=True)
class JudgeSettings:
    """`autoRollback.analysis` of the function (docs/manifest-reference.md)."""

    baseline: Baseline = "concurrent"
    confidence: float = 0.99
    minimum_samples: int = 200
    max_extension: float = 1800.0  # seconds of extra waiting a rollout's analyses may add

    @property
    def alpha(self) -> float:
        """The false-rollback budget of one rollout's comparisons."""
        return 1.0 - self.confidence

    @property
    def extension_step(self) -> float:
        """How long one extension waits before the next look."""
        return max(MIN_EXTENSION_STEP, self.max_extension / EXTENSION_LOOKS)


THRESHOLDS_ONLY = JudgeSettings(baseline="thresholds")


@dataclass(frozen=True)
class Comparison:
    """One sequential test of the new version against the concurrent baseline."""

    key: str  # prefix of its figures: rank, tail, error
    name: str  # what it compares, for the verdict's text
    z: float  # stratified z-statistic, positive when the new version looks worse
    information: float  # effective requests per side over MIXTURE_SCALE
    effect: str  # the difference in words ("P(new slower) 0.62", "3.1% vs 1.0% errors")
    figures: Mapping[str, float] = field(default_factory=dict)

    def p_value(self) -> float:
        """Always-valid one-sided p-value (1 when the new version looks better)."""
        if self.z <= 0:
            return 1.0
        return min(1.0, 1.0 / mixture_likelihood_ratio(self.z, self.information))


@dataclass(frozen=True)
class Stratum:
    """One node serving both versions: their figures since the new one got traffic there."""

    node: str
    new: VersionFigures
    old: VersionFigures


def _bins(buckets: analysis.Histogram, bounds: Sequence[float]) -> list[int]:
    """Per-bin (not cumulative) counts of a cumulative histogram over `bounds`."""
    cumulative = [max((c for b, c in buckets if b <= bound), default=0) for bound in bounds]
    return [c - (cumulative[i - 1] if i else 0) for i, c in enumerate(cumulative)]


def _effective(n1: int, n2: int) -> float:
    """Requests per side of a balanced comparison as informative as n1 against n2."""
    return 2.0 * n1 * n2 / (n1 + n2) if n1 and n2 else 0.0


def consistent(figures: VersionFigures) -> bool:
    """Whether an agent's counts can be true (it may be broken or lying): no negative count,
    no more failures than calls, a cumulative histogram that never goes down. A node whose
    counts are not is left out of the comparison."""
    counts = (figures.requests, figures.errors, figures.traps, figures.timeouts)
    cumulative = [c for _, c in figures.buckets]
    return (
        min(counts) >= 0
        and max(figures.errors, figures.traps, figures.timeouts) <= figures.requests
        and all(0 <= a <= b for a, b in zip([0, *cumulative], cumulative, strict=False))
        and all(math.isfinite(v) and v >= 0 for v in figures.samples)
    )


def complete(figures: VersionFigures) -> bool:
    """Whether the latency samples are every call counted (the agent's ring of recent
    latencies still holds all of them): then ranks need no histogram buckets."""
    return 0 < figures.requests == len(figures.samples)


def _u_from_bins(new: Sequence[int], old: Sequence[int]) -> tuple[float, float]:
    """U of the new version and its tie-corrected variance from per-bucket counts."""
    n1, n2 = sum(new), sum(old)
    n = n1 + n2
    below = 0
    u = 0.0
    for a, c in zip(new, old, strict=True):
        u += a * (below + c / 2)  # new calls slower than old ones, ties count one half
        below += c
    ties = sum((a + c) ** 3 - (a + c) for a, c in zip(new, old, strict=True))
    return u, n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))


def rank_test(strata: Sequence[Stratum]) -> Comparison | None:
    """Stratified Mann-Whitney U (van Elteren's sum) of the latencies: per node, on the exact
    latencies while the agents' sample rings hold every call of both sides since they
    shared the node, else on the histograms (ties within a bucket)."""
    bounds = sorted({b for s in strata for b, _ in (*s.new.buckets, *s.old.buckets)})
    u_sum = mean_sum = var_sum = pairs = effective = 0.0
    exact = 0
    for s in strata:
        if complete(s.new) and complete(s.old):
            n1, n2 = len(s.new.samples), len(s.old.samples)
            u, variance = u_statistic(s.new.samples, s.old.samples)
            exact += 1
        else:
            new, old = _bins(s.new.buckets, bounds), _bins(s.old.buckets, bounds)
            n1, n2 = sum(new), sum(old)
            if n1 == 0 or n2 == 0 or n1 + n2 < 2:
                continue
            u, variance = _u_from_bins(new, old)
        u_sum += u
        mean_sum += n1 * n2 / 2
        var_sum += variance
        pairs += n1 * n2
        effective += _effective(n1, n2)
    if pairs == 0 or var_sum <= 0:
        return None
    z = (u_sum - mean_sum) / math.sqrt(var_sum)
    slower = u_sum / pairs
    return Comparison(
        "rank",
        "latency ranks",
        z,
        effective / MIXTURE_SCALE,
        f"P(new slower) {slower:.3f}",
        {"rank_p_slower": slower, "rank_z": z, "rank_exact_nodes": float(exact)},
    )


def _cmh(tables: Iterable[tuple[int, int, int, int]]) -> tuple[float, float] | None:
    """Cochran-Mantel-Haenszel z over (new events, new n, old events, old n) and its
    effective requests per side; None without a stratum holding both outcomes."""
    observed = expected = variance = effective = 0.0
    for x1, n1, x2, n2 in tables:
        n, m = n1 + n2, x1 + x2
        if n1 == 0 or n2 == 0 or n < 2:
            continue
        observed += x1
        expected += n1 * m / n
        variance += n1 * n2 * m * (n - m) / (n * n * (n - 1))
        effective += _effective(n1, n2)
    if variance <= 0:
        return None
    return (observed - expected) / math.sqrt(variance), effective


def tail_test(strata: Sequence[Stratum]) -> Comparison | None:
    """Share of calls above the bucket bound holding the baseline's 99th percentile (or the
    highest finite bound, when that percentile is beyond it)."""
    old = analysis.merge(*(s.old for s in strata))
    total = old.buckets[-1][1] if old.buckets else 0
    finite = [(b, c) for b, c in old.buckets if not math.isinf(b)]
    if not finite or not total:
        return None
    # The baseline's p99 bucket; when its p99 lies in the open top bucket, the highest bound.
    bound = next((b for b, c in finite if c >= TAIL_QUANTILE * total), finite[-1][0])

    def above(f: VersionFigures) -> tuple[int, int]:
        count = f.buckets[-1][1] if f.buckets else 0
        return count - max((c for b, c in f.buckets if b <= bound), default=0), count

    tables = [(*above(s.new), *above(s.old)) for s in strata]
    result = _cmh(tables)
    if result is None:
        return None
    z, effective = result
    new_pct = 100 * sum(t[0] for t in tables) / max(1, sum(t[1] for t in tables))
    old_pct = 100 * sum(t[2] for t in tables) / max(1, sum(t[3] for t in tables))
    return Comparison(
        "tail",
        f"latency tail > {bound:g} ms",
        z,
        effective / MIXTURE_SCALE,
        f"{new_pct:.1f}% vs {old_pct:.1f}% of calls",
        {"tail_bound_ms": bound, "tail_new_pct": new_pct, "tail_old_pct": old_pct, "tail_z": z},
    )


def error_test(strata: Sequence[Stratum]) -> Comparison | None:
    """Error rate of the new version against the old one on the same nodes."""
    tables = [(s.new.errors, s.new.requests, s.old.errors, s.old.requests) for s in strata]
    result = _cmh(tables)
    if result is None:
        return None
    z, effective = result
    new_pct = 100 * sum(t[0] for t in tables) / max(1, sum(t[1] for t in tables))
    old_pct = 100 * sum(t[2] for t in tables) / max(1, sum(t[3] for t in tables))
    return Comparison(
        "error",
        "error rate",
        z,
        effective / MIXTURE_SCALE,
        f"{new_pct:.2f}% vs {old_pct:.2f}% errors",
        {"error_new_pct": new_pct, "error_old_pct": old_pct, "error_z": z},
    )


_RATE_COUNTS = {"error_rate": "errors", "crash_rate": "traps", "timeout_rate": "timeouts"}


def _rate_vetoed(metric: str, strata: Sequence[Stratum], confidence: float) -> bool:
    """Whether the old version beside the new one shows the rate is not the new version's
    doing: on the same nodes at the same time it is not lower at `confidence` (one-sided
    Cochran-Mantel-Haenszel), as an error burst on a node hits both versions."""
    count = _RATE_COUNTS[metric]
    tables = [
        (getattr(s.new, count), s.new.requests, getattr(s.old, count), s.old.requests)
        for s in strata
    ]
    result = _cmh(tables)
    return result is not None and result[0] < NormalDist().inv_cdf(confidence)


def hard_limits(
    new: VersionFigures,
    triggers: Iterable[tuple[str, float]],
    baseline: VersionFigures | None,
    settings: JudgeSettings,
    strata: Sequence[Stratum] = (),
    final: bool = False,
) -> tuple[list[str], list[str]]:
    """(breaches, triggers not judged yet for want of requests) of the merged new version.

    A rate limit is breached once `minimum_samples` requests are in, or earlier when the
    rate's lower confidence bound is above it (10 errors in 10 calls need no more evidence;
    1 in 10 does); where the old version shares the nodes (`strata`), only if the new
    version's rate is also above the old one's there at `confidence` (an error burst on a
    node is no fault of the version). A latency limit waits for `minimum_samples` requests and
    keeps the old version's veto of `analysis.evaluate_triggers` (`baseline`). Memory is no
    statistic: always judged. On a `final` look (the rollout cannot wait for more requests)
    every limit is judged on the figures as they are, as the thresholds judge does.
    """
    enough = final or new.requests >= settings.minimum_samples
    breaches: list[str] = []
    deferred: list[str] = []
    for metric, threshold in triggers:
        over = new.metric(metric) > threshold
        if metric in RATE_METRICS and over and _rate_vetoed(metric, strata, settings.confidence):
            continue
        if metric in RATE_METRICS and not enough:
            events = round(new.metric(metric) * new.requests / 100)
            low, _ = wilson_interval(events, new.requests, settings.confidence)
            if 100 * low > threshold:
                breaches.append(
                    f"{metric} {new.metric(metric):.1f}% > {threshold:g}% "
                    f"(lower {settings.confidence:g} bound {100 * low:.1f}%, "
                    f"{new.requests} requests)"
                )
            elif new.metric(metric) > threshold:
                deferred.append(metric)
            continue
        if metric in LATENCY_METRICS and not enough:
            if new.metric(metric) > threshold:
                deferred.append(metric)
            continue
        breaches.extend(analysis.evaluate_triggers(new, [(metric, threshold)], baseline))
    return breaches, deferred


def since(now: VersionFigures, before: VersionFigures | None) -> VersionFigures:
    """The counts `now` minus those of an earlier snapshot of the same version and node.

    Counters that went down mean the agent restarted since: then `now` is all since. The
    latency samples keep the calls since the snapshot when the agent's ring still holds them
    all (the newest ones), else the whole ring; the memory peak stays as it is.
    """
    if before is None or now.requests < before.requests or now.errors < before.errors:
        return now
    calls = now.requests - before.requests
    earlier = dict(before.buckets)
    buckets = tuple((b, max(0, c - earlier.get(b, 0))) for b, c in now.buckets)
    return replace(
        now,
        requests=now.requests - before.requests,
        errors=now.errors - before.errors,
        traps=max(0, now.traps - before.traps),
        timeouts=max(0, now.timeouts - before.timeouts),
        latency_sum_ms=max(0.0, now.latency_sum_ms - before.latency_sum_ms),
        latency_count=max(0, now.latency_count - before.latency_count),
        buckets=buckets,
        samples=now.samples[len(now.samples) - calls :]
        if calls <= len(now.samples)
        else now.samples,
    )


def thresholds_look(
    new: Mapping[str, VersionFigures],
    old: Mapping[str, VersionFigures],
    silent: Mapping[str, str],
    triggers: Sequence[tuple[str, float]],
) -> StepOutcome:
    """The judge before issue 18: one measurement per node plus one merged, Argo-style limits;
    the old version's latency on the same nodes is the baseline of latency triggers."""
    measurements = [analysis.Measurement(error=f"{n}: {e}") for n, e in silent.items()]
    # A silent node is tolerated up to the policy's consecutive-error limit.
    nodes: list[NodeResult] = [NodeResult(n, True, f"no metrics: {e}") for n, e in silent.items()]
    for node, fig in new.items():
        breaches = tuple(analysis.evaluate_triggers(fig, triggers, old.get(node)))
        measurements.append(analysis.Measurement(breaches=breaches))
        nodes.append(NodeResult(node, not breaches, "; ".join(breaches)))
    merged = analysis.merge(*new.values()) if new else None
    if merged is not None:
        baseline = analysis.merge(*old.values()) if old else None
        overall = tuple(analysis.evaluate_triggers(merged, triggers, baseline))
        measurements.append(analysis.Measurement(breaches=overall))
    verdict, reason = (
        analysis.AnalysisPolicy().judge(measurements)
        if measurements
        else ("pass", "no metrics to judge")
    )
    return StepOutcome(
        ok=verdict != "fail",
        nodes=tuple(nodes),
        verdict=verdict,
        message=reason,
        figures=analysis.as_dict(merged) if merged else {},
    )


def concurrent_look(
    new: Mapping[str, VersionFigures],
    old: Mapping[str, VersionFigures],
    old_now: Mapping[str, VersionFigures],
    silent: Mapping[str, str],
    triggers: Sequence[tuple[str, float]],
    settings: JudgeSettings,
    extension_left: float,
) -> StepOutcome:
    """The concurrent-baseline judge (module docstring).

    `new` holds each node's counts of the new version since it got traffic there, `old` the
    old version's counts since then on the nodes where it still shares the traffic, `old_now`
    the old version's figures on the analysed nodes whatever its share (their recent latency
    samples veto a latency limit that the old version breaches too, as in `thresholds`);
    `extension_left` is how much longer the rollout may wait for evidence (0: decide now).
    """
    if not new:
        if not silent:
            return StepOutcome(ok=True, verdict="pass", message="no metrics to judge")
        verdict, reason = analysis.AnalysisPolicy().judge(
            [analysis.Measurement(error=f"{n}: {e}") for n, e in silent.items()]
        )
        return StepOutcome(ok=verdict != "fail", verdict=verdict, message=reason)
    nodes = [NodeResult(n, True, f"no metrics: {e}") for n, e in silent.items()]
    merged = analysis.merge(*new.values())
    strata = [
        Stratum(n, new[n], old[n])
        for n in sorted(new)
        if n in old and consistent(new[n]) and consistent(old[n])
    ]
    baseline = analysis.merge(*(s.old for s in strata)) if strata else None
    figures: dict[str, float] = {
        **analysis.as_dict(merged),
        "new_requests": float(merged.requests),
        "old_requests": float(baseline.requests) if baseline else 0.0,
        "alpha": settings.alpha,
    }
    sizes = f"{merged.requests} new / {baseline.requests if baseline else 0} old requests"
    veto = analysis.merge(*old_now.values()) if old_now else None
    final = extension_left <= 0
    breaches, deferred = hard_limits(merged, triggers, veto, settings, strata, final)
    for node, fig in new.items():
        nodes.append(NodeResult(node, True, f"{fig.requests} requests"))
    if breaches:
        return StepOutcome(
            ok=False,
            nodes=tuple(nodes),
            verdict="fail",
            message=f"hard limit: {'; '.join(breaches)} ({sizes})",
            figures=figures,
        )
    waiting: list[str] = []
    if deferred:
        waiting.append(
            f"{', '.join(deferred)} over the limit on fewer than "
            f"{settings.minimum_samples} requests"
        )
    if baseline is None:
        verdict_text = "no node serves both versions: judged on the hard limits alone"
    elif min(sum(s.new.requests for s in strata), baseline.requests) < settings.minimum_samples:
        waiting.append(f"fewer than {settings.minimum_samples} requests per side ({sizes})")
        verdict_text = ""
    else:
        verdict_text = ""
        level = settings.alpha / TESTS
        leaning = NormalDist().inv_cdf(settings.confidence)
        for test in (rank_test(strata), tail_test(strata), error_test(strata)):
            if test is None:
                continue
            p = test.p_value()
            figures.update(test.figures)
            figures[f"{test.key}_p"] = p
            boundary = mixture_boundary(level, test.information)
            if p <= level:
                figures["boundary_z"] = boundary
                return StepOutcome(
                    ok=False,
                    nodes=tuple(nodes),
                    verdict="fail",
                    message=(
                        f"concurrent baseline, {test.name}: new version worse, {test.effect} "
                        f"(z={test.z:.2f} over boundary {boundary:.2f}, always-valid "
                        f"p={p:.2g} < {level:.2g}; {sizes} on {len(strata)} node(s))"
                    ),
                    figures=figures,
                )
            if test.z >= leaning:
                waiting.append(
                    f"{test.name} leans worse, {test.effect} (z={test.z:.2f}, "
                    f"boundary {boundary:.2f})"
                )
        if not waiting:
            verdict_text = (
                f"concurrent baseline: no regression at confidence {settings.confidence:g} "
                f"({sizes} on {len(strata)} node(s))"
            )
    if not waiting:
        return StepOutcome(
            ok=True, nodes=tuple(nodes), verdict="pass", message=verdict_text, figures=figures
        )
    step = min(settings.extension_step, extension_left)
    if step > 0:
        figures["extend_s"] = step
        message = f"inconclusive, waiting {step:g}s more: {'; '.join(waiting)}"
    else:
        message = (
            f"inconclusive, no extension left: passed on the hard limits; {'; '.join(waiting)}"
        )
    return StepOutcome(
        ok=True, nodes=tuple(nodes), verdict="inconclusive", message=message, figures=figures
    )


def look(
    new: Mapping[str, VersionFigures],
    old: Mapping[str, VersionFigures],
    silent: Mapping[str, str],
    triggers: Sequence[tuple[str, float]],
    settings: JudgeSettings,
    *,
    new_since: Mapping[str, VersionFigures],
    old_since: Mapping[str, VersionFigures],
    extension_left: float = 0.0,
) -> StepOutcome:
    """One analysis look by the judge `settings.baseline` names (see the module docstring).

    `new`/`old`: each version's figures per analysed node as the agents report them;
    `new_since`/`old_since`: the counts since both versions shared a node (old: only where
    it still shares it), which only the concurrent judge reads.
    """
    if settings.baseline == "thresholds":
        return thresholds_look(new, old, silent, triggers)
    return concurrent_look(new_since, old_since, old, silent, triggers, settings, extension_left)


class ExtensionTally:
    """The extra waiting a rollout's analyses have asked for so far, learnt from its steps
    in journal order (live or replayed), so a restarted daemon knows what is left."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._offered = 0.0

    def note(self, step: object, outcome: StepOutcome) -> None:
        """Learn from one step and its outcome: an extension is the Wait that follows an
        inconclusive analysis which offered it."""
        kind = getattr(step, "kind", "")
        if kind == "wait" and self._offered > 0:
            self.spent += float(getattr(step, "seconds", 0.0))
        offered = outcome.figures.get("extend_s", 0.0) if outcome.verdict == "inconclusive" else 0
        self._offered = float(offered) if kind == "analyze" else 0.0

    def left(self, settings: JudgeSettings) -> float:
        """Seconds of extension still allowed."""
        return max(0.0, settings.max_extension - self.spent)
