"""Statistics over seeds: is a difference between two groups bigger than the seed noise?

Pure functions of per-seed values (one float per seed), so they outlive changes to what a
run writes. Seed counts are small (2-5), which decides the choices: a Student-t interval
rather than a bootstrap (resampling three values gives intervals that are far too narrow),
Welch's t-test rather than Student's (groups of different optimizers rarely share a spread),
and Hedges' g rather than Cohen's d (d is biased upwards at small n).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

# The power a seeds-needed estimate aims for: the usual 80% (Cohen 1988).
POWER = 0.8
# Beyond this many seeds per group a difference is, for a training run, not resolvable;
# a zero difference never is.
MAX_SEEDS = 10_000


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean, x̄ ± t_{(1+c)/2, n-1} · s/√n; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return float(mean - half), float(mean + half)


@dataclass(frozen=True)
class Welch:
    difference: float  # mean(a) - mean(b)
    t: float
    df: float
    p: float  # two-sided


def welch_test(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    """Welch's t-test of mean(a) = mean(b), two-sided; None below 2 values a side or with no
    spread on either side (the statistic divides by it).

    t = (ā - b̄) / √(s_a²/n_a + s_b²/n_b); ν = (s_a²/n_a + s_b²/n_b)² /
    ((s_a²/n_a)²/(n_a - 1) + (s_b²/n_b)²/(n_b - 1)) (Welch-Satterthwaite); p = 2·P(T_ν > |t|).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return None
    difference = statistics.fmean(a) - statistics.fmean(b)
    t = difference / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return Welch(difference, t, df, float(2 * stats.t.sf(abs(t), df)))


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Standardised difference of means, bias-corrected; None below 2 values a side or with
    no spread.

    d = (ā - b̄) / s_p with s_p² = ((n_a - 1)s_a² + (n_b - 1)s_b²) / (n_a + n_b - 2);
    g = d · (1 - 3 / (4(n_a + n_b) - 9)) (Hedges and Olkin 1985).
    """
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None
    pooled = ((na - 1) * statistics.variance(a) + (nb - 1) * statistics.variance(b)) / (na + nb - 2)
    if pooled == 0:
        return None
    d = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(pooled)
    return d * (1 - 3 / (4 * (na + nb) - 9))


def welch_power(difference: float, sd_a: float, sd_b: float, n: int, alpha: float) -> float:
    """The chance that Welch's test at level `alpha`, with `n` seeds a side, finds a true
    difference `difference` between groups whose true spreads are `sd_a` and `sd_b`.

    δ = Δ / √((σ_a² + σ_b²)/n); ν = (n - 1)(σ_a² + σ_b²)² / (σ_a⁴ + σ_b⁴);
    power = P(|T| > t_{1-α/2, ν}) for T noncentral t with ν degrees of freedom and noncentrality δ.
    With σ_a = σ_b this is the two-sample t-test's power (ν = 2n - 2, δ = d·√(n/2)).
    """
    spread = sd_a**2 + sd_b**2
    delta = difference / math.sqrt(spread / n)
    df = (n - 1) * spread**2 / (sd_a**4 + sd_b**4)
    critical = stats.t.ppf(1 - alpha / 2, df)
    # P(T < -c) as P(T > c) at -δ: scipy's nct.cdf returns nan far out in the lower tail.
    return float(stats.nct.sf(critical, df, delta) + stats.nct.sf(critical, df, -delta))


def seeds_needed(
    a: Sequence[float], b: Sequence[float], alpha: float, power: float = POWER
) -> int | None:
    """Seeds per group for Welch's test to find the observed difference with `power`, taking
    the observed means and spreads as the true ones: the smallest n >= 2 with
    welch_power(ā - b̄, s_a, s_b, n, alpha) >= power. None where more than MAX_SEEDS would be
    needed (a zero difference: always), or where the test is undefined (see welch_test).
    """
    if welch_test(a, b) is None:
        return None
    difference, sd_a, sd_b = (
        statistics.fmean(a) - statistics.fmean(b),
        *map(statistics.stdev, (a, b)),
    )

    def enough(n: int) -> bool:
        return welch_power(difference, sd_a, sd_b, n, alpha) >= power

    if difference == 0 or not enough(MAX_SEEDS):
        return None
    low, high = 1, 2  # power grows with n: double past the answer, then halve the gap
    while not enough(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
