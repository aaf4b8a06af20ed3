"""One group's numbers: statistics over its completed seeds and its time to target."""

from __future__ import annotations

from dataclasses import dataclass

from optbench.report.groups import Group, Stat, stat
from optbench.report.targets import ATTEMPTS, time_to_target

# results.json fields averaged over a group's completed runs.
RESULT_METRICS = (
    "final_test_acc",
    "best_test_acc",
    "wall_time_s",
    "images_per_s",
    "peak_memory_mb",
)


@dataclass(frozen=True)
class Summary:
    group: Group
    target: float | None
    stats: dict[str, Stat]  # RESULT_METRICS, time_to_target_s and epochs_to_target
    reached: int  # runs that reached the target
    attempts: int  # completed and diverged runs: each either reached the target or missed it


def summarize(group: Group, target: float | None) -> Summary:
    """Means over completed runs only; time to target over the runs that reached it."""
    stats = {k: stat(r.result(k) for r in group.completed) for k in RESULT_METRICS}
    attempts = group.with_status(*ATTEMPTS)
    hits = [h for r in attempts if (h := time_to_target(r, target)) is not None]
    stats["time_to_target_s"] = stat(h.train_time_s for h in hits)
    stats["epochs_to_target"] = stat(h.epoch for h in hits)
    return Summary(group, target, stats, len(hits), len(attempts))
