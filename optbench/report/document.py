"""The words around the table: targets, the runs left out of the means, and report.md."""

from __future__ import annotations

import os
from pathlib import Path

from optbench.report.baselines import BaselineComparison
from optbench.report.comparison import Comparison
from optbench.report.groups import short_key
from optbench.report.headline import Headline
from optbench.report.profiles import TAU_MAX, Scoring
from optbench.report.runs import COMPLETED, DIVERGED, FAILED, INTERRUPTED, MALFORMED, PRUNED, Run
from optbench.report.seed_statistics import MAX_SEEDS
from optbench.report.sensitivity import Sensitivity
from optbench.report.summary import Summary, by_headline
from optbench.report.tables import (
    cells_to_markdown,
    markdown_contrast_table,
    markdown_table,
    score_cells,
    sensitivity_cells,
    sensitivity_title,
)
from optbench.report.targets import DEFAULT_TARGET_FRACTION


def plots(headlines: list[Headline]) -> dict[str, str]:
    """The report's figures: file name -> title; the main metric's curves named after it, one
    figure per metric when groups are ranked by several (two tasks)."""
    curves = {
        f"{h.metric}.png": f"{h.metric.replace('_', ' ').capitalize()} per epoch" for h in headlines
    }
    return curves | {
        "train_loss.png": "Training loss per epoch",
        "lr.png": "Learning rate per step",
        FINAL_PLOT: final_label(headlines).capitalize(),
    }


def final_label(headlines: list[Headline]) -> str:
    """`final val acc %`; `final value of the main metric` for groups ranked by several."""
    labels = list(dict.fromkeys(h.label("final") for h in headlines))
    return labels[0] if len(labels) == 1 else "final value of the main metric"


def headlines(c: Comparison) -> list[Headline]:
    """The metrics the groups are ranked by, in order; one (test acc) for no group."""
    return list(by_headline(c.summaries)) or [Headline()]


def section_title(headline: Headline, members: list[Summary]) -> str:
    """What one of several tables holds: `val loss (markov/gpt): 6 groups`."""
    workloads = ", ".join(dict.fromkeys(s.group.workload for s in members))
    groups = "1 group" if len(members) == 1 else f"{len(members)} groups"
    return f"{headline.metric.replace('_', ' ')} ({workloads}): {groups}"


FINAL_PLOT = "final.png"
PROFILE_PLOT = "profile.png"


def tensorboard_command(c: Comparison) -> str:
    """TensorBoard over every run compared: its HParams tab is the sweep's parallel-coordinates view."""
    return f"tensorboard --logdir {Path(os.path.commonpath(c.roots))}"


def target_rule(c: Comparison) -> str:
    if c.explicit_target:
        return "--target"
    return "; ".join(_default_rule(h) for h in headlines(c))


def _default_rule(headline: Headline) -> str:
    words = headline.metric.replace("_", " ")
    if headline.higher_is_better:
        return f"{DEFAULT_TARGET_FRACTION:g} x the best {words} any completed run reached on the workload"
    return (
        f"the best {words} any completed run reached on the workload / {DEFAULT_TARGET_FRACTION:g}"
    )


def target_notes(c: Comparison) -> list[str]:
    """One line per workload: its target value of the main metric."""
    targets = {s.group.workload: (s.target, s.headline) for s in c.summaries}
    return [
        f"{workload}: {'none, no run completed' if t is None else show_target(t, headline)}"
        for workload, (t, headline) in targets.items()
    ]


def show_target(target: float, headline: Headline) -> str:
    spec, scale = headline.shown
    return f"{headline.metric} {format(target * scale, spec)}" + ("%" if headline.percent else "")


def target_heading(c: Comparison) -> str:
    """`target val acc`: what the targets are values of (test acc for older results)."""
    metrics = dict.fromkeys(s.headline.metric.replace("_", " ") for s in c.summaries)
    return f"target {' / '.join(metrics) or 'value'}"


