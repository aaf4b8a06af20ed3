"""The whole analysis, once: runs -> swept keys -> groups -> targets -> summaries -> profiles,
scores, the comparison with the baseline and the hyperparameter sensitivities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optbench.errors import UserError
from optbench.report.baselines import BaselineComparison, compare_to_baseline
from optbench.report.groups import group_runs, shown_keys, swept_keys
from optbench.report.profiles import SECONDS, Scoring, score_methods
from optbench.report.runs import Run, load_runs
from optbench.report.sensitivity import DEFAULT_TOLERANCE, Sensitivity, sensitivities
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
    scoring: Scoring | None  # times to target, scores, speedups; None: no target anywhere
    explicit_target: bool  # --target given, rather than the default
    against: BaselineComparison
    sensitivities: list[Sensitivity]  # one per numeric key swept over 3 or more values

    @property
    def profiled(self) -> bool:
        """Performance profiles compare methods across workloads: 2 or more, with times."""
        return self.scoring is not None and len(self.workloads) >= 2

    @property
    def chosen_on_test(self) -> int:
        """Runs whose results predate the validation split (results.json schema 1)."""
        return sum(r.chosen_on_test for r in self.runs)


def compare(
    roots: list[Path],
    target: float | None,
    baseline: str | None,
    alpha: float,
    tolerance: float = DEFAULT_TOLERANCE,
    unit: str = SECONDS,
) -> Comparison:
    runs = load_runs(roots)
    swept = swept_keys(runs)
    shown = shown_keys(runs, swept)
    groups = group_runs(runs, swept, shown)
    if target is not None and target > 1 and any(g.headline.percent for g in groups):
        raise UserError(f"--target {target:g}: an accuracy target is a fraction in (0, 1], not a %")
    targets = workload_targets(groups, target)
    summaries = [summarize(g, targets[g.workload]) for g in groups]
    against = compare_to_baseline(summaries, baseline, alpha)
    scoring = score_methods(summaries, against.method, unit)
    return Comparison(
        roots,
        runs,
        swept,
        shown,
        summaries,
        list(targets),
        scoring,
        target is not None,
        against,
        sensitivities(groups, shown, tolerance),
    )
