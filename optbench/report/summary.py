"""One group's numbers: statistics over its completed seeds and its time to target."""

from __future__ import annotations

from dataclasses import dataclass

from optbench.report.groups import Group, Stat, stat
from optbench.report.headline import Headline
from optbench.report.targets import ATTEMPTS, time_to_target

# results.json fields averaged over a group's completed runs, besides its main metric's
# final and best value (final_val_acc, best_val_acc for a classifier).
COST_METRICS = ("wall_time_s", "images_per_s", "peak_memory_mb")


# How long the runs that reached the target took: seconds of training, epochs (fractional for a
# mid-epoch evaluation), optimizer steps and training examples; a Hit's fields.
TARGET_STATS = {
    "time_to_target_s": "train_time_s",
    "epochs_to_target": "epoch",
    "steps_to_target": "step",
    "examples_to_target": "examples",
}


def result_metrics(headline: Headline) -> tuple[str, ...]:
    return (headline.final, headline.best, *COST_METRICS)


class Stats(dict[str, Stat]):
    """A group's statistics by key. A key it has none of is an empty Stat, not a crash: a
    report over older and newer results (a test metric, a validation one) or over two tasks
    ranks groups by different keys, and the other group's key is simply not there."""

    def __missing__(self, key: str) -> Stat:
        return Stat(None, None, 0)


@dataclass(frozen=True)
class Summary:
    group: Group
    target: float | None
    stats: dict[str, Stat]  # result_metrics and TARGET_STATS
    reached: int  # runs that reached the target
    attempts: int  # completed and diverged runs: each either reached the target or missed it

    @property
    def headline(self) -> Headline:
        return self.group.headline


def summarize(group: Group, target: float | None) -> Summary:
    """Means over completed runs only; time to target over the runs that reached it."""
    keys = result_metrics(group.headline)
    stats = Stats({k: stat(r.result(k) for r in group.completed) for k in keys})
    attempts = group.with_status(*ATTEMPTS)
    hits = [h for r in attempts if (h := time_to_target(r, target)) is not None]
    for key, field in TARGET_STATS.items():
        stats[key] = stat(getattr(h, field) for h in hits)
    return Summary(group, target, stats, len(hits), len(attempts))


def by_headline(summaries: list[Summary]) -> dict[Headline, list[Summary]]:
    """The summaries by the metric they are ranked by, in order: a report over two tasks (a
    classifier's accuracy, a language model's loss) shows each task's groups with its own."""
    sections: dict[Headline, list[Summary]] = {}
    for s in summaries:
        sections.setdefault(s.headline, []).append(s)
    return sections
