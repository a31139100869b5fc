from __future__ import annotations

import pytest

from gitopsd.rollout.analysis import (
    AnalysisPolicy,
    Measurement,
    VersionFigures,
    as_dict,
    evaluate_triggers,
    judge_ab,
    merge,
    summarize,
)

# The example of docs/agent-api.md, "Metrics of one version".
DOC_METRICS = {
    "requests": 120,
    "errors": 3,
    "traps": 1,
    "timeouts": 1,
    "latencyMs": {
        "buckets": {"1": 40, "5": 100, "10": 110, "25": 118, "50": 119, "100": 120, "+Inf": 120},
        "sum": 410.5,
        "count": 120,
    },
    "memoryPeakBytes": 131072,
}


def test_summarize_the_documented_example():
    figures = summarize(DOC_METRICS)
    assert figures.requests == 120
    assert figures.error_rate == pytest.approx(2.5)  # 3 / 120
    assert figures.crash_rate == pytest.approx(100 / 120)  # traps / requests
    assert figures.timeout_rate == pytest.approx(100 / 120)
    assert figures.avg_latency_ms == pytest.approx(410.5 / 120)
    # p95: rank 114 falls in (10, 25] with 110 below and 8 inside → 10 + 15 * 4/8.
    assert figures.p95_latency_ms == pytest.approx(17.5)
    # p99: rank 118.8 falls in (25, 50] with 118 below and 1 inside → 25 + 25 * 0.8.
    assert figures.p99_latency_ms == pytest.approx(45.0)
    assert figures.memory_mib == pytest.approx(0.125)  # 131072 B
    assert as_dict(figures)["requests"] == 120.0


def test_percentiles_come_from_samples_when_present():
    figures = summarize({**DOC_METRICS, "samples": [float(v) for v in range(100, 0, -1)]})
    assert figures.p95_latency_ms == 95.0  # nearest rank over 1..100
    assert figures.p99_latency_ms == 99.0
    assert figures.avg_latency_ms == pytest.approx(410.5 / 120)  # sum/count covers every call


def test_quantile_in_the_open_top_bucket_is_the_last_finite_bound():
    figures = summarize(
        {"requests": 10, "latencyMs": {"buckets": {"5": 1, "10": 2, "+Inf": 10}, "count": 10}}
    )
    assert figures.p99_latency_ms == 10.0


def test_missing_fields_are_zero_and_bad_values_are_refused():
    empty = summarize({})
    assert as_dict(empty) == dict.fromkeys(as_dict(empty), 0.0)
    with pytest.raises(ValueError):
        summarize({"requests": "many"})
    with pytest.raises(ValueError):
        summarize({"latencyMs": {"buckets": {"fast": 1}}})


def test_merge_adds_counts_so_rates_weigh_by_requests():
    busy = summarize({"requests": 900, "errors": 0, "latencyMs": {"sum": 900.0, "count": 900}})
    quiet = summarize({"requests": 100, "errors": 10, "latencyMs": {"sum": 1100.0, "count": 100}})
    merged = merge(busy, quiet)
    assert merged.requests == 1000
    assert merged.error_rate == pytest.approx(1.0)  # 10 / 1000, not the mean of 0 % and 10 %
    assert merged.avg_latency_ms == pytest.approx(2.0)  # 2000 ms / 1000 calls


def test_merge_histograms_samples_and_memory():
    one = summarize({**DOC_METRICS, "samples": [1.0, 2.0], "memoryPeakBytes": 2 * 1024 * 1024})
    two = summarize(DOC_METRICS)
    merged = merge(one, two)
    assert merged.buckets[0] == (1.0, 80)
    assert merged.buckets[-1][1] == 240
    assert merged.samples == (1.0, 2.0)
    assert merged.memory_mib == 2.0  # the peak, not the sum
    odd = VersionFigures(requests=5, buckets=((2.0, 3), (float("inf"), 5)))
    assert merge(two, odd).buckets[:2] == ((1.0, 40), (2.0, 43))  # 2 ms: 40 from `two`'s 1 ms
    assert merge() == VersionFigures()


def test_trigger_breaches_read_like_sentences():
    figures = VersionFigures(
        requests=200, errors=24, latency_sum_ms=30000.0, latency_count=200, memory_peak_bytes=0
    )
    triggers = [("error_rate", 5.0), ("avg_latency_ms", 100.0), ("crash_rate", 1.0)]
    assert evaluate_triggers(figures, triggers) == [
        "error_rate 12.0% > 5%",
        "avg_latency_ms 150.0 ms > 100 ms",
    ]
    assert evaluate_triggers(figures, [("error_rate", 12.0)]) == []  # at the limit is fine
    with pytest.raises(ValueError, match="unknown metric 'cpu'"):
        evaluate_triggers(figures, [("cpu", 1.0)])


def test_policy_failure_limit_and_consecutive_errors():
    bad = Measurement(breaches=("error_rate 12.0% > 5%",))
    good = Measurement()
    silent = Measurement(error="edge-a: timeout")
    assert AnalysisPolicy().judge([good, good]) == ("pass", "metrics within limits")
    verdict, reason = AnalysisPolicy().judge([good, bad])
    assert verdict == "fail" and "error_rate 12.0% > 5%" in reason
    assert AnalysisPolicy(failure_limit=1).judge([bad, good])[0] == "pass"
    assert AnalysisPolicy(failure_limit=1).judge([bad, bad])[0] == "fail"
    assert AnalysisPolicy(consecutive_error_limit=2).judge([silent, silent, good])[0] == "pass"
    verdict, reason = AnalysisPolicy(consecutive_error_limit=2).judge([silent] * 3)
    assert verdict == "fail" and "3 measurements in a row" in reason
    assert AnalysisPolicy().judge([silent])[0] == "inconclusive"


