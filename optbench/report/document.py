"""The words around the table: targets, the runs left out of the means, and report.md."""

from __future__ import annotations

import math
import os
from pathlib import Path

from optbench.report.baselines import BaselineComparison
from optbench.report.comparison import Comparison
from optbench.report.groups import short_key
from optbench.report.headline import Headline
from optbench.report.runs import COMPLETED, DIVERGED, FAILED, INTERRUPTED, MALFORMED, PRUNED, Run
from optbench.report.seed_statistics import MAX_SEEDS
from optbench.report.summary import Summary
from optbench.report.tables import markdown_contrast_table, markdown_table
from optbench.report.targets import DEFAULT_TARGET_FRACTION
from optbench.tracking.results import malformed


def plots(headline: Headline) -> dict[str, str]:
    """The report's figures: file name -> title (the main metric's named after it)."""
    return {
        f"{headline.metric}.png": f"{headline.metric.replace('_', ' ').capitalize()} per epoch",
        "train_loss.png": "Training loss per epoch",
        "lr.png": "Learning rate per step",
        FINAL_PLOT: headline.label("final").capitalize(),
    }


FINAL_PLOT = "final.png"
PROFILE_PLOT = "profile.png"


def tensorboard_command(c: Comparison) -> str:
    """TensorBoard over every run compared: its HParams tab is the sweep's parallel-coordinates view."""
    return f"tensorboard --logdir {Path(os.path.commonpath(c.roots))}"


def target_rule(c: Comparison) -> str:
    if c.explicit_target:
        return "--target"
    headline = c.summaries[0].headline if c.summaries else Headline()
    words = headline.metric.replace("_", " ")
    if headline.higher_is_better:
        return f"{DEFAULT_TARGET_FRACTION:g} x the best {words} any completed run reached on the workload"
    return (
        f"the best {words} any completed run reached on the workload / {DEFAULT_TARGET_FRACTION:g}"
    )


def target_notes(c: Comparison) -> list[str]:
    """One line per workload: its target test accuracy."""
    targets = {s.group.workload: s.target for s in c.summaries}
    return [
        f"{workload}: {'none, no run completed' if t is None else f'{100 * t:.2f}%'}"
        for workload, t in targets.items()
    ]


def not_compared(against: BaselineComparison) -> list[str]:
    """What the baseline table leaves out, and why: one line each."""
    if not against.contrasts and not against.unmatched:
        return [f"baseline {against.method}: no other group to test against it"]
    return [f"{w}: no {against.method} group, not tested" for w in against.unmatched]


STATISTICS = f"""\
The *95% CI* columns are Student-t intervals for the mean over seeds, mean ± t(0.975, n - 1) ·
s / √n: none for a group with one seed (*1 seed*), and for time to target only when every
attempt reached the target (*N missed* otherwise: a miss has no time, and leaving it out would
flatter the group). A t-interval does not know that accuracy stops at 100% or time at 0: with
few seeds and a wide spread it can run past either, which is a sign to add seeds.

Every other group of a workload is compared with that workload's baseline group on final and
best test accuracy and on time to target: the difference of the means (group - baseline); the
two-sided p-value of Welch's t-test (unequal variances, Welch-Satterthwaite degrees of
freedom), marked \\* below α; Hedges' g, the difference over the pooled standard deviation
times 1 - 3 / (4(n₁ + n₂) - 9). A test needs 2 or more seeds a side, some spread, and for time
to target no misses. p-values are not corrected for the number of comparisons.

*Seeds needed* is the smallest number of seeds per group at which Welch's test at level α
would detect the observed difference with 80% power, if the observed means and standard
deviations were the true ones (a noncentral-t power calculation). Where it is more than a
group has, rerun with that many seeds before calling the difference a finding; estimated from
a few seeds, it is a guide, not a promise. >{MAX_SEEDS}: not resolvable by rerunning (a zero
difference never is).
"""


