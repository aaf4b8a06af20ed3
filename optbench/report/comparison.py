"""The whole analysis, once: runs -> swept keys -> groups -> targets -> summaries -> profiles
and the comparison with the baseline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optbench.errors import UserError
from optbench.report.baselines import BaselineComparison, compare_to_baseline
from optbench.report.groups import group_runs, shown_keys, swept_keys
from optbench.report.profiles import method_times
from optbench.report.runs import Run, load_runs
from optbench.report.summary import Summary, summarize
from optbench.report.targets import workload_targets


@dataclass(frozen=True)
class Comparison:
    roots: list[Path]
    runs: list[Run]
    swept: list[str]  # config keys the runs differ in (seed and bookkeeping aside)
    shown: list[str]  # those of them worth a column
    summaries: list[Summary]  # one per group
    workloads: list[str]
    times: dict[str, dict[str, float]] | None  # workload -> method -> time; None: one workload
    explicit_target: bool  # --target given, rather than the default
    against: BaselineComparison


def compare(
    roots: list[Path], target: float | None, baseline: str | None, alpha: float
) -> Comparison:
    runs = load_runs(roots)
    swept = swept_keys(runs)
    shown = shown_keys(runs, swept)
    groups = group_runs(runs, swept, shown)
    if target is not None and target > 1 and any(g.headline.percent for g in groups):
        raise UserError(f"--target {target:g}: an accuracy target is a fraction in (0, 1], not a %")
    targets = workload_targets(groups, target)
    summaries = [summarize(g, targets[g.workload]) for g in groups]
    times = method_times(summaries) if len(targets) >= 2 else None
    against = compare_to_baseline(summaries, baseline, alpha)
    return Comparison(
        roots, runs, swept, shown, summaries, list(targets), times, target is not None, against
    )
