"""Classification: cross-entropy (optionally label-smoothed) and top-1 accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from optbench.tasks.base import label_smoothing


@dataclass(frozen=True)
class Classification:
    label_smoothing: float = 0.0
    name: str = "classification"
    directions: dict[str, str] = field(default_factory=lambda: {"loss": "min", "acc": "max"})
    main_metric: str = "acc"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Classification:
        return cls(label_smoothing(cfg))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing)

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        # Plain cross-entropy: label smoothing is a training device, not part of the metric.
        return {
            "loss": F.cross_entropy(outputs.float(), targets, reduction="sum"),
            "correct": (outputs.argmax(dim=1) == targets).sum().float(),
        }

    def metrics(self, sums: dict[str, float], samples: int) -> dict[str, float]:
        return {"loss": sums["loss"] / samples, "acc": sums["correct"] / samples}
