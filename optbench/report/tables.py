"""The comparison as tables: rich for the terminal, Markdown for report.md, CSV for analysis."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table

from optbench.report.baselines import (
    TIME_TO_TARGET,
    BaselineComparison,
    Contrast,
    compared,
    interval,
    seed_values,
)
from optbench.report.groups import Stat, short_key, show_value
from optbench.report.headline import Headline
from optbench.report.profiles import SECONDS, TAU_MAX, Scoring
from optbench.report.runs import DIVERGED, FAILED, INTERRUPTED, MALFORMED, PRUNED, Run
from optbench.report.seed_statistics import MAX_SEEDS
from optbench.report.sensitivity import Curve, Point, Sensitivity
from optbench.report.summary import TARGET_STATS, Summary, result_metrics
from optbench.report.targets import time_to_target

RUN_COSTS = ("wall_time_s", "train_time_s", "images_per_s", "peak_memory_mb")


def stat_columns(headline: Headline) -> tuple[str, ...]:
    return (*result_metrics(headline), *TARGET_STATS)


def shown_as(metric: str, headline: Headline) -> tuple[str, str, float]:
    """How a compared metric is shown: label, format, scale (accuracies in %)."""
    if metric == TIME_TO_TARGET:
        return "train s to target", ".2f", 1.0
    return headline.label(metric.partition("_")[0]), *headline.shown


def plus_minus(s: Stat, spec: str, scale: float = 1.0) -> str:
    if s.mean is None:
        return "-"
    mean = format(s.mean * scale, spec)
    return mean if s.std is None else f"{mean}±{format(s.std * scale, spec)}"


def interval_cell(s: Summary, metric: str) -> str:
    """`[low, high]`; `1 seed` where there is no spread to build one from; `N missed` for a
    time to target some seeds never reached (see baselines.seed_values)."""
    _, spec, scale = shown_as(metric, s.headline)
    values = seed_values(s, metric)
    if values is None:
        return f"{s.attempts - s.reached} missed" if s.target is not None else "-"
    ci = interval(s, metric)
    if ci is None:
        return "1 seed" if len(values) == 1 else "-"
    low, high = (format(v * scale, spec) for v in ci)
    return f"[{low}, {high}]"


@dataclass(frozen=True)
class Column:
    header: str  # a line break where the terminal table may wrap it
    cell: Callable[[Any], str]  # of a Summary, or of a Contrast
    justify: str = "right"


def columns(shown: list[str], headline: Headline) -> list[Column]:
    """The table's columns: the swept settings, then runs, the main metric, speed and cost."""
    spec, scale = headline.shown
    words = headline.metric.replace("_", " ") + (" %" if headline.percent else "")

    def stat_column(header: str, key: str, spec: str, scale: float = 1.0) -> Column:
        return Column(header, lambda s: plus_minus(s.stats[key], spec, scale))

    def ci_column(header: str, metric: str) -> Column:
        return Column(f"{header}\n95% CI", lambda s: interval_cell(s, metric))

    def setting(key: str) -> Column:
        return Column(short_key(key), lambda s: show_value(s.group.values[key]), "left")

    return [
        *(setting(k) for k in shown),
        Column("runs\nok", lambda s: f"{len(s.group.completed)}/{len(s.group.runs)}"),
        Column("seeds", lambda s: str(len({r.seed for r in s.group.completed}))),
        stat_column(f"final\n{words}", headline.final, spec, scale),
        ci_column("final", headline.final),
        stat_column(f"best\n{words}", headline.best, spec, scale),
        ci_column("best", headline.best),
        Column("reached\ntarget", lambda s: f"{s.reached}/{s.attempts}"),
        stat_column("train s\nto target", "time_to_target_s", ".2f"),
        ci_column("to target", "time_to_target_s"),
        stat_column("epochs\nto target", "epochs_to_target", ".1f"),
        stat_column("steps\nto target", "steps_to_target", ".0f"),
        stat_column("examples\nto target", "examples_to_target", ".0f"),
        stat_column("wall s", "wall_time_s", ".1f"),
        stat_column("img/s", "images_per_s", ".0f"),
        stat_column("peak\nMB", "peak_memory_mb", ".0f"),
        Column(
            "not in\nmeans",
            lambda s: ", ".join(f"{n} {status}" for status, n in s.group.status_counts().items()),
            "left",
        ),
    ]


