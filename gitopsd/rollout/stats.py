"""Rank statistics for A/B verdicts, in pure Python (no scipy on an edge controller).

Latency distributions are skewed and heavy-tailed, so comparing means says little about
whether B is really faster; the Mann-Whitney U test compares ranks and needs no normality.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class MannWhitneyResult:
    """U of the first sample, its z-score under the null hypothesis, and the two-sided p."""

    u: float  # pairs (x, y) with x > y, ties counted as one half
    z: float  # positive when the first sample tends to be larger
    p_value: float


def rank(values: Sequence[float]) -> list[float]:
    """1-based ranks of `values`, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        for k in range(start, end + 1):
            ranks[order[k]] = mean_rank
        start = end + 1
    return ranks


def _tie_term(values: Sequence[float]) -> float:
    """Sum of t³ - t over groups of t equal values (the variance's tie correction)."""
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return float(sum(t**3 - t for t in counts.values()))


def u_statistic(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Mann-Whitney U of `x` (pairs with x > y, ties one half) and its variance under the null
    hypothesis, tie-corrected; (0, 0) when either sample is empty."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.0, 0.0
    ordered = sorted(y)
    # Counting by bisection: O(n log n) without ranking the combined sample.
    u = sum(
        bisect_left(ordered, v) + (bisect_right(ordered, v) - bisect_left(ordered, v)) / 2
        for v in x
    )
    n = n1 + n2
    ties = _tie_term([*x, *y])
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    return u, variance


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> MannWhitneyResult:
    """Two-sided Mann-Whitney U test by the normal approximation.

    With the tie correction of the variance and a continuity correction of 1/2 (as scipy's
    `mannwhitneyu(method="asymptotic")`); close to the exact test once both samples have
    eight values or more. Raises ValueError if either sample is empty.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    u, variance = u_statistic(x, y)
    mean = n1 * n2 / 2
    if variance <= 0:  # every value equal: no evidence of any difference
        return MannWhitneyResult(u, 0.0, 1.0)
    distance = max(abs(u - mean) - 0.5, 0.0)
    z = math.copysign(distance / math.sqrt(variance), u - mean)
    p = math.erfc(abs(z) / math.sqrt(2))
    return MannWhitneyResult(u, z, min(1.0, p))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (0-1); (0, 1) when there are no trials.

    Unlike the normal interval it stays inside [0, 1] and is honest for small samples and
    rates near 0 or 1 (1 error in 10 calls is not evidence of a 10 % error rate).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if trials <= 0:
        return 0.0, 1.0
    successes = min(max(successes, 0), trials)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mixture_likelihood_ratio(z: float, information: float) -> float:
    """Mixture sequential probability ratio of a z-statistic (Robbins; Johari et al.'s mSPRT).

    `z` is an asymptotically normal test statistic and `information` its sample size in units
    of the mixing prior's scale (`r = n / n0`). Under the null hypothesis the ratio is a
    non-negative martingale, so by Ville's inequality P(it *ever* reaches 1/alpha) <= alpha:
    the test may look again after every batch of requests without inflating false alarms.
    `1 / ratio` is an always-valid p-value.
    """
    r = max(information, 0.0)
    if r == 0:
        return 1.0
    exponent = z * z * r / (2 * (1 + r))
    # Past ~700 exp overflows; the ratio is astronomically significant by then anyway.
    return math.exp(min(exponent, 700.0) - 0.5 * math.log1p(r))


def mixture_boundary(alpha: float, information: float) -> float:
    """The |z| at which `mixture_likelihood_ratio` reaches 1/alpha (the test's boundary)."""
    r = max(information, 1e-12)
    return math.sqrt((1 + r) / r * (2 * math.log(1 / alpha) + math.log1p(r)))
