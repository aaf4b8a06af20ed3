"""Tasks: what a model's output is scored against. A task owns the loss and the metrics.

The step, evaluation, logging, targets, plateau, tuning objective and report ask the task,
never `cross_entropy` or `argmax` themselves, so a new kind of workload is one file here
and one entry in TASKS.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from optbench.errors import UserError
from optbench.tasks.base import Task
from optbench.tasks.classification import Classification
from optbench.tasks.language_model import LanguageModel

TASKS: dict[str, Callable[[DictConfig], Task]] = {
    "classification": Classification.from_config,
    "language_model": LanguageModel.from_config,
}


def build_task(cfg: DictConfig) -> Task:
    """The task the dataset declares (`dataset.task`), set up from the run config."""
    name = cfg.dataset.get("task", "classification")
    if name not in TASKS:
        raise UserError(f"unknown task '{name}'; choose from {', '.join(TASKS)}")
    return TASKS[name](cfg)


__all__ = ["TASKS", "Task", "build_task"]
