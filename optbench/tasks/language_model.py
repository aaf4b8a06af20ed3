"""Language modelling: next-token cross-entropy; loss, perplexity and bits per token.

Outputs are (batch, tokens, vocabulary) logits and targets the (batch, tokens) next tokens.
The text datasets are byte-level, so bits per token is bits per byte: bits per character
for ASCII text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from optbench.tasks.base import label_smoothing


@dataclass(frozen=True)
class LanguageModel:
    label_smoothing: float = 0.0
    name: str = "language_model"
    directions: dict[str, str] = field(
        default_factory=lambda: {"loss": "min", "perplexity": "min", "bits_per_token": "min"}
    )
    main_metric: str = "loss"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> LanguageModel:
        return cls(label_smoothing(cfg))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            outputs.flatten(0, 1).float(), targets.flatten(), label_smoothing=self.label_smoothing
        )

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(outputs.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        return {"loss": loss, "tokens": torch.tensor(float(targets.numel()), device=loss.device)}

    def metrics(self, sums: dict[str, float], samples: int) -> dict[str, float]:
        loss = sums["loss"] / sums["tokens"]
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "bits_per_token": loss / math.log(2),
        }
