"""The terminal side of a command: one rich console for tables, log lines and the progress bar.

Log lines go through the same console as the live progress bar (`ConsoleLogHandler`), so rich
prints them above the bar instead of gluing them onto it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

# Off a terminal rich would cut tables at 80 columns; CI logs and `> file` keep whole values
# at this width instead (tables take only the width they need).
OFF_TERMINAL_WIDTH = 200


def _width() -> int | None:
    """None (rich follows the terminal, or $COLUMNS) unless no standard stream is a terminal."""
    if os.environ.get("COLUMNS", "").isdigit():
        return None
    streams = (sys.stdin, sys.stdout, sys.stderr)
    if any(stream is not None and stream.isatty() for stream in streams):
        return None
    return OFF_TERMINAL_WIDTH


console = Console(width=_width())


def shares_terminal() -> bool:
    """A worker of a process pool (the joblib launcher's parallel sweep jobs) prints to its
    parent's terminal, as the other workers do: their live bars would overwrite each other."""
    return multiprocessing.parent_process() is not None


LEVEL_STYLES = {logging.WARNING: "yellow", logging.ERROR: "bold red", logging.CRITICAL: "bold red"}


class ConsoleLogHandler(logging.Handler):
    """Log records through `console`: while a progress bar is live, each line goes above it.

    A line is never wrapped by rich, so a path in it stays one line in a file; warnings and
    errors are coloured on a terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = Text(self.format(record), style=LEVEL_STYLES.get(record.levelno, ""))
            console.print(line, soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


# Hydra's job logging format (configs/hydra/job_logging/optbench.yaml), for the commands that
# set up logging themselves.
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def log_through_console() -> None:
    """Log records to the terminal through `console` in commands Hydra does not set up (search
    and tune, whose trials train in-process with a progress bar)."""
    logging.basicConfig(format=LOG_FORMAT, handlers=[ConsoleLogHandler()])


class ProgressBar:
    """Optimizer steps done out of the run's total, with the latest loss and LR.

    Updated when the trainer flushes its logs and at each epoch's end, so it adds no
    host-device syncs; gone once the run ends; off when the output is not a terminal (CI logs)
    or is shared with other jobs (parallel sweeps).
    """

    def __init__(self, total_steps: int, enabled: bool = True):
        self.enabled = enabled and console.is_terminal and not shares_terminal()
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

    def update(
        self, completed: int, description: str, redraw: bool = False, **fields: float
    ) -> None:
        """Set the bar; `redraw` draws it now rather than at the next 10 Hz refresh."""
        status = "  ".join(f"{k} {v:.4g}" for k, v in fields.items())
        self.progress.update(
            self.task, completed=completed, description=description, status=status, refresh=redraw
        )


def summary_table(title: str, rows: dict[str, Any]) -> Table:
    """Label and value, two columns; a value too wide for the terminal is wrapped, never cut."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right", overflow="fold")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


def print_plain(line: str) -> None:
    """`line` as written: not broken at the terminal's width (a path stays whole to copy), and
    brackets in it (`sweep[adam]`) not read as rich markup."""
    console.print(Text(line), soft_wrap=True, highlight=False)


def print_path(label: str, path: Path | str) -> None:
    """`label: path` on one line of its own."""
    print_plain(f"{label}: {path}")