def table_cells(summaries: list[Summary], shown: list[str]) -> tuple[list[Column], list[list[str]]]:
    """Columns and rows, leaving out columns with no value in any row (peak MB on CPU). The
    summaries share one metric (summary.by_headline)."""
    cols = columns(shown, summaries[0].headline if summaries else Headline())
    rows = [[c.cell(s) for c in cols] for s in summaries]
    keep = [
        i for i in range(len(cols)) if i < len(shown) or any(r[i] not in ("-", "") for r in rows)
    ]
    return [cols[i] for i in keep], [[r[i] for i in keep] for r in rows]


def contrast_columns(against: BaselineComparison) -> list[Column]:
    """The baseline table's columns: which group and metric, then the difference and its test."""

    def difference(c: Contrast) -> str:
        _, spec, scale = shown_as(c.metric, c.group.headline)
        return "-" if c.difference is None else format(c.difference * scale, "+" + spec)

    def p(c: Contrast) -> str:
        if c.test is None:
            return "-"
        return f"{c.test.p:.2g}" + (" *" if against.significant(c) else "")

    def seeds(c: Contrast) -> str:
        return "-" if c.test is None else str(c.seeds_needed or f">{MAX_SEEDS}")

    cols = [
        Column("group", lambda c: c.group.group.method, "left"),
        Column("metric", lambda c: shown_as(c.metric, c.group.headline)[0], "left"),
        Column("difference\nvs baseline", difference),
        Column("p\n(Welch)", p),
        Column("Hedges'\ng", lambda c: "-" if c.hedges_g is None else f"{c.hedges_g:+.2f}"),
        Column("seeds\nneeded", seeds),
        Column("note", lambda c: c.note, "left"),
    ]
    if len({c.group.group.workload for c in against.contrasts}) > 1:
        cols.insert(0, Column("workload", lambda c: c.group.group.workload, "left"))
    return cols


def contrast_cells(against: BaselineComparison) -> tuple[list[Column], list[list[str]]]:
    cols = contrast_columns(against)
    return cols, [[col.cell(c) for col in cols] for c in against.contrasts]


def contrast_title(against: BaselineComparison) -> str:
    return (
        f"against the baseline {against.method}: Welch's t-test, * p < {against.alpha:g}; "
        "seeds needed per group for 80% power"
    )


def rich_table(summaries: list[Summary], shown: list[str], title: str) -> Table:
    return cells_to_rich(*table_cells(summaries, shown), title)


def rich_contrast_table(against: BaselineComparison) -> Table:
    return cells_to_rich(*contrast_cells(against), contrast_title(against))


