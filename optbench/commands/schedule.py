"""`optbench schedule`: see a run's LR (and momentum) schedule before a single training step.

Writes schedule.csv (per optimizer step: epoch, each group's LR, each changing momentum),
schedule.png, and prints a summary; `schedule.compare=[...]` overlays other schedulers in
the same figure, and `-m scheduler=a,b,c` overlays the sweep's schedules at its end.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from rich.measure import Measurement
from rich.table import Table

from optbench.config import group_option
from optbench.errors import UserError
from optbench.run.auto_lr import auto_keys
from optbench.run.schedule_curve import ScheduleCurve, schedule_curve
from optbench.schedules import scheduler_info
from optbench.tracking.console import console, print_plain
from optbench.tracking.figures import new_figure, save_png
from optbench.tracking.files import atomic_write_text
from optbench.train.preflight import check_train_config

CSV_NAME, PNG_NAME, OVERLAY_NAME = "schedule.csv", "schedule.png", "schedules.png"


def scheduler_config(name: str) -> DictConfig:
    """The documented defaults of scheduler `name`: its file in configs/scheduler/."""
    scheduler_info(name)
    return group_option("scheduler", name)


def with_scheduler(cfg: DictConfig, name: str) -> DictConfig:
    """`cfg` with its scheduler replaced by scheduler `name`'s documented defaults."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.scheduler = scheduler_config(name)
    return cfg


def compared_names(cfg: DictConfig) -> list[str]:
    names = cfg.schedule.compare
    if not isinstance(names, ListConfig | list):
        raise UserError(f"schedule.compare must be a list of scheduler names, got {names!r}")
    for name in names:
        scheduler_info(name)
    return list(names)


def check_schedule_config(cfg: DictConfig) -> None:
    if auto_keys(cfg):
        raise UserError(
            "an `auto` LR comes from the LR range test at training time; give a number to preview it"
        )
    check_train_config(cfg)
    for name in compared_names(cfg):
        check_train_config(with_scheduler(cfg, name))


def curve_csv(curve: ScheduleCurve) -> str:
    momenta = curve.changing_momenta()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["step", "epoch", *(f"lr/{g}" for g in curve.lrs), *(f"momentum/{g}" for g in momenta)]
    )
    for step in range(curve.total_steps):
        row = [step, f"{step / curve.steps_per_epoch:.6g}"]
        row += [repr(values[step]) for values in curve.lrs.values()]
        row += [repr(values[step]) for values in momenta.values()]
        writer.writerow(row)
    return out.getvalue()


def summary(curve: ScheduleCurve) -> dict[str, Any]:
    """Peak, final and end-of-warm-up LR of the first group, and the momentum range."""
    lrs = next(iter(curve.lrs.values()))
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    row = {
        "scheduler": curve.name,
        "torch oracle": scheduler_info(curve.name).oracle,
        "steps": f"{curve.total_steps} ({curve.steps_per_epoch}/epoch)",
        "warm-up end": f"step {curve.warmup_steps}: {lrs[curve.warmup_steps]:.3g}"
        if curve.warmup_steps
        else "-",
        "peak": f"{lrs[peak]:.3g} at step {peak}",
        "final": f"{lrs[-1]:.3g}",
    }
    momenta = curve.changing_momenta()
    if momenta:
        values = next(iter(momenta.values()))
        row["momentum"] = f"{min(values):.3g}-{max(values):.3g}"
    return row


TITLE = "LR schedule (first parameter group)"


def schedules_tables(curves: list[ScheduleCurve], width: int) -> list[Table]:
    """The summaries, no value split: one row per schedule where that fits in `width`, else one
    column per schedule, in as many tables as it takes."""
    rows = [summary(c) for c in curves]
    fields = list(dict.fromkeys(k for row in rows for k in row))
    by_schedule = Table(title=TITLE, title_justify="left")
    for field in fields:
        by_schedule.add_column(field)
    for row in rows:
        by_schedule.add_row(*(row.get(f, "-") for f in fields))
    if _natural_width(by_schedule) <= width:
        return [by_schedule]
    tables: list[Table] = []
    while rows:
        n = 1
        while n < len(rows) and _natural_width(_by_field(rows[: n + 1], fields)) <= width:
            n += 1
        tables.append(_by_field(rows[:n], fields, TITLE if not tables else None))
        rows = rows[n:]
    return tables


