"""Rank statistics for A/B verdicts, in pure Python (no scipy on an edge controller).

Latency distributions are skewed and heavy-tailed, so comparing means says little about
whether B is really faster; the Mann-Whitney U test compares ranks and needs no normality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> MannWhitneyResult:
    """Two-sided Mann-Whitney U test by the normal approximation.

    With the tie correction of the variance and a continuity correction of 1/2 (as scipy's
    `mannwhitneyu(method="asymptotic")`); close to the exact test once both samples have
    eight values or more. Raises ValueError if either sample is empty.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    combined = [*x, *y]
    n = n1 + n2
    u = sum(rank(combined)[:n1]) - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((n + 1) - _tie_term(combined) / (n * (n - 1)))
    if variance <= 0:  # every value equal: no evidence of any difference
        return MannWhitneyResult(u, 0.0, 1.0)
    distance = max(abs(u - mean) - 0.5, 0.0)
    z = math.copysign(distance / math.sqrt(variance), u - mean)
    p = math.erfc(abs(z) / math.sqrt(2))
    return MannWhitneyResult(u, z, min(1.0, p))