def cells_to_rich(cols: list[Column], rows: list[list[str]], title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for i, col in enumerate(cols):
        # Squeezed, the table may wrap a header between words, never cut a word or a number.
        widest = max(len(word) for word in [*col.header.split(), *(row[i] for row in rows)])
        table.add_column(col.header, justify=col.justify, min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(summaries: list[Summary], shown: list[str]) -> str:
    return cells_to_markdown(*table_cells(summaries, shown))


def markdown_contrast_table(against: BaselineComparison) -> str:
    return cells_to_markdown(*contrast_cells(against))


def cells_to_markdown(cols: list[Column], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [
        line([c.header.replace("\n", " ") for c in cols]),
        line([":--" if c.justify == "left" else "--:" for c in cols]),
        *(line(row) for row in rows),
    ]
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV of `rows`, every key any row has a column (groups ranked by different metrics, older
    and newer results, have different ones), empty where a row lacks it."""
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def groups_csv(summaries: list[Summary], swept: list[str], against: BaselineComparison) -> str:
    """One row per group; `metric`, the main metric it is ranked by (a report over two tasks
    has a loss for one, an accuracy for the other); statistics as <key>_mean, _std (sample,
    n - 1) and _n, the main metric's as final_<metric>_mean and best_<metric>_mean; for the
    compared metrics also _ci95_low and _ci95_high, and against the workload's baseline
    _difference, _p (Welch), _significant (p < alpha), _hedges_g and _seeds_needed (inf: more
    than MAX_SEEDS); empty where undefined (one seed, misses, the baseline's own row)."""
    contrasts = {
        (c.group.group.workload, c.group.group.method, c.metric): c for c in against.contrasts
    }
    baselines = {c.baseline.group.workload for c in against.contrasts}
    rows = []
    for s in summaries:
        g = s.group
        counts = g.status_counts()
        row: dict[str, Any] = {"workload": g.workload, "method": g.method}
        row |= {k: g.values[k] for k in swept}
        row |= {"metric": s.headline.metric}
        row |= {
            "runs": len(g.runs),
            "completed": len(g.completed),
            "seeds": len({r.seed for r in g.completed}),
            "failed_unfinished": counts.get(FAILED, 0),
            "diverged": counts.get(DIVERGED, 0),
            "interrupted": counts.get(INTERRUPTED, 0),
            "pruned": counts.get(PRUNED, 0),
            "malformed": counts.get(MALFORMED, 0),
            "target": s.target,
            "reached_target": s.reached,
            "target_attempts": s.attempts,
        }
        for key in stat_columns(s.headline):
            st = s.stats[key]
            row |= {f"{key}_mean": st.mean, f"{key}_std": st.std, f"{key}_n": st.n}
        for key in compared(s.headline):
            low, high = interval(s, key) or (None, None)
            row |= {f"{key}_ci95_low": low, f"{key}_ci95_high": high}
        row |= {
            "baseline": against.method if g.workload in baselines else None,
            "alpha": against.alpha,
        }
        for key in compared(s.headline):
            row |= contrast_fields(contrasts.get((g.workload, g.method, key)), key, against)
        rows.append(row)
    return _csv_text(rows)


def contrast_fields(c: Contrast | None, key: str, against: BaselineComparison) -> dict[str, Any]:
    tested = c is not None and c.test is not None
    return {
        f"{key}_difference": None if c is None else c.difference,
        f"{key}_p": c.test.p if tested else None,
        f"{key}_significant": against.significant(c) if tested else None,
        f"{key}_hedges_g": None if c is None else c.hedges_g,
        f"{key}_seeds_needed": (c.seeds_needed or math.inf) if tested else None,
    }


def diverged_step(run: Run) -> int | None:
    return (run.result("diagnosis") or {}).get("step") if run.status == DIVERGED else None


def runs_csv(summaries: list[Summary], swept: list[str]) -> str:
    """One row per run, failed and unfinished ones included; `metric`: its group's main
    metric, whose final_<metric> and best_<metric> the row holds."""
    rows = []
    for s in summaries:
        for run in s.group.runs:
            hit = time_to_target(run, s.target)
            row: dict[str, Any] = {
                "path": str(run.path),
                "status": run.status,
                "workload": s.group.workload,
                "method": s.group.method,
            }
            row |= {k: s.group.values[k] for k in swept}
            row |= {"metric": s.headline.metric}
            fields = (s.headline.final, s.headline.best, *RUN_COSTS)
            row |= {"seed": run.seed} | {k: run.result(k) for k in fields}
            row |= {
                "target": s.target,
                "time_to_target_s": hit.train_time_s if hit else None,
                "epochs_to_target": hit.epoch if hit else None,
                "steps_to_target": hit.step if hit else None,
                "examples_to_target": hit.examples if hit else None,
                "diverged_step": diverged_step(run),
            }
            rows.append(row)
    return _csv_text(rows)


def show_time(t: float, unit: str) -> str:
    if not math.isfinite(t):
        return "miss"
    return f"{t:.2f}" if unit == SECONDS else f"{t:.0f}"


def score_cells(scoring: Scoring) -> tuple[list[Column], list[list[str]]]:
    """One row per method: its score, its speedup over the baseline, how many workloads it
    reached the target on, and its median time to target on each; then the budgets."""
    times, unit = scoring.times, scoring.unit
    workloads = list(times)

    def speedup(method: str) -> str:
        return "-" if scoring.speedups is None else f"{scoring.speedups[method]:.2f}x"

    def reached(method: str) -> str:
        hits = sum(math.isfinite(per.get(method, math.inf)) for per in times.values())
        return f"{hits}/{len(workloads)}"

    def time_column(workload: str) -> Column:
        return Column(
            f"{workload}\n({unit})", lambda m: show_time(times[workload].get(m, math.inf), unit)
        )

    cols = [
        Column("method", lambda m: m, "left"),
        Column(f"AlgoPerf\nscore (τ≤{TAU_MAX:g})", lambda m: f"{scoring.scores[m]:.3f}"),
        Column(f"speedup over\n{scoring.baseline}", speedup),
        Column("targets\nreached", reached),
        *(time_column(w) for w in workloads),
    ]
    rows = [[c.cell(m) for c in cols] for m in scoring.scores]
    budget = ["budget (a miss)", "", "", ""]
    rows.append(budget + [show_time(scoring.budgets[w], unit) for w in workloads])
    return cols, rows


def score_title(scoring: Scoring) -> str:
    return (
        f"scores: time to target in {scoring.unit}; AlgoPerf's integrated performance profile "
        f"(1: fastest everywhere) and the geometric-mean speedup over {scoring.baseline}"
    )


def scores_csv(scoring: Scoring) -> str:
    """One row per method: score, speedup and its time on each workload (`time:<workload>`,
    inf for a miss), then a row `budget` holding what a miss counts as in the speedup."""
    rows = []
    for method, score in scoring.scores.items():
        row: dict[str, Any] = {
            "method": method,
            "profile_score": score,
            "geomean_speedup": None if scoring.speedups is None else scoring.speedups[method],
            "baseline": scoring.baseline,
            "time_unit": scoring.unit,
            "tau_max": TAU_MAX,
        }
        row |= {f"time:{w}": per.get(method, math.inf) for w, per in scoring.times.items()}
        rows.append(row)
    budget = dict.fromkeys(rows[0], None) | {"method": "budget", "time_unit": scoring.unit}
    rows.append(budget | {f"time:{w}": b for w, b in scoring.budgets.items()})
    return _csv_text(rows)


def show_key_value(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _at_best(c: Curve, s: Sensitivity) -> str:
    spec, scale = s.headline.shown
    if c.best is None or c.best.mean is None:
        return "-"
    mean = format(c.best.mean * scale, spec)
    ci = c.best.interval
    return (
        mean
        if ci is None
        else f"{mean} [{format(ci[0] * scale, spec)}, {format(ci[1] * scale, spec)}]"
    )


def diverged_at(c: Curve) -> str:
    """The values where seeds diverged: `10 (2/2 seeds)`."""
    cells = [f"{p.value:g} ({p.diverged}/{p.runs} seeds)" for p in c.points if p.diverged]
    return ", ".join(cells) or "-"


def sensitivity_cells(s: Sensitivity) -> tuple[list[Column], list[list[str]]]:
    """One row per curve: the best value of the key, the mean there, the good region and its
    width, where seeds diverged."""

    def region(c: Curve) -> str:
        return "-" if c.region is None else f"{c.region[0]:g} to {c.region[1]:g}"

    def width(c: Curve) -> str:
        if c.width is None:
            return "-"
        return f"{c.width:.2f}" if s.log else f"{c.width:g}"

    words = s.headline.label("final")
    cols = [
        Column("curve", lambda c: c.label, "left"),
        Column(f"best\n{s.key}", lambda c: show_key_value(c.best and c.best.value)),
        Column(f"{words}\nthere [95% CI]", lambda c: _at_best(c, s)),
        Column("seeds\nthere", lambda c: "-" if c.best is None else str(len(c.best.finals))),
        Column(f"good region\n(within {100 * s.tolerance:g}%)", region),
        Column("width\n(decades)" if s.log else "width", width),
        Column("diverged at", diverged_at, "left"),
    ]
    if any(c.best is not None and c.best.at for c in s.curves):
        cols.insert(4, Column("best there at", lambda c: c.best.at if c.best else "-", "left"))
    if len({c.workload for c in s.curves}) > 1:
        cols.insert(0, Column("workload", lambda c: c.workload, "left"))
    return cols, [[col.cell(c) for col in cols] for c in s.curves]


def sensitivity_title(s: Sensitivity) -> str:
    rule = "best / " if not s.headline.higher_is_better else ""
    within = f"{rule}{1 - s.tolerance:g}" + ("" if rule else " x best")
    others = f"; at each value, the best over {', '.join(s.others)}" if s.others else ""
    return (
        f"sensitivity to {s.key}: {s.headline.label('final')}, mean over completed seeds; good "
        f"region: contiguous values with a mean within {within}{others}"
    )


def sensitivity_csv(sensitivities: list[Sensitivity]) -> str:
    """One row per point of every curve: the key's value, the mean and 95% t-interval of the
    final main metric over completed seeds, the seeds, diverged seeds, whether it is the best
    and in the good region; the curve's region and width repeated on each of its rows."""
    rows = []
    for s in sensitivities:
        for c in s.curves:
            for p in c.points:
                rows.append(_point_row(s, c, p))
    return _csv_text(rows)


def _point_row(s: Sensitivity, c: Curve, p: Point) -> dict[str, Any]:
    low, high = p.interval or (None, None)
    inside = c.region is not None and c.region[0] <= p.value <= c.region[1]
    return {
        "key": s.key,
        "workload": c.workload,
        "curve": c.label,
        "value": p.value,
        "metric": s.headline.final,
        "mean": p.mean,
        "ci95_low": low,
        "ci95_high": high,
        "completed": len(p.finals),
        "diverged": p.diverged,
        "runs": p.runs,
        "at": p.at,
        "best": p is c.best,
        "in_good_region": inside,
        "region_low": c.region[0] if c.region else None,
        "region_high": c.region[1] if c.region else None,
        "region_width": c.width,
        "width_unit": s.width_unit,
        "tolerance": s.tolerance,
    }
