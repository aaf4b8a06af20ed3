"""LR schedules: the registry of schedulers and the warm-up wrapper the trainer steps."""

from optbench.schedules.registry import SCHEDULERS, Horizon, SchedulerInfo, has_momentum
from optbench.schedules.schedule import Schedule, build_schedule, scheduler_info, warmup_steps

__all__ = [
    "SCHEDULERS",
    "Horizon",
    "Schedule",
    "SchedulerInfo",
    "build_schedule",
    "has_momentum",
    "scheduler_info",
    "warmup_steps",
]
