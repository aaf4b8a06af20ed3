"""Each group against its workload's baseline group: is the difference bigger than the seed
noise, and if not, how many seeds would tell? The formulas are in seed_statistics.py."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from optbench.errors import UserError
from optbench.report.headline import Headline
from optbench.report.seed_statistics import Welch, hedges_g, seeds_needed, t_interval, welch_test
from optbench.report.summary import Summary

TIME_TO_TARGET = "time_to_target_s"


def compared(headline: Headline) -> tuple[str, ...]:
    """The numbers a reader ranks methods by: the main metric at the end and at its best, and speed."""
    return (headline.final, headline.best, TIME_TO_TARGET)


CONFIDENCE = 0.95
# Stricter than the customary 0.05: a report tests every group on three metrics without a
# multiple-comparison correction, and modded-nanogpt's record track asks for p < 0.01.
DEFAULT_ALPHA = 0.01


def seed_values(s: Summary, metric: str) -> tuple[float, ...] | None:
    """The per-seed values of `metric` that intervals and tests use. None for time to target
    when a seed missed the target: a miss has no time, and leaving it out would make the
    group look faster than it is."""
    if metric == TIME_TO_TARGET and s.reached < s.attempts:
        return None
    return s.stats[metric].values


def interval(s: Summary, metric: str) -> tuple[float, float] | None:
    """The 95% t-interval of the group's mean, where seed_values gives 2 or more values."""
    values = seed_values(s, metric)
    return None if values is None else t_interval(values, CONFIDENCE)


@dataclass(frozen=True)
class Contrast:
    group: Summary
    baseline: Summary
    metric: str
    difference: float | None  # mean(group) - mean(baseline)
    test: Welch | None
    hedges_g: float | None
    seeds_needed: int | None  # per group, for Welch's test at alpha with 80% power
    note: str  # why there is no test; "" when there is one


@dataclass(frozen=True)
class BaselineComparison:
    method: str  # the baseline group's method, e.g. "optimizer=sgd"
    alpha: float
    contrasts: list[Contrast]
    unmatched: list[str]  # workloads without a group of the baseline method: not compared

    def significant(self, c: Contrast) -> bool:
        return c.test is not None and c.test.p < self.alpha


def baseline_method(summaries: list[Summary], name: str | None) -> str:
    """The method `--baseline` names, spaces ignored (`optimizer=sgd,scheduler=cosine` is the
    group `optimizer=sgd, scheduler=cosine`); without one, the first group's."""
    methods = list(dict.fromkeys(s.group.method for s in summaries))
    if name is None:
        return methods[0]
    for method in methods:
        if method.replace(" ", "") == name.replace(" ", ""):
            return method
    listed = "; ".join(f"'{m}'" for m in methods)
    raise UserError(f"--baseline: no group '{name}'; the groups are: {listed}")


def _note(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> str:
    if a is None and b is None:
        return "target misses in both"
    if a is None or b is None:
        return f"target misses in {'this group' if a is None else 'the baseline'}"
    if min(len(a), len(b)) == 0:
        return "no values"
    if min(len(a), len(b)) < 2:
        return "fewer than 2 seeds"
    return "no spread over seeds"


def contrast(group: Summary, baseline: Summary, metric: str, alpha: float) -> Contrast:
    a, b = seed_values(group, metric), seed_values(baseline, metric)
    if not a or not b:
        return Contrast(group, baseline, metric, None, None, None, None, _note(a, b))
    test = welch_test(a, b)
    return Contrast(
        group,
        baseline,
        metric,
        statistics.fmean(a) - statistics.fmean(b),
        test,
        hedges_g(a, b),
        seeds_needed(a, b, alpha),
        "" if test else _note(a, b),
    )


def compare_to_baseline(
    summaries: list[Summary], name: str | None, alpha: float
) -> BaselineComparison:
    """Every other group of each workload against that workload's group of the baseline method."""
    method = baseline_method(summaries, name)
    baselines = {s.group.workload: s for s in summaries if s.group.method == method}
    contrasts = [
        contrast(s, baselines[s.group.workload], metric, alpha)
        for s in summaries
        if s.group.workload in baselines and s.group.method != method
        for metric in compared(s.headline)
    ]
    workloads = dict.fromkeys(s.group.workload for s in summaries)
    unmatched = [w for w in workloads if w not in baselines]
    return BaselineComparison(method, alpha, contrasts, unmatched)