def schema_note(c: Comparison) -> list[str]:
    """One line when some results predate the validation split, else none."""
    n = c.chosen_on_test
    if not n:
        return []
    runs = "1 run predates" if n == 1 else f"{n} runs predate"
    return [
        f"note: {runs} the validation split: their best/targets were chosen on test "
        "(results.json schema 1)"
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

Every other group of a workload is compared with that workload's baseline group on the final
and best value of the main metric and on time to target: the difference of the means (group - baseline); the
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
    if run.status == FAILED and run.job_failed:
        return f"failed ({run.result('error') or 'the job crashed'})"
    if run.status == FAILED:
        return "failed/unfinished (no results.json)"
    if run.status == DIVERGED:
        where = run.result("diagnosis") or {}
        step, epoch = where.get("step"), where.get("epoch")
        at = "" if step is None else f" at step {step}"
        return f"diverged{at}" + ("" if epoch is None else f" (epoch {epoch + 1})")
    if run.status == MALFORMED:
        return f"malformed {run.problem}"
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


SCORING = f"""\
Each method's time to target on a workload is the median over its seeds, a seed that missed
(or diverged) counting as infinite. *AlgoPerf score*: the performance profile ρ(τ), the
fraction of workloads on which the method reached the target within τ times the fastest
method's time, integrated over τ from 1 to {TAU_MAX:g} and divided by {TAU_MAX - 1:g} (AlgoPerf's
rules v0.6): 1 is fastest on every workload, 0 never within {TAU_MAX:g}x of the fastest; a miss
never counts. With one workload it is still defined: (τ_max - r) / (τ_max - 1) for a method r
times slower than the fastest. *Speedup*: the geometric mean over workloads of the baseline's
time over the method's, a miss (the baseline's too) counting as the workload's budget, the
longest planned training of any of its runs (in seconds: its planned steps at the run's own
seconds per step), never less than any method's time there. `--time steps` measures in
optimizer steps, which do not depend on the machine.
"""


def scoring_markdown(scoring: Scoring, profiled: bool, workloads: int) -> list[str]:
    parts = [
        f"Time to target in {scoring.unit} (`--time`), speedups over {scoring.baseline} "
        "(`--baseline`):\n",
        cells_to_markdown(*score_cells(scoring)),
        SCORING,
    ]
    if profiled:
        parts.append(f"![Performance profiles]({PROFILE_PLOT})\n")
    else:
        parts.append(
            f"Performance profiles compare methods across workloads; these runs have {workloads}.\n"
        )
    return parts


SENSITIVITY = """\
For each numeric setting swept over 3 or more values, the final value of the main metric
against it, one curve per setting of the other (non-numeric) swept keys: the mean over the
completed seeds, and a band for its 95% t-interval (none where one seed completed). Diverged
seeds are left out of the mean and marked ✕ at the foot of the plot; a value where no seed
completed has no mean. The *good region* is the contiguous run of values around the best
whose mean is within the tolerance (`--tolerance`) of the best, like the default target; its
width is in decades on a log axis (LRs, weight decays and keys spanning 2 decades). A narrow
region means the method needs its LR (or other setting) tuned closely; read it against the
grid's spacing: a region one grid point wide has a width of 0, and the true one may be wider
by up to a step either side.
"""


def sensitivity_markdown(sensitivities: list[Sensitivity]) -> list[str]:
    if not sensitivities:
        return ["No numeric setting was swept over 3 or more values within a method.\n"]
    parts = [SENSITIVITY]
    for s in sensitivities:
        parts += [
            f"### {s.title}\n",
            sensitivity_title(s) + ".\n",
            cells_to_markdown(*sensitivity_cells(s)),
            f"![Sensitivity to {s.title}]({s.figure})\n",
        ]
    return parts


def main_tables(c: Comparison) -> list[str]:
    """The groups' table; one per metric, each under its title, for groups ranked by several."""
    sections = by_headline(c.summaries)
    if len(sections) <= 1:
        return [markdown_table(c.summaries, c.shown)]
    return [
        part
        for headline, members in sections.items()
        for part in (f"**{section_title(headline, members)}**\n", markdown_table(members, c.shown))
    ]


def report_markdown(c: Comparison) -> str:
    """report.md: the table, the targets, the runs left out, the figures (relative links)."""
    completed = sum(len(s.group.completed) for s in c.summaries)
    where = ", ".join(f"`{r}`" for r in c.roots)
    swept = ", ".join(short_key(k) for k in c.shown) or "nothing (one group)"
    metric = target_heading(c).removeprefix("target ")
    parts = [
        "# optbench report\n",
        f"{len(c.runs)} runs under {where}, {completed} completed, in {len(c.summaries)} groups "
        f"that differ in: {swept}.\n",
        *(f"*{line}*\n" for line in schema_note(c)),
        "Each row: mean ± sample std over the completed seeds of a group, and a 95% t-interval "
        "for the mean (see below); failed, unfinished, diverged, interrupted and pruned runs are "
        "counted in *runs ok* and *not in means*, never averaged in. Time to target: the first "
        f"evaluation (at an epoch's end or, with step-level evaluation, within one) whose {metric} "
        "reaches the target, at its optimizer step, training examples seen and cumulative "
        "training time (evaluation excluded), over the runs that reached it; *reached target* "
        "counts completed and diverged runs, a diverged run being a miss. Columns without a "
        "value in any row (peak memory on CPU) are left out; report.csv has them all.\n",
        f"{target_heading(c).capitalize()} per workload ({target_rule(c)}):\n",
        *(f"- {line}" for line in target_notes(c)),
        "",
        *main_tables(c),
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
    figures = plots(headlines(c)).items()
    parts += ["## Figures\n", *(f"![{title}]({name})\n" for name, title in figures)]
    parts.append("## Scores: time to target across methods\n")
    if c.scoring is None:
        parts.append("No workload has a target (no run completed): no times to score.\n")
    else:
        parts += scoring_markdown(c.scoring, c.profiled, len(c.workloads))
    parts.append("## Hyperparameter sensitivity\n")
    parts += sensitivity_markdown(c.sensitivities)
    parts.append(
        f"Every run's curves, and an HParams view of the sweep: `{tensorboard_command(c)}`\n"
    )
    return "\n".join(parts)
