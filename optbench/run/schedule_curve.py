"""The LR (and momentum) curve a training config follows, computed without training.

The run is built on the meta device (shapes only), so parameter groups, LR multipliers and
layer decay are the real ones, and each step's hyperparameters are set by the trainer's own
`Run.prepare_step`. No data is loaded: the plan needs only the dataset's size.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from optbench.optim.momentum import momentum_coefficient
from optbench.run.build import build_run


@dataclass(frozen=True)
class ScheduleCurve:
    name: str
    steps_per_epoch: int
    warmup_steps: int
    lrs: dict[str, list[float]]  # per parameter group, one value per optimizer step
    momenta: dict[str, list[float]]  # per group that has a momentum coefficient

    @property
    def total_steps(self) -> int:
        return len(next(iter(self.lrs.values())))

    def changing_momenta(self) -> dict[str, list[float]]:
        return {name: values for name, values in self.momenta.items() if max(values) != min(values)}


def schedule_curve(cfg: DictConfig) -> ScheduleCurve:
    """Every optimizer step's LR and momentum per group, as the trainer would set them.

    Plateau schedules move on validation metrics, which only training produces: their
    curve is the LR before any reduction.
    """
    run = build_run(cfg, meta=True)
    groups, names = run.optimizer.param_groups, run.group_names
    lrs: dict[str, list[float]] = {name: [] for name in names}
    momenta: dict[str, list[float]] = {
        name: []
        for name, g in zip(names, groups, strict=True)
        if momentum_coefficient(g) is not None
    }
    for step in range(run.plan.total_steps):
        run.prepare_step(step)
        for name, group in zip(names, groups, strict=True):
            lrs[name].append(float(group["lr"]))
            if name in momenta:
                momenta[name].append(momentum_coefficient(group))
    return ScheduleCurve(
        run.cfg.scheduler.name, run.plan.steps_per_epoch, run.schedule.warmup_steps, lrs, momenta
    )
