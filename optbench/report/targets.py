"""Target values of the main metric, and when each run first reached its workload's target.

Timed from metrics.jsonl, like AlgoPerf: the first evaluation whose main (validation) metric is
at least the target, at that evaluation's step, training examples seen and cumulative training
time (evaluation excluded). Epoch records and mid-epoch evaluation records are walked in the
order they were written; records without the metric (epochs that were not evaluated) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from optbench.report.groups import Group
from optbench.report.headline import Headline
from optbench.report.runs import COMPLETED, DIVERGED, Run

# Without --target, each workload's target is this fraction of the best value of its main metric
# any completed run reached on it (the best loss / this fraction, for a loss): reachable by
# construction, and strict enough to rank speed.
DEFAULT_TARGET_FRACTION = 0.95
# Runs that either reach the target or miss it; failed, unfinished and interrupted runs
# never got the chance and are left out of the count.
ATTEMPTS = (COMPLETED, DIVERGED)


@dataclass(frozen=True)
class Hit:
    """Where a run first reached its target. `step` and `examples` are None in records written
    before the trainer logged them; `epoch` is fractional for a mid-epoch evaluation."""

    epoch: float
    step: int | None
    examples: int | None
    train_time_s: float


def time_to_target(run: Run, target: float | None) -> Hit | None:
    """When `run` first reached `target`; None for a miss. A diverged run is a miss."""
    if target is None or run.status != COMPLETED:
        return None
    headline = run.headline
    for record in run.metrics:
        value = record.get(headline.metric)
        if value is not None and headline.reaches(value, target):
            return Hit(
                record["epoch"], record.get("step"), record.get("examples"), record["train_time_s"]
            )
    return None


def best_value(run: Run) -> float | None:
    """The best value of the run's main metric over its evaluations."""
    metric = run.headline.metric
    return run.headline.best_of([r[metric] for r in run.metrics if r.get(metric) is not None])


def workload_targets(groups: list[Group], target: float | None) -> dict[str, float | None]:
    """Each workload's target: `target` for all, or the default; None if nothing completed."""
    best: dict[str, list[float]] = {}
    headlines: dict[str, Headline] = {}
    for group in groups:
        values = best.setdefault(group.workload, [])
        values += [v for r in group.completed if (v := best_value(r)) is not None]
        headlines.setdefault(group.workload, group.headline)
    if target is not None:
        return dict.fromkeys(best, target)
    return {w: default_target(headlines[w], values) for w, values in best.items()}


def default_target(headline: Headline, values: list[float]) -> float | None:
    """The fraction of the best value (an accuracy), or the best value over the fraction (a
    loss: that much worse); None if nothing completed."""
    best = headline.best_of(values)
    if best is None:
        return None
    return (
        best * DEFAULT_TARGET_FRACTION
        if headline.higher_is_better
        else best / DEFAULT_TARGET_FRACTION
    )
