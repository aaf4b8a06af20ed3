"""Target accuracies, and when each run first reached its workload's target.

Timed from metrics.jsonl, like AlgoPerf: the first evaluated epoch whose test accuracy is at
least the target, at that epoch's cumulative training time (evaluation excluded).
"""

from __future__ import annotations

from dataclasses import dataclass

from optbench.report.groups import Group
from optbench.report.runs import COMPLETED, DIVERGED, Run

# Without --target, each workload's target is this fraction of the best test accuracy any
# completed run reached on it: reachable by construction, and strict enough to rank speed.
DEFAULT_TARGET_FRACTION = 0.95
# Runs that either reach the target or miss it; failed, unfinished and interrupted runs
# never got the chance and are left out of the count.
ATTEMPTS = (COMPLETED, DIVERGED)


@dataclass(frozen=True)
class Hit:
    epoch: int
    train_time_s: float


def time_to_target(run: Run, target: float | None) -> Hit | None:
    """When `run` first reached `target`; None for a miss. A diverged run is a miss."""
    if target is None or run.status != COMPLETED:
        return None
    for record in run.metrics:
        acc = record.get("test_acc")
        if acc is not None and acc >= target:
            return Hit(record["epoch"], record["train_time_s"])
    return None


def best_test_acc(run: Run) -> float | None:
    accs = [r["test_acc"] for r in run.metrics if r.get("test_acc") is not None]
    return max(accs, default=None)


def workload_targets(groups: list[Group], target: float | None) -> dict[str, float | None]:
    """Each workload's target: `target` for all, or the default; None if nothing completed."""
    best: dict[str, list[float]] = {}
    for group in groups:
        accs = best.setdefault(group.workload, [])
        accs += [a for r in group.completed if (a := best_test_acc(r)) is not None]
    if target is not None:
        return dict.fromkeys(best, target)
    return {w: DEFAULT_TARGET_FRACTION * max(accs) if accs else None for w, accs in best.items()}
