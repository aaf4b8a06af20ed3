"""`optbench report DIR [DIR ...]`: the comparison on the terminal and as files."""

from __future__ import annotations

import argparse
import math
import shlex
from datetime import datetime
from pathlib import Path

from rich.measure import Measurement
from rich.table import Table

from optbench.errors import ArgumentParser
from optbench.report.baselines import DEFAULT_ALPHA
from optbench.report.comparison import Comparison, compare
from optbench.report.document import (
    FINAL_PLOT,
    PROFILE_PLOT,
    final_label,
    headlines,
    left_out,
    not_compared,
    report_markdown,
    schema_note,
    section_title,
    target_heading,
    target_notes,
    target_rule,
    tensorboard_command,
)
from optbench.report.document import plots as figures
from optbench.report.html import report_html
from optbench.report.profiles import SECONDS, TIME_UNITS
from optbench.report.sensitivity import DEFAULT_TOLERANCE
from optbench.report.summary import Summary, by_headline
from optbench.report.tables import (
    cells_to_rich,
    groups_csv,
    rich_contrast_table,
    rich_table,
    runs_csv,
    score_cells,
    score_title,
    scores_csv,
    sensitivity_cells,
    sensitivity_csv,
    sensitivity_title,
)
from optbench.report.targets import DEFAULT_TARGET_FRACTION
from optbench.studies.search_outputs import report_section
from optbench.tracking.console import console, print_plain
from optbench.tracking.files import atomic_write_text

DESCRIPTION = """\
Compare the runs under one or more run or sweep directories: one group per setting of the
keys the runs differ in (the seed and paths aside), mean ± std and a 95% t-interval over seeds,
failed runs listed; each group against its workload's baseline group: Welch's t-test, Hedges' g
and the seeds per group that would resolve the difference. Writes report.md, report.html (the
same in one file, figures embedded, tables sortable), report.csv (one row per group), runs.csv
(one row per run) and PNG figures. Scores methods by time to target:
AlgoPerf's integrated performance profile and the geometric-mean speedup over the baseline
(scores.csv; with two or more workloads, dataset + model, the profiles' plot too). For each
numeric setting swept over 3 or more values (an LR grid), the final metric against it with
its good region (sensitivity.csv, sensitivity_<key>.png)."""


def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got '{text}'") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _open_unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got '{text}'") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="optbench report", description=DESCRIPTION)
    p.add_argument(
        "dirs",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="run or sweep directories, searched recursively",
    )
    p.add_argument(
        "--target",
        type=_target,
        metavar="VALUE",
        help="value of the runs' main metric to time (a validation accuracy in (0, 1], a "
        "validation loss; test for results older than the validation split), "
        f"for every workload (default: {DEFAULT_TARGET_FRACTION:g} x the best value any completed "
        "run reached on that workload; the best / that, for a loss)",
    )
    p.add_argument(
        "--baseline",
        metavar="GROUP",
        help="the group every other group of its workload is tested against, as the report names "
        "it, e.g. 'optimizer=sgd,scheduler=cosine', and whose method the speedups are over "
        "(default: the first group)",
    )
    p.add_argument(
        "--time",
        choices=TIME_UNITS,
        default=SECONDS,
        help="unit of the times to target that scores and speedups use: seconds of training "
        "(default) or optimizer steps (the same on any machine)",
    )
    p.add_argument(
        "--tolerance",
        type=_open_unit_interval,
        default=DEFAULT_TOLERANCE,
        metavar="FRACTION",
        help="sensitivity: the good region holds the values whose mean is within this fraction "
        f"of the best (default {DEFAULT_TOLERANCE:g}: an accuracy >= {1 - DEFAULT_TOLERANCE:g} x "
        f"the best, a loss <= the best / {1 - DEFAULT_TOLERANCE:g})",
    )
    p.add_argument(
        "--alpha",
        type=_open_unit_interval,
        default=DEFAULT_ALPHA,
        metavar="LEVEL",
        help=f"significance level of the tests and of the seeds-needed estimate (default: "
        f"{DEFAULT_ALPHA:g}, modded-nanogpt's; a report makes many comparisons)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FOLDER",
        help="folder for the report files (default: DIR/report for the first DIR)",
    )
    return p


def print_table(table: Table) -> None:
    """Print `table` without cutting a cell: a narrow terminal wraps headers, then the lines;
    a file or a pipe, which has no width of its own, gets the table at its natural width."""
    measure = Measurement.get(console, console.options.update_width(10_000), table)
    width = console.width
    console.width = max(width, measure.minimum if console.is_terminal else measure.maximum)
    try:
        console.print(table)
    finally:
        console.width = width


