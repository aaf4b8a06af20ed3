"""The LR (and momentum) curve a training config would follow, computed without training.

The model is built on the meta device (shapes only), so parameter groups, LR multipliers
and layer decay are the real ones; the optimizer and the schedule are the trainer's own.
No data is loaded or downloaded: the plan needs only the dataset's size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from optbench.models import build_model
from optbench.optim import build_optimizer, with_resolved_optimizer
from optbench.optim.momentum import momentum_coefficient
from optbench.schedules.momentum import MomentumSchedule
from optbench.schedules.registry import has_momentum
from optbench.schedules.schedule import build_schedule
from optbench.train.plan import plan_run


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
    """Step `cfg`'s schedule through the whole run, as the trainer would.

    Plateau schedules move on validation metrics, which only training produces: their
    curve is the LR before any reduction.
    """
    cfg = with_resolved_optimizer(cfg)
    plan = plan_run(cfg)
    with torch.device("meta"):
        model = build_model(cfg.model, plan.dataset)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.param_groups, torch.device("cpu"))
    schedule = build_schedule(
        optimizer,
        cfg.scheduler,
        steps_per_epoch=plan.steps_per_epoch,
        total_steps=plan.total_steps,
        base_lr=cfg.optimizer.lr,
    )
    names = [group.get("name", str(i)) for i, group in enumerate(optimizer.param_groups)]
    lrs = {name: [] for name in names}
    momenta = {
        name: []
        for name, g in zip(names, optimizer.param_groups, strict=True)
        if momentum_coefficient(g) is not None
    }
    with warnings.catch_warnings():
        # No optimizer steps happen here, which torch's schedulers would warn about.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for _ in range(plan.total_steps):
            for name, group in zip(names, optimizer.param_groups, strict=True):
                lrs[name].append(float(group["lr"]))
                if name in momenta:
                    momenta[name].append(momentum_coefficient(group))
            schedule.step()
    if cfg.momentum.schedule != "none":
        first = lrs[names[0]]
        control = MomentumSchedule(
            optimizer,
            cfg.momentum,
            steps_per_epoch=plan.steps_per_epoch,
            lr_range=(min(first), max(first)),
            scheduler_cycles_momentum=bool(cfg.scheduler.get("cycle_momentum"))
            and has_momentum(optimizer),
        )
        values = [control.value(step, lr) for step, lr in enumerate(first)]
        momenta = {name: list(values) for name in momenta}
    return ScheduleCurve(
        cfg.scheduler.name, plan.steps_per_epoch, schedule.warmup_steps, lrs, momenta
    )


def lr_range(cfg: DictConfig) -> tuple[float, float]:
    """The lowest and highest LR of the first parameter group over the run."""
    first = next(iter(schedule_curve(cfg).lrs.values()))
    return min(first), max(first)