def _by_field(rows: list[dict[str, Any]], fields: list[str], title: str | None = None) -> Table:
    """One row per field, one column per schedule, headed by its name."""
    name, *others = fields
    table = Table(title=title, title_justify="left")
    table.add_column(name, style="bold")
    for row in rows:
        table.add_column(row[name], overflow="fold")
    for field in others:
        table.add_row(field, *(row.get(field, "-") for row in rows))
    return table


def _natural_width(table: Table) -> int:
    """How wide `table` is with no cell wrapped."""
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def plot_curves(
    series: list[tuple[str, list[float], list[float] | None]], steps_per_epoch: int, title: str
):
    """LR against optimizer steps, one line per schedule; momentum below where it changes."""
    with_momentum = any(m is not None for _, _, m in series)
    fig, axes = new_figure(
        8, 6 if with_momentum else 4.5, nrows=2 if with_momentum else 1, sharex=True, squeeze=False
    )
    lr_ax = axes[0][0]
    for i, (label, lrs, momenta) in enumerate(series):
        lr_ax.plot(range(len(lrs)), lrs, color=f"C{i % 10}", lw=1.8, label=label)
        if momenta is not None:
            axes[1][0].plot(range(len(momenta)), momenta, color=f"C{i % 10}", lw=1.5, label=label)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title(title, fontsize=10)
    lr_ax.legend(fontsize=8)
    lr_ax.grid(alpha=0.3)
    bottom = axes[-1][0]
    if with_momentum:
        bottom.set_ylabel("momentum / beta1")
        bottom.grid(alpha=0.3)
    bottom.set_xlabel(f"optimizer step ({steps_per_epoch} per epoch)")
    return fig


def _series(curve: ScheduleCurve, label: str) -> tuple[str, list[float], list[float] | None]:
    momenta = curve.changing_momenta()
    return label, next(iter(curve.lrs.values())), next(iter(momenta.values())) if momenta else None


def run_schedule(cfg: DictConfig, run_dir: Path) -> None:
    curves = [schedule_curve(cfg)]
    curves += [schedule_curve(with_scheduler(cfg, name)) for name in compared_names(cfg)]
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CSV_NAME, curve_csv(curves[0]))
    for curve in curves[1:]:
        atomic_write_text(run_dir / f"schedule-{curve.name}.csv", curve_csv(curve))
    if len(curves) == 1 and len(curves[0].lrs) > 1:  # one schedule: show each parameter group
        series = [(f"{curves[0].name}: {group}", lrs, None) for group, lrs in curves[0].lrs.items()]
        series[0] = _series(curves[0], series[0][0])
    else:
        series = [_series(curve, curve.name) for curve in curves]
    epochs = cfg.trainer.epochs
    title = (
        f"optimizer={cfg.optimizer.name}, {epochs} epoch{'s' * (epochs != 1)} x "
        f"{curves[0].steps_per_epoch} steps"
    )
    save_png(plot_curves(series, curves[0].steps_per_epoch, title), run_dir / PNG_NAME)
    for table in schedules_tables(curves, console.width):
        console.print(table)
    print_plain(f"wrote {run_dir / PNG_NAME} and {run_dir / CSV_NAME}")


def read_curve_csv(path: Path) -> tuple[list[float], list[float] | None, int]:
    """A schedule.csv's first group's LRs, its first changing momentum, and steps per epoch."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    lr_key = next(k for k in rows[0] if k.startswith("lr/"))
    momentum_key = next((k for k in rows[0] if k.startswith("momentum/")), None)
    momenta = [float(r[momentum_key]) for r in rows] if momentum_key else None
    steps_per_epoch = round(1 / float(rows[1]["epoch"])) if len(rows) > 1 else 1
    return [float(r[lr_key]) for r in rows], momenta, steps_per_epoch


class OverlayAtSweepEnd(Callback):
    """After `optbench schedule -m scheduler=a,b,...`, all of them in <sweep dir>/schedules.png."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        series, steps_per_epoch = [], 1
        for path in sorted(sweep_dir.glob(f"*/{CSV_NAME}")):
            job_config = OmegaConf.load(path.parent / ".hydra" / "config.yaml")
            lrs, momenta, steps_per_epoch = read_curve_csv(path)
            series.append((job_config.scheduler.name, lrs, momenta))
        if series:
            save_png(
                plot_curves(series, steps_per_epoch, "LR schedules of the sweep"),
                sweep_dir / OVERLAY_NAME,
            )
            print_plain(f"wrote {sweep_dir / OVERLAY_NAME}")
