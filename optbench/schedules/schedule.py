"""The run's LR schedule: a factor of the optimizer step, with a linear warm-up in front.

`lr_factor(t)` is a pure function of the step for every scheduler but plateau, the one
metric-driven case, whose reductions are the schedule's only state. The run sets each
group's LR to base LR x the group's `lr_scale` x `lr_factor(t)` before step t (see
optbench/run/hyperparameters.py); nothing here touches an optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from optbench.checks import is_number
from optbench.errors import UserError
from optbench.schedules.factors import WarmedUp
from optbench.schedules.registry import SCHEDULERS, Factor, Horizon, SchedulerInfo


@dataclass
class Plateau:
    """ReduceLROnPlateau's rule (relative threshold, no cooldown) on the LR factor."""

    mode: str  # min | max
    factor: float
    patience: int
    threshold: float
    floor: float
    scale: float = 1.0
    best: float = math.nan
    bad_evaluations: int = 0

    def update(self, value: float) -> None:
        better = math.isnan(self.best) or (
            value < self.best * (1 - self.threshold)
            if self.mode == "min"
            else value > self.best * (1 + self.threshold)
        )
        if better:
            self.best, self.bad_evaluations = value, 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations > self.patience:
            self.scale = max(self.scale * self.factor, self.floor)
            self.bad_evaluations = 0


@dataclass
class Schedule:
    name: str
    total_steps: int
    warmup_steps: int
    factor: Factor  # of the step, warm-up included
    plateau: Plateau | None = None
    metric: str | None = None  # the validation metric plateau watches
    _cycles_momentum: bool = field(default=False, repr=False)

    def lr_factor(self, step: int) -> float:
        scale = self.plateau.scale if self.plateau is not None else 1.0
        return self.factor(step) * scale

    def momentum(self, step: int) -> float | None:
        """The momentum (or beta1) the scheduler sets at `step`, or None where it sets none."""
        return self.factor.momentum(step) if self._cycles_momentum else None

    @property
    def cycles_momentum(self) -> bool:
        return self._cycles_momentum

    def lr_range(self) -> tuple[float, float]:
        """Lowest and highest factor over the run (before any plateau reduction)."""
        values = [self.factor(t) for t in range(self.total_steps)]
        return min(values), max(values)

    def evaluated(self, metrics: dict[str, float], step: int) -> None:
        """A validation result at `step`: plateau moves on it, after the warm-up."""
        if self.plateau is not None and step >= self.warmup_steps:
            self.plateau.update(metrics[self.metric])

    def state_dict(self) -> dict[str, Any]:
        if self.plateau is None:
            return {}
        p = self.plateau
        return {"scale": p.scale, "best": p.best, "bad_evaluations": p.bad_evaluations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.plateau is not None:
            for key, value in state.items():
                setattr(self.plateau, key, value)


def warmup_steps(warmup: Any, total_steps: int) -> int:
    """`scheduler.warmup` in optimizer steps: an integer is steps, a float in (0, 1) a fraction."""
    if not is_number(warmup):
        raise UserError(f"scheduler.warmup must be a number of steps or a fraction, got {warmup!r}")
    if isinstance(warmup, float) and not warmup.is_integer():
        if not 0 < warmup < 1:
            raise UserError(
                f"scheduler.warmup as a fraction of training must be in (0, 1), got {warmup}"
            )
        steps = round(warmup * total_steps)
    else:
        steps = int(warmup)
    if steps < 0:
        raise UserError(f"scheduler.warmup must not be negative, got {warmup}")
    if steps and steps > total_steps - 2:
        raise UserError(
            f"scheduler.warmup ({steps} steps) leaves no room for the schedule: training has "
            f"{total_steps} optimizer steps"
        )
    return steps


def scheduler_info(name: str) -> SchedulerInfo:
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler '{name}'; choose from {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name]


def build_schedule(
    cfg: DictConfig,
    *,
    steps_per_epoch: int,
    total_steps: int,
    metric_modes: dict[str, str],
    cycles_momentum: bool = False,
) -> Schedule:
    """The schedule `cfg` describes over `total_steps` optimizer steps.

    `metric_modes` are the task's validation metrics and whether each is minimised or
    maximised (plateau watches one); `cycles_momentum` says whether the optimizer has a
    momentum the scheduler may cycle (never switched on for plain SGD).
    """
    info = scheduler_info(cfg.name)
    warmup = warmup_steps(cfg.get("warmup", 0), total_steps)
    start_factor = cfg.get("warmup_start_factor", 0.0)
    if not (is_number(start_factor) and 0 <= start_factor <= 1):
        raise UserError(f"scheduler.warmup_start_factor must be in [0, 1], got {start_factor!r}")
    max_lr = cfg.get("max_lr")
    if max_lr is not None and max_lr != "auto" and not (is_number(max_lr) and max_lr > 0):
        raise UserError(f"scheduler.max_lr must be a positive number, null or auto, got {max_lr!r}")
    main = info.build(cfg, Horizon(total_steps - warmup, steps_per_epoch))
    plateau, metric = None, None
    if info.per_evaluation:
        metric = cfg.metric
        if metric not in metric_modes:
            raise UserError(
                f"scheduler.metric must be one of {', '.join(metric_modes)}, got '{metric}'"
            )
        mode = cfg.mode or metric_modes[metric]
        if mode not in ("min", "max"):
            raise UserError(f"scheduler.mode must be min or max, got '{mode}'")
        plateau = Plateau(mode, cfg.factor, cfg.patience, cfg.threshold, cfg.min_lr_ratio)
    return Schedule(
        cfg.name,
        total_steps,
        warmup,
        WarmedUp(main, warmup, start_factor),
        plateau,
        metric,
        _cycles_momentum=bool(cfg.get("cycle_momentum")) and cycles_momentum,
    )
