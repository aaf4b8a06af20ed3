"""`optbench toy`: check the config, run every optimizer, then write the table, CSVs and pictures.

A run folder holds summary.csv (one row per optimizer), trajectories.csv (every recorded
point: optimizer, step, x, y, loss), trajectories.png and, with plot.gif, trajectories.gif.
summary.csv's lr_source says where each LR came from: config (the `lr` option), function
(the test function's default for that optimizer), optimizer (configs/optimizer/) or grid.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.table import Table

from optbench.checks import is_number, require_int, require_positive
from optbench.errors import UserError
from optbench.run.schema import typed_toy
from optbench.toy.functions import ToyFunction, toy_function
from optbench.toy.plot import animate_trajectories, plot_trajectories
from optbench.toy.trajectories import (
    DTYPE,
    ToyRun,
    Trajectory,
    best_on_grid,
    build_toy_optimizer,
    check_supported,
    default_lr,
    run_trajectory,
)
from optbench.tracking.console import console, print_path
from optbench.tracking.files import atomic_write_text

IMPLS = ("library", "reference")
SUMMARY_COLUMNS = (
    "optimizer", "lr", "lr_source", "status", "diverged_at_step",
    "final_loss", "distance_to_minimum", "steps_to_threshold",
)  # fmt: skip


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{key} must be true or false, got {value!r}")
    return value


def optimizer_names(cfg: DictConfig) -> list[str]:
    """`cfg.optimizers` as a list of names; a single name counts as a list of one."""
    names = [cfg.optimizers] if isinstance(cfg.optimizers, str) else cfg.optimizers
    if not isinstance(names, ListConfig | list) or not names:
        raise UserError(
            f"optimizers must be a list of optimizer names, e.g. '[sgd,adam]', got {cfg.optimizers!r}"
        )
    names = [str(name) for name in names]
    for name in names:
        check_supported(name)
    if len(set(names)) < len(names):
        raise UserError(f"optimizers lists an optimizer twice: {', '.join(names)}")
    return names


def _lr_overrides(cfg: DictConfig, names: list[str]) -> dict[str, float]:
    if cfg.lr is None:
        return {}
    if not isinstance(cfg.lr, DictConfig):
        raise UserError(f"lr must map optimizers to LRs, e.g. 'lr={{adam:0.1}}', got {cfg.lr!r}")
    lrs = OmegaConf.to_container(cfg.lr)
    for name, lr in lrs.items():
        if name not in names:
            raise UserError(
                f"lr.{name} is set, but {name} is not in optimizers ({', '.join(names)})"
            )
        require_positive(lr, f"lr.{name}")
    return lrs


def _start(cfg: DictConfig, function: ToyFunction) -> tuple[float, float]:
    if cfg.start is None:
        return function.start
    start = list(cfg.start) if isinstance(cfg.start, ListConfig) else None
    if not (start and len(start) == 2 and all(is_number(v) and abs(v) <= cfg.bound for v in start)):
        raise UserError(
            f"start must be [x, y], two numbers within the bound {cfg.bound:g}, got {cfg.start!r}"
        )
    return float(start[0]), float(start[1])


def planned_lrs(cfg: DictConfig, function: ToyFunction) -> dict[str, tuple[float, str]]:
    """Each optimizer's LR unless the grid picks one (the grid's centre if it does), and its source."""
    names = optimizer_names(cfg)
    lrs = {name: default_lr(function, name) for name in names}
    lrs.update({name: (float(lr), "config") for name, lr in _lr_overrides(cfg, names).items()})
    return lrs


def check_toy_config(cfg: DictConfig) -> None:
    """Raise a one-line UserError for anything in `cfg` that would fail or mislead the run."""
    cfg = typed_toy(cfg)
    function = toy_function(cfg.function)
    lrs = planned_lrs(cfg, function)
    require_int(cfg.steps, "steps", 1)
    require_int(cfg.seed, "seed", 0)
    require_positive(cfg.threshold, "threshold")
    require_positive(cfg.bound, "bound")
    _start(cfg, function)
    if cfg.impl not in IMPLS:
        raise UserError(f"impl must be one of {', '.join(IMPLS)}, got {cfg.impl!r}")
    _flag(cfg.lr_grid.enabled, "lr_grid.enabled")
    factors = cfg.lr_grid.factors
    if not isinstance(factors, ListConfig) or not factors:
        raise UserError(f"lr_grid.factors must be a list of positive numbers, got {factors!r}")
    for factor in factors:
        require_positive(factor, "every lr_grid.factors entry")
    _flag(cfg.plot.loss_panel, "plot.loss_panel")
    _flag(cfg.plot.gif, "plot.gif")
    require_int(cfg.plot.gif_frames, "plot.gif_frames", 2)
    require_int(cfg.plot.gif_fps, "plot.gif_fps", 1)
    # Build each optimizer once on a throwaway point: the factory's own checks (a missing
    # reference implementation, a rejected hyperparameter) then fail before anything runs.
    for name, (lr, _) in lrs.items():
        build_toy_optimizer(name, lr, cfg.impl, torch.zeros(2, dtype=DTYPE, requires_grad=True))


def _trajectory(cfg: DictConfig, run: ToyRun, name: str, lr: float, source: str) -> Trajectory:
    if not cfg.lr_grid.enabled:
        return run_trajectory(run, name, lr, source)
    factors = [float(f) for f in cfg.lr_grid.factors]
    with console.status(f"{name}: {len(factors)} LRs around {lr:g}"):
        return best_on_grid(run, name, lr, factors, cfg.threshold)


def _csv(header: tuple[str, ...], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _summary_row(summary: dict[str, Any]) -> list[Any]:
    cells = {k: "" if v is None else v for k, v in summary.items()}
    if summary["steps_to_threshold"] is None:
        cells["steps_to_threshold"] = "never"
    return [cells[k] for k in SUMMARY_COLUMNS]


def _trajectory_rows(trajectories: list[Trajectory]) -> list[list[Any]]:
    return [
        [t.optimizer, step, x, y, loss]
        for t in trajectories
        for step, ((x, y), loss) in enumerate(
            zip(t.points.tolist(), t.losses.tolist(), strict=True)
        )
    ]


def _table(cfg: DictConfig, summaries: list[dict[str, Any]]) -> Table:
    table = Table(
        title=f"toy: {cfg.function}, {cfg.steps} steps, impl={cfg.impl}", title_justify="left"
    )
    table.add_column("optimizer")
    steps_column = f"steps to < {cfg.threshold:g}"
    for column in ("lr", "lr from", "final loss", "distance to min", steps_column):
        table.add_column(column, justify="right")
    for s in summaries:
        if s["status"] == "diverged":
            final_loss, distance = f"[red]diverged at step {s['diverged_at_step']}[/red]", "-"
        else:
            final_loss, distance = f"{s['final_loss']:.3g}", f"{s['distance_to_minimum']:.3g}"
        steps = "never" if s["steps_to_threshold"] is None else str(s["steps_to_threshold"])
        table.add_row(s["optimizer"], f"{s['lr']:.3g}", s["lr_source"], final_loss, distance, steps)
    return table


def run_toy(cfg: DictConfig, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Run every optimizer of `cfg`, write the run's files into `run_dir`, return the summaries."""
    check_toy_config(cfg)
    cfg = typed_toy(cfg)
    function = toy_function(cfg.function)
    run = ToyRun(function, cfg.steps, _start(cfg, function), cfg.impl, float(cfg.bound), cfg.seed)
    trajectories = [
        _trajectory(cfg, run, name, lr, source)
        for name, (lr, source) in planned_lrs(cfg, function).items()
    ]
    summaries = [t.summary(function, cfg.threshold) for t in trajectories]
    run_dir = Path(run_dir)
    atomic_write_text(
        run_dir / "summary.csv", _csv(SUMMARY_COLUMNS, [_summary_row(s) for s in summaries])
    )
    atomic_write_text(
        run_dir / "trajectories.csv",
        _csv(("optimizer", "step", "x", "y", "loss"), _trajectory_rows(trajectories)),
    )
    plot_trajectories(
        function, trajectories, run_dir / "trajectories.png", cfg.threshold, cfg.plot.loss_panel
    )
    if cfg.plot.gif:
        animate_trajectories(
            function,
            trajectories,
            run_dir / "trajectories.gif",
            cfg.plot.gif_frames,
            cfg.plot.gif_fps,
        )
    console.print(_table(cfg, summaries))
    print_path("run folder", run_dir)
    return {s["optimizer"]: s for s in summaries}
