"""Set the optimizer's LR and momentum for optimizer step t, from the schedule and the base LR.

`lr = base LR x group["lr_scale"] x schedule.lr_factor(t)`: a group's multiplier stays in its
`lr_scale`, and a group with its own `base_lr` (Muon's AdamW part) scales from that. Nothing
is divided back out, so the range test, `auto` and resume only ever set the base LR or t.
"""

from __future__ import annotations

import torch

from optbench.optim.momentum import reset_momentum, scale_momentum, set_momentum_coefficient
from optbench.schedules import MomentumControl, Schedule


def set_lrs(optimizer: torch.optim.Optimizer, base_lr: float, factor: float = 1.0) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group.get("base_lr", base_lr) * group.get("lr_scale", 1.0) * factor


def set_step_hyperparameters(
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    schedule: Schedule,
    momentum: MomentumControl,
    step: int,
) -> None:
    """The LR and momentum optimizer step `step` runs with."""
    factor = schedule.lr_factor(step)
    set_lrs(optimizer, base_lr, factor)
    value, rescale = schedule.momentum(step), False
    if value is None:
        value, rescale = momentum.value(step, factor), momentum.rescale
    if value is not None:
        for group in optimizer.param_groups:
            set_momentum_coefficient(optimizer, group, value, rescale)


def start_epoch(optimizer: torch.optim.Optimizer, momentum: MomentumControl, epoch: int) -> None:
    """Reset or scale the momentum buffers as epoch `epoch` (counted from 0) begins."""
    if epoch in momentum.resets:
        reset_momentum(optimizer)
    if epoch in momentum.scales:
        scale_momentum(optimizer, momentum.scales[epoch])
