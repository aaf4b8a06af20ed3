"""Momentum control (`momentum:` block): a coefficient schedule and buffer actions by epoch.

- `cyclic`: momentum moves inversely to the LR, from `high` at the run's lowest LR to `low`
  at its highest (Smith's 1cycle rule, for any LR schedule);
- `piecewise`: a value per epoch range, e.g. {0: 0.5, 5: 0.9};
- `reset_at_epochs` / `scale_at_epochs`: zero or multiply the buffers as an epoch starts.
Everything is a function of the step, the epoch and the LR factor, so a resumed run needs
no extra state; the run applies it to the optimizer (optbench/run/hyperparameters.py).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from optbench.checks import require_fraction
from optbench.errors import UserError

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


class MomentumControl:
    def __init__(
        self,
        cfg: DictConfig,
        *,
        steps_per_epoch: int,
        lr_range: tuple[float, float],
        scheduler_cycles_momentum: bool = False,
    ):
        if cfg.schedule not in SCHEDULES:
            raise UserError(
                f"momentum.schedule must be one of {', '.join(SCHEDULES)}, got '{cfg.schedule}'"
            )
        self.kind = cfg.schedule
        self.steps_per_epoch = steps_per_epoch
        self.rescale = bool(cfg.rescale_buffers)
        self.low = require_fraction(cfg.low, "momentum.low")
        self.high = require_fraction(cfg.high, "momentum.high")
        if self.low > self.high:
            raise UserError(
                f"momentum.low ({self.low:g}) must not exceed momentum.high ({self.high:g}): "
                "low is the momentum at the highest LR"
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
        if self.kind != "none" and scheduler_cycles_momentum:
            raise UserError(
                "the scheduler already cycles momentum (scheduler.cycle_momentum); "
                "set momentum.schedule=none or scheduler.cycle_momentum=false"
            )
        if self.kind == "piecewise" and (not self.milestones or self.milestones[0][0] != 0):
            raise UserError(
                "momentum.milestones must give a value from epoch 0, e.g. {0: 0.5, 5: 0.9}"
            )
        self.lr_low, self.lr_high = lr_range
        if self.kind == "cyclic" and self.lr_high <= self.lr_low:
            raise UserError(
                "momentum.schedule=cyclic moves against the LR, but this LR schedule is flat"
            )

    @property
    def active(self) -> bool:
        return self.kind != "none" or bool(self.resets) or bool(self.scales)

    def value(self, step: int, lr_factor: float) -> float | None:
        """The coefficient for optimizer step `step` at LR factor `lr_factor`, or None."""
        if self.kind == "cyclic":
            position = (lr_factor - self.lr_low) / (self.lr_high - self.lr_low)
            return self.high - (self.high - self.low) * min(max(position, 0.0), 1.0)
        if self.kind == "piecewise":
            epoch = step // self.steps_per_epoch
            return next(value for start, value in reversed(self.milestones) if start <= epoch)
        return None
