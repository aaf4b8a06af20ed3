"""Performance profiles (Dolan & Moré 2002, as AlgoPerf scores optimizers) over workloads.

For method m, rho_m(tau) is the fraction of workloads on which m's time to target is at
most tau times the fastest method's there. A method that misses the target on a workload
never counts for it, at any tau.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from optbench.report.summary import Summary
from optbench.report.targets import ATTEMPTS, time_to_target

# The range AlgoPerf plots and scores.
TAU_MAX = 4.0


def method_times(summaries: list[Summary]) -> dict[str, dict[str, float]]:
    """workload -> method -> median over seeds of the time to target, a miss counting as
    infinite: a method reaches a workload's target when more than half of its seeds do."""
    times: dict[str, dict[str, float]] = {}
    for s in summaries:
        attempts = s.group.with_status(*ATTEMPTS)
        if attempts:
            seconds = [
                hit.train_time_s if (hit := time_to_target(run, s.target)) else math.inf
                for run in attempts
            ]
            times.setdefault(s.group.workload, {})[s.group.method] = statistics.median(seconds)
    return times


def performance_profiles(
    times: dict[str, dict[str, float]], taus: Sequence[float]
) -> dict[str, list[float]]:
    """method -> rho_method(tau) for each tau; methods in order of first appearance."""
    methods = list(dict.fromkeys(m for per_method in times.values() for m in per_method))
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
