"""The terminal side of a run: a rich progress bar while training, a table at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console()


class ProgressBar:
    """Optimizer steps done out of the run's total, with the latest loss, accuracy and LR.

    Updated only when the trainer flushes its logs, so it adds no host-device syncs; off
    when the output is not a terminal (CI logs, parallel sweep jobs).
    """

    def __init__(self, total_steps: int, enabled: bool = True):
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not self.enabled,
        )
        self.task = self.progress.add_task("train", total=total_steps, status="")

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, completed: int, description: str, **fields: float) -> None:
        status = "  ".join(f"{k} {v:.4g}" for k, v in fields.items())
        self.progress.update(self.task, completed=completed, description=description, status=status)


def summary_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table
