"""The interface every task implements."""

from __future__ import annotations

from typing import Protocol

import torch
from omegaconf import DictConfig

from optbench.checks import is_number
from optbench.errors import UserError


def label_smoothing(cfg: DictConfig) -> float:
    """`trainer.label_smoothing`, checked: a share of the target mass spread over the classes."""
    value = cfg.trainer.label_smoothing
    if not (is_number(value) and 0 <= value < 1):
        raise UserError(f"trainer.label_smoothing must be in [0, 1), got {value!r}")
    return float(value)


class Task(Protocol):
    """Scores a model's outputs against targets.

    Metrics are named without a split (`loss`, `acc`); the trainer logs them as
    `train_<name>` and `test_<name>`. `directions` says which are maximised, and
    `main_metric` is the one targets, the tuning objective and the report rank by.
    """

    name: str
    directions: dict[str, str]  # metric -> "max" | "min"
    main_metric: str

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training objective, a mean over the batch (regularisers such as smoothing included)."""
        ...

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-batch sums on the device (the plain loss as `loss`, counts) for `metrics`."""
        ...

    def metrics(self, sums: dict[str, float], samples: int) -> dict[str, float]:
        """The metrics from sums over `samples` samples."""
        ...