def _why(run: Run) -> str:
    if run.status == FAILED:
        return "failed/unfinished (no results.json)"
    if run.status == DIVERGED:
        where = run.result("diagnosis") or {}
        step, epoch = where.get("step"), where.get("epoch")
        at = "" if step is None else f" at step {step}"
        return f"diverged{at}" + ("" if epoch is None else f" (epoch {epoch + 1})")
    if run.status == MALFORMED:
        return f"malformed results.json ({malformed(run.results)})"
    if run.status == INTERRUPTED:
        return f"interrupted after {run.result('epochs')} of {run.result('planned_epochs')} epochs"
    if run.status == PRUNED:
        return f"pruned by the search after {run.result('epochs')} of {run.result('planned_epochs')} epochs"
    return run.status


def left_out(summaries: list[Summary]) -> list[tuple[str, Path]]:
    """Every run the means leave out: (who and why, where); a diverged run is also a target miss."""
    return [
        (f"{s.group.method}, seed {run.seed}: {_why(run)}", run.path)
        for s in summaries
        for run in s.group.runs
        if run.status != COMPLETED
    ]


def _times_table(times: dict[str, dict[str, float]]) -> str:
    workloads = list(times)
    methods = list(dict.fromkeys(m for per in times.values() for m in per))
    lines = ["| method | " + " | ".join(workloads) + " |", "|:--|" + "--:|" * len(workloads)]
    for m in methods:
        cells = [times[w].get(m, math.inf) for w in workloads]
        lines.append(
            f"| {m} | "
            + " | ".join(f"{t:.2f}" if math.isfinite(t) else "miss" for t in cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def report_markdown(c: Comparison) -> str:
    """report.md: the table, the targets, the runs left out, the figures (relative links)."""
    completed = sum(len(s.group.completed) for s in c.summaries)
    where = ", ".join(f"`{r}`" for r in c.roots)
    swept = ", ".join(short_key(k) for k in c.shown) or "nothing (one group)"
    parts = [
        "# optbench report\n",
        f"{len(c.runs)} runs under {where}, {completed} completed, in {len(c.summaries)} groups "
        f"that differ in: {swept}.\n",
        "Each row: mean ± sample std over the completed seeds of a group, and a 95% t-interval "
        "for the mean (see below); failed, unfinished, diverged, interrupted and pruned runs are "
        "counted "
        "in *runs ok* and *not in means*, never averaged in. Time to target: the first evaluated epoch whose test accuracy reaches the "
        "target, at its cumulative training time (evaluation excluded), over the runs that "
        "reached it; *reached target* counts completed and diverged runs, a diverged run being "
        "a miss. Columns without a value in any row (peak memory on CPU) are left out; "
        "report.csv has them all.\n",
        f"Target test accuracy per workload ({target_rule(c)}):\n",
        *(f"- {line}" for line in target_notes(c)),
        "",
        markdown_table(c.summaries, c.shown),
        f"## Against the baseline: {c.against.method}\n",
        f"Significance level α = {c.against.alpha:g} (`--alpha`), baseline chosen with "
        "`--baseline` (default: the first group).\n",
    ]
    if c.against.contrasts:
        parts.append(markdown_contrast_table(c.against))
    parts += [*(f"- {line}" for line in not_compared(c.against)), "", STATISTICS]
    if missing := left_out(c.summaries):
        parts += [
            "## Runs not in the means\n",
            *(f"- {why}: `{path}`" for why, path in missing),
            "",
        ]
    figures = plots(c.summaries[0].headline if c.summaries else Headline()).items()
    parts += ["## Figures\n", *(f"![{title}]({name})\n" for name, title in figures)]
    parts.append("## Performance profile\n")
    if c.times is None:
        parts.append(
            f"Performance profiles compare methods across workloads; these runs have {len(c.workloads)}.\n"
        )
    else:
        parts += [
            "Median time to target over seeds (s), a miss counting as infinite:\n",
            _times_table(c.times),
            f"![Performance profiles]({PROFILE_PLOT})\n",
        ]
    parts.append(
        f"Every run's curves, and an HParams view of the sweep: `{tensorboard_command(c)}`\n"
    )
    return "\n".join(parts)
