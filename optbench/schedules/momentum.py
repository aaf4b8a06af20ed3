"""Momentum schedules and buffer actions, stepped by the trainer like the LR schedule.

- `cyclic`: momentum moves inversely to the LR, from `high` at the run's lowest LR to `low`
  at its highest (Smith's 1cycle rule, for any LR schedule);
- `piecewise`: a value per epoch range, e.g. {0: 0.5, 5: 0.9};
- `reset_at_epochs` / `scale_at_epochs`: zero or multiply the buffers as an epoch starts.
Everything is a function of the step, the epoch and the LR, so a resumed run needs no
extra state.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from optbench.checks import require_fraction
from optbench.errors import UserError
from optbench.optim.momentum import (
    keeps_momentum,
    reset_momentum,
    scale_momentum,
    set_momentum_coefficient,
)

SCHEDULES = ("none", "cyclic", "piecewise")


def _mapping(value: object) -> dict:
    """A dict option: null (the default) means no entries."""
    return {} if value is None else OmegaConf.to_container(value)


def _epoch(value: object, key: str) -> int:
    try:
        epoch = int(value)
    except (TypeError, ValueError):
        epoch = -1
    if epoch < 0 or str(epoch) != str(value).strip():
        raise UserError(f"momentum.{key} epochs must be integers >= 0, got {value!r}")
    return epoch


class MomentumSchedule:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: DictConfig,
        *,
        steps_per_epoch: int,
        lr_range: tuple[float, float] | None = None,
        scheduler_cycles_momentum: bool = False,
    ):
        if cfg.schedule not in SCHEDULES:
            raise UserError(
                f"momentum.schedule must be one of {', '.join(SCHEDULES)}, got '{cfg.schedule}'"
            )
        self.optimizer = optimizer
        self.kind = cfg.schedule
        self.steps_per_epoch = steps_per_epoch
        self.rescale = bool(cfg.rescale_buffers)
        self.low, self.high = (
            require_fraction(cfg.low, "momentum.low"),
            require_fraction(cfg.high, "momentum.high"),
        )
        self.milestones = sorted(
            (_epoch(k, "milestones"), require_fraction(v, "momentum.milestones"))
            for k, v in _mapping(cfg.milestones).items()
        )
        self.resets = {_epoch(e, "reset_at_epochs") for e in cfg.reset_at_epochs}
        self.scales = {
            _epoch(k, "scale_at_epochs"): float(v) for k, v in _mapping(cfg.scale_at_epochs).items()
        }
        if any(v < 0 for v in self.scales.values()):
            raise UserError("momentum.scale_at_epochs factors must be >= 0")
        active = self.kind != "none" or self.resets or self.scales
        if active and not keeps_momentum(optimizer):
            raise UserError(
                f"momentum control needs an optimizer with momentum; {type(optimizer).__name__} keeps none"
            )
        if self.kind != "none" and scheduler_cycles_momentum:
            raise UserError(
                "the scheduler already cycles momentum (scheduler.cycle_momentum); "
                "set momentum.schedule=none or scheduler.cycle_momentum=false"
            )
        if self.kind == "piecewise" and (not self.milestones or self.milestones[0][0] != 0):
            raise UserError(
                "momentum.milestones must give a value from epoch 0, e.g. {0: 0.5, 5: 0.9}"
            )
        if self.kind == "cyclic":
            if lr_range is None or lr_range[1] <= lr_range[0]:
                raise UserError(
                    "momentum.schedule=cyclic moves against the LR, but this LR schedule is flat"
                )
            self.lr_low, self.lr_high = lr_range

    def value(self, step: int, lr: float) -> float | None:
        """The coefficient for optimizer step `step` at LR `lr` (of the first group), or None."""
        if self.kind == "cyclic":
            position = (lr - self.lr_low) / (self.lr_high - self.lr_low)
            return self.high - (self.high - self.low) * min(max(position, 0.0), 1.0)
        if self.kind == "piecewise":
            epoch = step // self.steps_per_epoch
            return next(value for start, value in reversed(self.milestones) if start <= epoch)
        return None

    def apply(self, step: int) -> None:
        """Set the coefficient for the optimizer step about to run."""
        value = self.value(step, self.optimizer.param_groups[0]["lr"])
        if value is not None:
            for group in self.optimizer.param_groups:
                set_momentum_coefficient(self.optimizer, group, value, self.rescale)

    def epoch_start(self, epoch: int) -> None:
        """Reset or scale the buffers as epoch `epoch` (counted from 0) begins."""
        if epoch in self.resets:
            reset_momentum(self.optimizer)
        if epoch in self.scales:
            scale_momentum(self.optimizer, self.scales[epoch])
