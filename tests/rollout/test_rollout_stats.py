from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitopsd.rollout.stats import mann_whitney_u, rank


def test_scipy_documentation_example():
    # scipy.stats.mannwhitneyu docs: males [19, 22, 16, 29, 24], females [20, 11, 17, 12],
    # method="asymptotic" → statistic 17.0, pvalue 0.11134688653314041.
    # By hand: mean U = 5*4/2 = 10, var = 5*4*10/12 = 50/3, z = (17 - 10 - 0.5)/sqrt(50/3).
    result = mann_whitney_u([19, 22, 16, 29, 24], [20, 11, 17, 12])
    assert result.u == 17.0
    assert result.z == pytest.approx(6.5 / math.sqrt(50 / 3))
    assert result.p_value == pytest.approx(0.11134688653314041, rel=1e-9)


def test_ties_use_the_tie_corrected_variance():
    # Reference: scipy 1.17.1 mannwhitneyu(x, y, method="asymptotic") → 14.0, 0.004145719362051239.
    # Ties across the samples: 1.5 twice, 2.2 four times, 3.1 three times, 4.0 twice,
    # so the tie term is 6 + 60 + 24 + 6 = 96.
    x = [1.2, 1.5, 1.5, 2.0, 2.2, 2.2, 2.2, 3.1, 3.3, 4.0]
    y = [2.2, 2.5, 3.1, 3.1, 3.6, 4.0, 4.4, 4.5, 5.0, 5.2, 6.1]
    result = mann_whitney_u(x, y)
    assert result.u == 14.0
    assert result.z < 0  # x tends to be smaller
    assert result.p_value == pytest.approx(0.004145719362051239, rel=1e-9)
    swapped = mann_whitney_u(y, x)
    assert swapped.u == 10 * 11 - 14.0
    assert swapped.z == pytest.approx(-result.z)
    assert swapped.p_value == pytest.approx(result.p_value)


@pytest.mark.parametrize(
    ("x", "y", "u", "p"),
    [
        # Reference values: scipy 1.17.1 mannwhitneyu(x, y, method="asymptotic").
        (
            [(i * 37) % 101 / 10 for i in range(60)],
            [((i * 53) % 97) / 10 + 0.8 for i in range(40)],
            1138.0,
            0.6652104480038891,
        ),
        (
            [1, 2, 3, 4, 5, 6, 7, 8],
            [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5],
            28.0,
            0.713191261016072,
        ),
        ([3.0] * 8, [3.0] * 9, 36.0, 1.0),  # all equal: no evidence at all
    ],
)
def test_reference_values(x, y, u, p):
    result = mann_whitney_u(x, y)
    assert result.u == u
    assert result.p_value == pytest.approx(p, rel=1e-9)


def test_clearly_separated_samples_are_significant():
    result = mann_whitney_u([float(v) for v in range(10)], [float(v) for v in range(20, 30)])
    assert result.u == 0.0
    assert result.p_value < 0.001


def test_empty_sample_is_refused():
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney_u([], [1.0])


def test_rank_averages_ties():
    assert rank([10.0, 30.0, 20.0, 20.0, 5.0]) == [2.0, 5.0, 3.5, 3.5, 1.0]


values = st.lists(st.integers(0, 20).map(float), min_size=1, max_size=30)


@given(values, values)
def test_u_counts_pairs_and_p_is_a_probability(x, y):
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    result = mann_whitney_u(x, y)
    assert result.u == pytest.approx(pairs)
    assert 0.0 <= result.p_value <= 1.0
    assert mann_whitney_u(y, x).p_value == pytest.approx(result.p_value)
