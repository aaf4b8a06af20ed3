"""Put training back exactly as it was after a range test: weights, buffers, optimizer,
loss scaler and random number generators, bit for bit.

The data order needs no saving: optbench's batches are a pure function of (seed, epoch).
Copies are kept on the CPU, so the test costs no extra accelerator memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from optbench.run.rng import rng_state, set_rng_state


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


@dataclass(frozen=True)
class TrainingSnapshot:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]

    @classmethod
    def take(
        cls, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
    ) -> TrainingSnapshot:
        return cls(
            _to_cpu(model.state_dict()),
            _to_cpu(optimizer.state_dict()),
            scaler.state_dict(),
            rng_state(),
        )

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
    ) -> None:
        model.load_state_dict(self.model)
        # A copy: load_state_dict may keep references to the tensors it is given.
        optimizer.load_state_dict(_to_cpu(self.optimizer))
        scaler.load_state_dict(self.scaler)
        set_rng_state(self.rng)
