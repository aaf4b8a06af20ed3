"""Check a training config completely without loading data or touching the device.

The model is built on the meta device (shapes only, no memory), and the optimizer and the
schedule are built on it, so every value they reject is reported before a run starts.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from optbench.errors import UserError
from optbench.lr_finder.finder import (
    PLACEHOLDER_LR,
    FinderSettings,
    lr_finder_needed,
    with_found_lr,
)
from optbench.models import build_model
from optbench.optim import build_optimizer, with_resolved_optimizer
from optbench.schedules import build_schedule, has_momentum
from optbench.schedules.momentum import MomentumSchedule
from optbench.train.plan import RunPlan, plan_run

NONFINITE_POLICIES = ("stop", "skip")


def check_train_config(cfg: DictConfig) -> RunPlan:
    """Raise a one-line UserError for anything in `cfg` that would fail or mislead a run."""
    cfg = with_resolved_optimizer(cfg)
    plan = plan_run(cfg)
    if cfg.trainer.on_nonfinite not in NONFINITE_POLICIES:
        raise UserError(
            f"trainer.on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got '{cfg.trainer.on_nonfinite}'"
        )
    if lr_finder_needed(cfg):
        FinderSettings.from_config(cfg.lr_find)
    checked, _ = with_found_lr(cfg, PLACEHOLDER_LR)  # an `auto` LR is only known at run time
    optimizer_cfg, scheduler_cfg = checked.optimizer, checked.scheduler
    with torch.device("meta"):
        model = build_model(cfg.model, plan.dataset)
    # Built for the CPU: fused CUDA kernels refuse meta tensors, and only shapes matter here.
    optimizer = build_optimizer(model, optimizer_cfg, cfg.param_groups, torch.device("cpu"))
    build_schedule(
        optimizer,
        scheduler_cfg,
        steps_per_epoch=plan.steps_per_epoch,
        total_steps=plan.total_steps,
        base_lr=optimizer_cfg.lr,
    )
    MomentumSchedule(
        optimizer,
        cfg.momentum,
        steps_per_epoch=plan.steps_per_epoch,
        lr_range=(
            0.0,
            1.0,
        ),  # the real range needs the whole schedule; any rising one checks the rest
        scheduler_cycles_momentum=bool(scheduler_cfg.get("cycle_momentum"))
        and has_momentum(optimizer),
    )
    return plan
