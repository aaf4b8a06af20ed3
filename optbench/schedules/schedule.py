"""The run's LR schedule as the trainer steps it: a linear warm-up in front of any scheduler.

The trainer calls `step()` after every optimizer step and `evaluated(metrics)` after every
evaluation; whether the schedule moves on steps or on a validation metric is the
scheduler's business, not the user's.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from optbench.checks import is_number
from optbench.errors import UserError
from optbench.schedules.registry import SCHEDULERS, Horizon, SchedulerInfo


class Schedule:
    """Warm up linearly for `warmup_steps`, then hand over to `main`.

    `main` is built first, so its own step-0 LRs are the warm-up's targets: the warm-up ends
    exactly where the main schedule begins, and the main schedule's clock starts at the end
    of warm-up.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        main: torch.optim.lr_scheduler.LRScheduler,
        *,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.0,
        per_evaluation: bool = False,
        metric: str | None = None,
    ):
        self.optimizer = optimizer
        self.main = main
        self.warmup_steps = warmup_steps
        self.warmup_start_factor = warmup_start_factor
        self.per_evaluation = per_evaluation
        self.metric = metric
        self.targets = [group["lr"] for group in optimizer.param_groups]
        self.step_count = 0
        self._set_warmup_lr()

    def _set_warmup_lr(self) -> None:
        if self.step_count > self.warmup_steps:
            return
        progress = self.step_count / self.warmup_steps if self.warmup_steps else 1.0
        factor = self.warmup_start_factor + (1.0 - self.warmup_start_factor) * progress
        for group, target in zip(self.optimizer.param_groups, self.targets, strict=True):
            group["lr"] = target * factor

    def step(self) -> None:
        """Advance one optimizer step."""
        self.step_count += 1
        if self.step_count <= self.warmup_steps:
            self._set_warmup_lr()
        elif not self.per_evaluation:
            self.main.step()

    def evaluated(self, metrics: dict[str, float]) -> None:
        """Advance on a validation result (plateau schedules only, after warm-up)."""
        if self.per_evaluation and self.step_count >= self.warmup_steps:
            self.main.step(metrics[self.metric])

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "targets": self.targets,
            "main": self.main.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = state["step_count"]
        self.targets = state["targets"]
        self.main.load_state_dict(state["main"])


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
    if steps > total_steps - 2:
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
    optimizer: torch.optim.Optimizer,
    cfg: DictConfig,
    *,
    steps_per_epoch: int,
    total_steps: int,
    base_lr: float,
) -> Schedule:
    """The schedule `cfg` describes over `total_steps` optimizer steps.

    `base_lr` is the optimizer's configured LR; a schedule's `max_lr`, where it has one,
    scales every group's LR by max_lr / base_lr, keeping per-group ratios.
    """
    info = scheduler_info(cfg.name)
    warmup = warmup_steps(cfg.get("warmup", 0), total_steps)
    start_factor = cfg.get("warmup_start_factor", 0.0)
    if not 0 <= start_factor <= 1:
        raise UserError(f"scheduler.warmup_start_factor must be in [0, 1], got {start_factor}")
    max_lr = cfg.get("max_lr")
    if max_lr is not None and not (is_number(max_lr) and max_lr > 0):
        raise UserError(f"scheduler.max_lr must be a positive number, null or auto, got {max_lr!r}")
    horizon = Horizon(
        steps=total_steps - warmup,
        steps_per_epoch=steps_per_epoch,
        peak_scale=max_lr / base_lr if max_lr is not None else 1.0,
    )
    try:
        main = info.build(optimizer, cfg, horizon)
    except ValueError as err:
        raise UserError(f"scheduler={cfg.name}: {err}") from None
    return Schedule(
        optimizer,
        main,
        warmup_steps=warmup,
        warmup_start_factor=start_factor,
        per_evaluation=info.per_evaluation,
        metric=cfg.get("metric"),
    )