def latency(avg: float, n: int = 2000, samples: tuple[float, ...] = ()) -> VersionFigures:
    return VersionFigures(requests=n, latency_sum_ms=avg * n, latency_count=n, samples=samples)


def test_seed_example_b_wins_by_forty_percent():
    # Seed: A avg 25 ms, B 15 ms → 40 % improvement ≥ 10 % threshold.
    verdict, reason, figures = judge_ab(
        latency(25.0), latency(15.0), "avg_latency_ms", 10.0, "lower_is_better", 1000
    )
    assert verdict == "B"
    assert figures["improvement_pct"] == pytest.approx(40.0)
    assert "40.0% better" in reason


def test_b_worse_beyond_threshold_means_a_wins():
    verdict, _, figures = judge_ab(
        latency(20.0), latency(25.0), "avg_latency_ms", 10.0, "lower_is_better", 1000
    )
    assert verdict == "A"
    assert figures["improvement_pct"] == pytest.approx(-25.0)


def test_small_difference_or_small_samples_are_inconclusive():
    close = judge_ab(latency(20.0), latency(19.0), "avg_latency_ms", 10.0, "lower_is_better", 1000)
    assert close[0] == "inconclusive" and "within ±10%" in close[1]
    few = judge_ab(
        latency(25.0, n=999), latency(15.0), "avg_latency_ms", 10.0, "lower_is_better", 1000
    )
    assert few[0] == "inconclusive"
    assert few[1] == "not enough requests: A 999, B 2000 (need 1000 each)"


def test_latency_difference_must_be_significant_with_enough_samples():
    slow = tuple(float(v) for v in range(20, 40))
    fast = tuple(float(v) for v in range(5, 25))
    overlap = tuple(float(v) for v in range(18, 38))
    significant = judge_ab(
        latency(29.5, samples=slow),
        latency(14.5, samples=fast),
        "p95_latency_ms",
        10,
        "lower_is_better",
        10,
    )
    assert significant[0] == "B"
    assert significant[2]["p_value"] < 0.05
    # Same averages, but rank samples that barely differ: p ≥ 0.05 → no verdict.
    noisy = judge_ab(
        latency(29.5, samples=slow),
        latency(14.5, samples=overlap),
        "avg_latency_ms",
        10,
        "lower_is_better",
        10,
    )
    assert noisy[0] == "inconclusive"
    assert "not significant" in noisy[1]
    assert noisy[2]["p_value"] >= 0.05


def test_error_rate_is_judged_without_a_rank_test():
    a = VersionFigures(requests=2000, errors=100, samples=tuple(float(v) for v in range(10)))
    b = VersionFigures(requests=2000, errors=20, samples=tuple(float(v) for v in range(10)))
    verdict, _, figures = judge_ab(a, b, "error_rate", 10.0, "lower_is_better", 1000)
    assert verdict == "B"
    assert "p_value" not in figures


def test_higher_is_better_and_zero_baseline():
    a = VersionFigures(requests=2000, errors=0)
    b = VersionFigures(requests=2000, errors=10)
    assert judge_ab(a, b, "error_rate", 10.0, "lower_is_better", 100)[0] == "A"
    assert judge_ab(a, b, "error_rate", 10.0, "higher_is_better", 100)[0] == "B"
    assert judge_ab(a, a, "error_rate", 10.0, "lower_is_better", 100)[0] == "inconclusive"


def _latency(samples: list[float]) -> VersionFigures:
    return VersionFigures(
        requests=len(samples),
        latency_sum_ms=sum(samples),
        latency_count=len(samples),
        samples=tuple(samples),
    )


SLOW_TRIGGER = [("avg_latency_ms", 100.0)]


def test_a_latency_breach_on_a_node_slow_for_both_versions_is_not_the_new_versions_fault():
    old = _latency([150.0 + i for i in range(20)])
    new = _latency([151.5 + i for i in range(20)])
    assert evaluate_triggers(new, SLOW_TRIGGER) == ["avg_latency_ms 161.0 ms > 100 ms"]
    assert evaluate_triggers(new, SLOW_TRIGGER, baseline=old) == []


def test_a_latency_breach_counts_when_the_new_version_is_significantly_slower():
    old = _latency([40.0 + i for i in range(20)])
    new = _latency([150.0 + i for i in range(20)])
    breaches = evaluate_triggers(new, SLOW_TRIGGER, baseline=old)
    assert breaches == ["avg_latency_ms 159.5 ms > 100 ms"]


def test_with_too_few_samples_the_threshold_alone_decides():
    old = _latency([150.0, 151.0, 152.0])
    new = _latency([150.0, 151.0, 152.0])
    assert evaluate_triggers(new, SLOW_TRIGGER, baseline=old) != []


def test_the_baseline_never_excuses_error_rates():
    old = VersionFigures(requests=100, errors=50, samples=tuple(float(i) for i in range(20)))
    new = VersionFigures(requests=100, errors=50, samples=tuple(float(i) for i in range(20)))
    assert evaluate_triggers(new, [("error_rate", 5.0)], baseline=old) == ["error_rate 50.0% > 5%"]
