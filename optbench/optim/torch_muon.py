"""torch.optim.Muon with AdamW for everything it does not take, as one optimizer.

torch's Muon accepts 2-D parameters only (its constructor raises for any other shape), and,
unlike pytorch_optimizer.Muon, it has no AdamW part. The split of `optbench/optim/muon.py`
runs with kernels left out, so hidden 2-D matrices get Muon and everything else (conv kernels,
biases, norms, the first layer and the head) gets torch.optim.AdamW. `MuonWithAdamW` holds both
under one list of parameter groups and one state, which is what schedulers, checkpoints, the
momentum control and the logs read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from optbench.optim.muon import build_muon


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the groups with `use_muon`, torch.optim.AdamW on the others."""

    def __init__(self, params: list[dict[str, Any]], **muon_kwargs: Any) -> None:
        groups = list(params)
        muon = [g for g in groups if g["use_muon"]]
        adamw = [g for g in groups if not g["use_muon"]]
        # Each part fills in its own defaults; this optimizer then holds the same group dicts.
        self.parts: list[torch.optim.Optimizer] = []
        if muon:
            self.parts.append(torch.optim.Muon(muon, **muon_kwargs))
        if adamw:
            self.parts.append(torch.optim.AdamW(adamw))
        super().__init__(muon + adamw, defaults={})
        self._share_groups_and_state()

    def _share_groups_and_state(self) -> None:
        """Point each part at this optimizer's groups and state (load_state_dict replaces both)."""
        for part in self.parts:
            is_muon = isinstance(part, torch.optim.Muon)
            part.param_groups = [g for g in self.param_groups if g["use_muon"] == is_muon]
            part.state = self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._share_groups_and_state()


def build_torch_muon(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    return build_muon(
        groups, cfg, device, muon_class="optbench.optim.torch_muon.MuonWithAdamW", kernels=False
    )
