"""Statistics over seeds against hand-computed values, scipy, G*Power's tables and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from optbench.report.seed_statistics import (
    hedges_g,
    seeds_needed,
    t_interval,
    welch_power,
    welch_test,
)

A = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, variance 2.5
B = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]  # mean 7, variance 14


def test_t_interval_is_the_mean_plus_minus_t_times_the_standard_error():
    # t(0.975, 4) = 2.776445 (printed tables); s / √n = √2.5 / √5 = √0.5.
    half = 2.776445 * math.sqrt(0.5)
    assert t_interval(A) == pytest.approx((3 - half, 3 + half), rel=1e-6)
    assert t_interval(B, 0.9) == pytest.approx(
        stats.t.interval(0.9, 5, loc=7, scale=math.sqrt(14 / 6))
    )
    assert t_interval([0.5]) is None and t_interval([]) is None


def test_welch_test_matches_the_hand_computation_and_scipy():
    test = welch_test(A, B)
    # t = -4 / √(2.5/5 + 14/6); ν = (17/6)² / (0.5²/4 + (7/3)²/5).
    assert test.difference == -4.0
    assert test.t == pytest.approx(-4 / math.sqrt(17 / 6))
    assert test.df == pytest.approx((17 / 6) ** 2 / (0.25 / 4 + (49 / 9) / 5))
    scipy_result = stats.ttest_ind(A, B, equal_var=False)
    assert test.p == pytest.approx(scipy_result.pvalue)
    assert test.t == pytest.approx(scipy_result.statistic)
    # One side without spread is fine: t = (2 - 10) / √(2/2) = -8 on ν = 1, a Cauchy variable.
    one_sided = welch_test([1.0, 3.0], [10.0, 10.0])
    assert (one_sided.t, one_sided.df) == (-8.0, 1.0)
    assert one_sided.p == pytest.approx(2 * (0.5 - math.atan(8) / math.pi))


def test_welch_test_needs_two_seeds_a_side_and_some_spread():
    assert welch_test([1.0], B) is None
    assert welch_test(A, [2.0]) is None
    assert welch_test([0.5, 0.5], [0.7, 0.7]) is None


def test_hedges_g_is_cohens_d_with_the_small_sample_correction():
    # s_p² = (4 · 2.5 + 5 · 14) / 9 = 80/9, so d = -4 / √(80/9) = -3/√5; J = 1 - 3/35.
    assert hedges_g(A, B) == pytest.approx(-3 / math.sqrt(5) * (1 - 3 / 35))
    assert hedges_g(B, A) == pytest.approx(-hedges_g(A, B))
    assert hedges_g([1.0], B) is None and hedges_g([0.5, 0.5], [0.7, 0.7]) is None


@pytest.mark.parametrize(("d", "n"), [(0.2, 394), (0.5, 64), (0.8, 26)])
def test_seeds_needed_matches_gpower_for_equal_spreads(d, n):
    """G*Power, t-test of two independent means, two-tailed, α = 0.05, power 0.8: n per group."""
    baseline = [-1.0, 0.0, 1.0]  # standard deviation 1
    group = [x + d for x in baseline]
    assert seeds_needed(group, baseline, alpha=0.05) == n
    assert welch_power(d, 1.0, 1.0, n, 0.05) >= 0.8 > welch_power(d, 1.0, 1.0, n - 1, 0.05)


def test_welch_power_with_unequal_spreads_matches_simulation():
    rng = np.random.default_rng(0)
    n, reps = 8, 40_000
    a = rng.normal(1.0, 1.0, size=(reps, n))
    b = rng.normal(0.0, 2.0, size=(reps, n))
    simulated = np.mean(stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05)
    assert welch_power(1.0, 1.0, 2.0, n, 0.05) == pytest.approx(simulated, abs=0.01)


def test_seeds_needed_is_none_for_no_difference_or_no_test():
    assert seeds_needed([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], alpha=0.05) is None  # zero difference
    assert seeds_needed([1.0], [2.0, 3.0], alpha=0.05) is None
    assert seeds_needed([0.5, 0.5], [0.7, 0.7], alpha=0.05) is None
    assert seeds_needed([0.0, 1.0], [0.0, 1.001], alpha=0.05) is None  # beyond MAX_SEEDS
