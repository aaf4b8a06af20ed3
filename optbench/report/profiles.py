"""Performance profiles and AlgoPerf's scores (rules v0.6) over workloads.

For method m, rho_m(tau) is the fraction of workloads on which m's time to target is at
most tau times the fastest method's there (Dolan & Moré 2002). A method that misses the
target on a workload, or never ran on it, never counts for it, at any tau. AlgoPerf scores a
method by the area under rho_m over [1, tau_max], normalised to [0, 1].

The times are one unit throughout: seconds of training (evaluation excluded) or optimizer
steps, which do not depend on the machine.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from optbench.errors import UserError
from optbench.report.runs import Run
from optbench.report.summary import Summary
from optbench.report.targets import ATTEMPTS, Hit, time_to_target

# The range AlgoPerf plots and scores.
TAU_MAX = 4.0
# What a time to target is measured in: `optbench report --time`.
SECONDS, STEPS = "seconds", "steps"
TIME_UNITS = (SECONDS, STEPS)


def hit_time(hit: Hit | None, unit: str, run: Run) -> float:
    """A hit's time in `unit`; a miss is infinite."""
    if hit is None:
        return math.inf
    if unit == SECONDS:
        return hit.train_time_s
    if hit.step is None:
        raise UserError(f"--time steps: {run.path}/metrics.jsonl has no step counts; use seconds")
    return float(hit.step)


def method_times(summaries: list[Summary], unit: str = SECONDS) -> dict[str, dict[str, float]]:
    """workload -> method -> median over seeds of the time to target, a miss counting as
    infinite: a method reaches a workload's target when more than half of its seeds do."""
    times: dict[str, dict[str, float]] = {}
    for s in summaries:
        attempts = s.group.with_status(*ATTEMPTS)
        if attempts:
            seeds = [hit_time(time_to_target(run, s.target), unit, run) for run in attempts]
            times.setdefault(s.group.workload, {})[s.group.method] = statistics.median(seeds)
    return times


def planned_time(run: Run, unit: str) -> float | None:
    """How long `run` was planned to train, in `unit`: its planned steps, or for seconds those
    steps at the run's own seconds per step (train_time_s / steps: a diverged or interrupted run
    is extrapolated to its full plan). None without the numbers (no step taken)."""
    planned, steps, seconds = (run.result(k) for k in ("planned_steps", "steps", "train_time_s"))
    if not isinstance(planned, int | float) or planned <= 0:
        return None
    if unit == STEPS:
        return float(planned)
    if not isinstance(steps, int | float) or steps <= 0 or not isinstance(seconds, int | float):
        return None
    return planned * seconds / steps


def workload_budgets(
    summaries: list[Summary], times: dict[str, dict[str, float]], unit: str = SECONDS
) -> dict[str, float]:
    """workload -> the time a miss counts as in the speedup: the largest planned training time
    (planned_time) among the workload's runs, and never less than any method's time to target
    there, so that a miss is never faster than a hit. A workload none of whose runs tells its
    plan gets its largest time to target (1 if no method reached it: where all miss, the
    speedup there is 1 whatever the budget)."""
    budgets = {}
    for workload, per_method in times.items():
        runs = [r for s in summaries if s.group.workload == workload for r in s.group.runs]
        planned = [t for r in runs if (t := planned_time(r, unit)) is not None]
        reached = [t for t in per_method.values() if math.isfinite(t)]
        budgets[workload] = max(planned + reached, default=1.0)
    return budgets


def performance_profiles(
    times: dict[str, dict[str, float]], taus: Sequence[float]
) -> dict[str, list[float]]:
    """method -> rho_method(tau) for each tau; methods in order of first appearance."""
    methods = _methods(times)
    profiles = {}
    for method in methods:
        profiles[method] = [
            sum(
                1
                for per_method in times.values()
                if math.isfinite(t := per_method.get(method, math.inf))
                and t <= tau * min(per_method.values())
            )
            / len(times)
            for tau in taus
        ]
    return profiles


