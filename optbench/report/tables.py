"""The comparison as tables: rich for the terminal, Markdown for report.md, CSV for analysis."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table

from optbench.report.groups import Stat, short_key, show_value
from optbench.report.runs import DIVERGED, FAILED, INTERRUPTED, MALFORMED, Run
from optbench.report.summary import RESULT_METRICS, Summary
from optbench.report.targets import time_to_target

STAT_COLUMNS = (*RESULT_METRICS, "time_to_target_s", "epochs_to_target")
RUN_FIELDS = (
    "final_test_acc", "best_test_acc", "wall_time_s", "train_time_s", "images_per_s", "peak_memory_mb",
)  # fmt: skip


def plus_minus(s: Stat, spec: str, scale: float = 1.0) -> str:
    if s.mean is None:
        return "-"
    mean = format(s.mean * scale, spec)
    return mean if s.std is None else f"{mean}±{format(s.std * scale, spec)}"


@dataclass(frozen=True)
class Column:
    header: str  # a line break where the terminal table may wrap it
    cell: Callable[[Summary], str]
    justify: str = "right"


def columns(shown: list[str]) -> list[Column]:
    """The table's columns: the swept settings, then runs, accuracy, speed and cost."""

    def stat_column(header: str, key: str, spec: str, scale: float = 1.0) -> Column:
        return Column(header, lambda s: plus_minus(s.stats[key], spec, scale))

    def setting(key: str) -> Column:
        return Column(short_key(key), lambda s: show_value(s.group.values[key]), "left")

    return [
        *(setting(k) for k in shown),
        Column("runs\nok", lambda s: f"{len(s.group.completed)}/{len(s.group.runs)}"),
        Column("seeds", lambda s: str(len({r.seed for r in s.group.completed}))),
        stat_column("final test\nacc %", "final_test_acc", ".2f", 100),
        stat_column("best test\nacc %", "best_test_acc", ".2f", 100),
        Column("reached\ntarget", lambda s: f"{s.reached}/{s.attempts}"),
        stat_column("train s\nto target", "time_to_target_s", ".2f"),
        stat_column("epochs\nto target", "epochs_to_target", ".1f"),
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
    """Columns and rows, leaving out columns with no value in any row (peak MB on CPU)."""
    cols = columns(shown)
    rows = [[c.cell(s) for c in cols] for s in summaries]
    keep = [
        i for i in range(len(cols)) if i < len(shown) or any(r[i] not in ("-", "") for r in rows)
    ]
    return [cols[i] for i in keep], [[r[i] for i in keep] for r in rows]


def rich_table(summaries: list[Summary], shown: list[str], title: str) -> Table:
    cols, rows = table_cells(summaries, shown)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for i, col in enumerate(cols):
        # Squeezed, the table may wrap a header between words, never cut a word or a number.
        widest = max(len(word) for word in [*col.header.split(), *(row[i] for row in rows)])
        table.add_column(col.header, justify=col.justify, min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(summaries: list[Summary], shown: list[str]) -> str:
    cols, rows = table_cells(summaries, shown)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [
        line([c.header.replace("\n", " ") for c in cols]),
        line([":--" if c.justify == "left" else "--:" for c in cols]),
        *(line(row) for row in rows),
    ]
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def groups_csv(summaries: list[Summary], swept: list[str]) -> str:
    """One row per group; statistics as <metric>_mean, _std (sample, n - 1) and _n."""
    rows = []
    for s in summaries:
        g = s.group
        counts = g.status_counts()
        row: dict[str, Any] = {"workload": g.workload, "method": g.method}
        row |= {k: g.values[k] for k in swept}
        row |= {
            "runs": len(g.runs),
            "completed": len(g.completed),
            "seeds": len({r.seed for r in g.completed}),
            "failed_unfinished": counts.get(FAILED, 0),
            "diverged": counts.get(DIVERGED, 0),
            "interrupted": counts.get(INTERRUPTED, 0),
            "malformed": counts.get(MALFORMED, 0),
            "target": s.target,
            "reached_target": s.reached,
            "target_attempts": s.attempts,
        }
        for key in STAT_COLUMNS:
            st = s.stats[key]
            row |= {f"{key}_mean": st.mean, f"{key}_std": st.std, f"{key}_n": st.n}
        rows.append(row)
    return _csv_text(rows)


def diverged_step(run: Run) -> int | None:
    return (run.result("diagnosis") or {}).get("step") if run.status == DIVERGED else None


def runs_csv(summaries: list[Summary], swept: list[str]) -> str:
    """One row per run, failed and unfinished ones included."""
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
            row |= {"seed": run.seed} | {k: run.result(k) for k in RUN_FIELDS}
            row |= {
                "target": s.target,
                "time_to_target_s": hit.train_time_s if hit else None,
                "epochs_to_target": hit.epoch if hit else None,
                "diverged_step": diverged_step(run),
            }
            rows.append(row)
    return _csv_text(rows)
