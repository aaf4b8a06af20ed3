"""torch.optim.Muon with AdamW for everything it does not take, as one optimizer.

torch's Muon accepts 2-D parameters only (its constructor raises for any other shape), and,
unlike pytorch_optimizer.Muon, it has no AdamW part. The split of `optbench/optim/muon.py`
runs with kernels left out, so hidden 2-D matrices get Muon and everything else (conv kernels,
biases, norms, the first layer and the head) gets torch.optim.AdamW. `MuonWithAdamW` holds both
under one list of parameter groups and one state, which is what schedulers, checkpoints, the
momentum control and the logs read.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from optbench.optim.muon import MuonAndRest, build_muon


class MuonWithAdamW(MuonAndRest):
    """torch.optim.Muon on the groups with `use_muon`, torch.optim.AdamW on the others."""

    muon_class = torch.optim.Muon
    rest_class = torch.optim.AdamW


def build_torch_muon(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    return build_muon(
        groups, cfg, device, muon_class="optbench.optim.torch_muon.MuonWithAdamW", kernels=False
    )