def report_title(c: Comparison) -> str:
    return f"optbench report: {len(c.runs)} runs, {len(c.summaries)} groups"


def print_comparison(c: Comparison) -> None:
    title = report_title(c)
    sections = by_headline(c.summaries)
    if len(sections) == 1:
        print_table(rich_table(c.summaries, c.shown, title))
    else:  # groups of several tasks: each table in its own metric
        for headline, members in sections.items():
            print_table(
                rich_table(members, c.shown, f"{title}; {section_title(headline, members)}")
            )
    # Paths hold brackets and commas: no markup, no highlighting, no hard line breaks.
    plain = {"markup": False, "highlight": False, "soft_wrap": True}
    for line in schema_note(c):
        console.print(line, **plain)
    if c.against.contrasts:
        print_table(rich_contrast_table(c.against))
    for line in not_compared(c.against):
        console.print(line, **plain)
    console.print(f"{target_heading(c)} ({target_rule(c)}):", *target_notes(c), sep="\n  ", **plain)
    if missing := left_out(c.summaries):
        lines = [f"{why}: {path}" for why, path in missing]
        console.print("not in the means:", *lines, sep="\n  ", **plain)
    if c.scoring is not None:
        print_table(cells_to_rich(*score_cells(c.scoring), score_title(c.scoring)))
        if c.scoring.speedups is None:
            console.print(
                f"speedups: none, the baseline {c.scoring.baseline} made no attempt", **plain
            )
    if not c.profiled:
        console.print(
            "performance profiles: skipped, they need at least 2 workloads "
            f"(found {len(c.workloads)})",
            **plain,
        )
    for s in c.sensitivities:
        print_table(cells_to_rich(*sensitivity_cells(s), sensitivity_title(s)))
    console.print(f"HParams view of every run: {tensorboard_command(c)}", **plain)


def write_comparison(c: Comparison, out: Path, command: str) -> list[str]:
    """Write the report files into `out`; returns their names. `command`: the command line
    that asked for them, which report.html names."""
    # matplotlib and TensorBoard load only once the runs are read: mistakes stay fast.
    from optbench.report import plots

    # Composed before any file is written: a sweep's summary that cannot be shown is a line
    # in it, and nothing here may leave a half-written report behind.
    markdown = report_markdown(c) + report_section(c.roots, out)
    atomic_write_text(out / "report.csv", groups_csv(c.summaries, c.swept, c.against))
    atomic_write_text(out / "runs.csv", runs_csv(c.summaries, c.swept))
    # Each main metric's curves, over the groups ranked by it.
    metrics: dict[str, list[Summary]] = {}
    for headline, members in by_headline(c.summaries).items():
        metrics.setdefault(headline.metric, []).extend(members)
    for metric, members in metrics.items():
        headline = members[0].headline
        label = metric.replace("_", " ") + (" (%)" if headline.percent else "")
        plots.plot_epoch_curves(members, metric, label, out / f"{metric}.png", headline.shown[1])
    plots.plot_epoch_curves(c.summaries, "train_loss", "training loss", out / "train_loss.png")
    plots.plot_lr(c.summaries, out / "lr.png")
    plots.plot_final(c.summaries, out / FINAL_PLOT, final_label(headlines(c)))
    written = ["report.md", "report.html", "report.csv", "runs.csv", *figures(headlines(c))]
    if c.scoring is not None:
        atomic_write_text(out / "scores.csv", scores_csv(c.scoring))
        written.append("scores.csv")
    if c.profiled:
        plots.plot_profiles(c.scoring.times, c.summaries, out / PROFILE_PLOT, c.scoring.unit)
        written.append(PROFILE_PLOT)
    if c.sensitivities:
        atomic_write_text(out / "sensitivity.csv", sensitivity_csv(c.sensitivities))
        written.append("sensitivity.csv")
    for s in c.sensitivities:
        plots.plot_sensitivity(s, out / s.figure)
        written.append(s.figure)
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = report_html(markdown, out, report_title(c), when, command)  # reads the figures
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", page)
    return written


def run_report(args: list[str]) -> int:
    try:
        opts = parser().parse_args(args)
    except SystemExit as exit_:  # --help has been printed
        return int(exit_.code or 0)
    comparison = compare(
        opts.dirs, opts.target, opts.baseline, opts.alpha, opts.tolerance, opts.time
    )
    print_comparison(comparison)
    out = opts.out or opts.dirs[0] / "report"
    written = write_comparison(comparison, out, shlex.join(["optbench", "report", *args]))
    print_plain(f"wrote {out}/: {', '.join(written)}")
    return 0