def _methods(times: dict[str, dict[str, float]]) -> list[str]:
    return list(dict.fromkeys(m for per_method in times.values() for m in per_method))


def profile_scores(
    times: dict[str, dict[str, float]], tau_max: float = TAU_MAX
) -> dict[str, float]:
    """method -> AlgoPerf's score: rho_method integrated over tau in [1, tau_max], over
    (tau_max - 1), so 1 is fastest on every workload and 0 never within tau_max of the fastest.

    Exactly, as rho is a step function: a workload where the method's ratio r = t / t_fastest
    is at most tau_max adds (tau_max - r) / (tau_max - 1) / W, W the number of workloads; a
    miss, an absent method and a workload every method missed add 0.
    """
    if tau_max <= 1:
        raise ValueError(f"tau_max must be > 1, got {tau_max}")
    scores = dict.fromkeys(_methods(times), 0.0)
    for per_method in times.values():
        fastest = min(per_method.values(), default=math.inf)
        if not math.isfinite(fastest):
            continue
        for method, t in per_method.items():
            if math.isfinite(t) and _ratio(t, fastest) <= tau_max:
                scores[method] += (tau_max - _ratio(t, fastest)) / (tau_max - 1) / len(times)
    return scores


def geometric_mean_speedup(
    times: dict[str, dict[str, float]], baseline: str, budgets: dict[str, float]
) -> dict[str, float]:
    """method -> the geometric mean over workloads of baseline time / method time: above 1,
    faster than the baseline. A miss (infinite, or absent from a workload) counts as that
    workload's budget, for the baseline too: missing everywhere the baseline misses is a
    speedup of 1 there, not undefined."""
    methods = _methods(times)
    if baseline not in methods:
        listed = "; ".join(f"'{m}'" for m in methods)
        raise UserError(f"speedup baseline '{baseline}' is not a method timed here: {listed}")

    def capped(workload: str, method: str) -> float:
        t = times[workload].get(method, math.inf)
        return t if math.isfinite(t) else budgets[workload]

    speedups = {}
    for method in methods:
        logs = [_log(_ratio(capped(w, baseline), capped(w, method))) for w in times]
        # A plain mean: fsum refuses -inf + inf (a miss each way at an infinite budget), nan here.
        speedups[method] = math.exp(sum(logs) / len(logs)) if logs else math.nan
    return speedups


@dataclass(frozen=True)
class Scoring:
    """A report's methods scored over its workloads, in one time unit."""

    unit: str  # SECONDS or STEPS
    times: dict[str, dict[str, float]]  # method_times
    budgets: dict[str, float]  # workload_budgets: what a miss counts as in the speedup
    scores: dict[str, float]  # profile_scores
    baseline: str  # the method the speedups are over
    speedups: dict[str, float] | None  # None: the baseline never finished or diverged anywhere


def score_methods(summaries: list[Summary], baseline: str, unit: str = SECONDS) -> Scoring | None:
    """Profile scores and speedups over `baseline`; None when no workload has a target (no
    run completed) or no group made an attempt."""
    if all(s.target is None for s in summaries):
        return None
    times = method_times(summaries, unit)
    if not times:
        return None
    budgets = workload_budgets(summaries, times, unit)
    speedups = (
        geometric_mean_speedup(times, baseline, budgets) if baseline in _methods(times) else None
    )
    return Scoring(unit, times, budgets, profile_scores(times), baseline, speedups)


def _ratio(time: float, other: float) -> float:
    """time / other, where equal times (two zeros: a target met before any training; two
    infinite budgets) are a ratio of 1, and a time of 0 beats any positive one."""
    if time == other:  # two misses at an infinite budget too
        return 1.0
    return math.inf if other == 0 else time / other


def _log(ratio: float) -> float:
    return -math.inf if ratio == 0 else math.log(ratio)
