"""One group's numbers: statistics over its completed seeds and its time to target."""

from __future__ import annotations

from dataclasses import dataclass

from optbench.report.groups import Group, Stat, stat
from optbench.report.headline import Headline
from optbench.report.targets import ATTEMPTS, time_to_target

# results.json fields averaged over a group's completed runs, besides its main metric's
# final and best value (final_test_acc, best_test_acc for a classifier).
COST_METRICS = ("wall_time_s", "images_per_s", "peak_memory_mb")


def result_metrics(headline: Headline) -> tuple[str, ...]:
    return (headline.final, headline.best, *COST_METRICS)


@dataclass(frozen=True)
class Summary:
    group: Group
    target: float | None
    stats: dict[str, Stat]  # result_metrics, time_to_target_s and epochs_to_target
    reached: int  # runs that reached the target
    attempts: int  # completed and diverged runs: each either reached the target or missed it

    @property
    def headline(self) -> Headline:
        return self.group.headline


def summarize(group: Group, target: float | None) -> Summary:
    """Means over completed runs only; time to target over the runs that reached it."""
    keys = result_metrics(group.headline)
    stats = {k: stat(r.result(k) for r in group.completed) for k in keys}
    attempts = group.with_status(*ATTEMPTS)
    hits = [h for r in attempts if (h := time_to_target(r, target)) is not None]
    stats["time_to_target_s"] = stat(h.train_time_s for h in hits)
    stats["epochs_to_target"] = stat(h.epoch for h in hits)
    return Summary(group, target, stats, len(hits), len(attempts))
