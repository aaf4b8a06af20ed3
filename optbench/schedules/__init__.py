"""LR schedules as factors of the optimizer step, and momentum control by step and epoch."""

from optbench.schedules.momentum_control import MomentumControl
from optbench.schedules.registry import SCHEDULERS, Horizon, SchedulerInfo
from optbench.schedules.schedule import Schedule, build_schedule, scheduler_info, warmup_steps

__all__ = [
    "SCHEDULERS",
    "Horizon",
    "MomentumControl",
    "Schedule",
    "SchedulerInfo",
    "build_schedule",
    "scheduler_info",
    "warmup_steps",
]
