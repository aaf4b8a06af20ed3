"""Several range tests in one figure: `optbench lr-compare DIR...`, and automatically at the
end of `optbench lr-find -m ...` (a Hydra callback)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.table import Table

from optbench.errors import ArgumentParser, UserError
from optbench.lr_finder.outputs import CSV_NAME, JSON_NAME
from optbench.tracking.console import console, print_plain
from optbench.tracking.figures import new_figure, save_png
from optbench.tracking.files import atomic_write_text

PNG_NAME, TABLE_NAME = "lr_compare.png", "lr_compare.csv"


def load_tests(roots: list[Path]) -> list[tuple[dict[str, Any], list[tuple[float, float]]]]:
    """Every lr_find.json under `roots` with its (lr, smoothed loss) curve, in path order."""
    tests = []
    for root in roots:
        if not root.is_dir():
            raise UserError(f"{root} is not a directory")
        for summary_path in sorted(root.rglob(JSON_NAME)):
            summary = json.loads(summary_path.read_text())
            with open(summary_path.parent / CSV_NAME) as f:
                rows = list(csv.DictReader(f))
            tests.append((summary, [(float(r["lr"]), float(r["smoothed_loss"])) for r in rows]))
    if not tests:
        raise UserError(
            f"no {JSON_NAME} under {', '.join(map(str, roots))}; run optbench lr-find first"
        )
    return tests


def write_comparison(roots: list[Path], out_dir: Path) -> Table:
    """Overlay the curves of every test under `roots`; write the PNG and a CSV into `out_dir`."""
    tests = load_tests(roots)
    fig, ax = new_figure(8, 5)
    table = Table(title=f"LR range tests under {', '.join(map(str, roots))}", title_justify="left")
    for column in ("test", "rule", "suggested lr", "stopped"):
        table.add_column(column)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["label", "rule", "lr", "stop_reason", "diverged_at_lr"])
    for i, (summary, curve) in enumerate(tests):
        colour = f"C{i % 10}"
        lrs = [lr for lr, loss in curve if math.isfinite(loss)]
        losses = [loss for lr, loss in curve if math.isfinite(loss)]
        ax.plot(lrs, losses, color=colour, lw=1.8, label=summary["label"])
        if summary["lr"] is not None:
            ax.axvline(summary["lr"], color=colour, ls=":", lw=1.2)
            ax.plot([summary["lr"]], [_loss_at(curve, summary["lr"])], "o", color=colour)
        lr_text = "-" if summary["lr"] is None else f"{summary['lr']:.3g}"
        table.add_row(summary["label"], summary["rule"], lr_text, summary["stop_reason"])
        writer.writerow(
            [
                summary["label"],
                summary["rule"],
                summary["lr"],
                summary["stop_reason"],
                summary["diverged_at_lr"],
            ]
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.set_title("LR range tests (dots: each test's suggestion)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    save_png(fig, out_dir / PNG_NAME)
    atomic_write_text(out_dir / TABLE_NAME, rows.getvalue())
    return table


def _loss_at(curve: list[tuple[float, float]], lr: float) -> float:
    """The smoothed loss at the ladder point nearest `lr` (in log space)."""
    finite = [
        (abs(math.log(point_lr / lr)), loss) for point_lr, loss in curve if math.isfinite(loss)
    ]
    return min(finite)[1] if finite else math.nan


def run_lr_compare(args: list[str]) -> int:
    parser = ArgumentParser(
        prog="optbench lr-compare",
        description="Overlay the LR range tests found under the given folders (e.g. an lr-find -m sweep).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="folders holding lr_find.json files")
    parser.add_argument(
        "--out", type=Path, help="where to write lr_compare.png/.csv (default: the first folder)"
    )
    options = parser.parse_args(args)
    out = options.out or options.dirs[0]
    console.print(write_comparison(options.dirs, out))
    print_plain(f"wrote {out / PNG_NAME} and {out / TABLE_NAME}")
    return 0


class CompareAtSweepEnd(Callback):
    """After `optbench lr-find -m ...`, overlay the sweep's tests in <sweep dir>/lr_compare.png."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if any(sweep_dir.rglob(JSON_NAME)):
            console.print(write_comparison([sweep_dir], sweep_dir))
            print_plain(f"wrote {sweep_dir / PNG_NAME}")
