"""Lookahead (Zhang et al. 2019) around any other optimizer of the registry.

The base optimizer takes k fast steps; then the slow weights move alpha of the way to the
fast ones and the fast weights restart from there.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from optbench.errors import UserError
from optbench.optim.registry import info_of, load_object


def build_lookahead(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    from optbench.optim.factory import optimizer_from_groups, wrapped_config

    if not (isinstance(cfg.k, int) and cfg.k >= 1):
        raise UserError(f"optimizer=lookahead: k must be an integer >= 1, got {cfg.k!r}")
    if not 0 < cfg.alpha <= 1:
        raise UserError(f"optimizer=lookahead: alpha must be in (0, 1], got {cfg.alpha!r}")
    base_cfg = wrapped_config(cfg, info_of(cfg))
    base_info = info_of(base_cfg)
    if base_info.hessian or base_info.schedule_free or base_info.builder is not None:
        raise UserError(
            f"optimizer=lookahead cannot wrap {cfg.base}: it needs the trainer's special handling"
        )
    base = optimizer_from_groups(groups, base_cfg, device)
    return load_object("pytorch_optimizer.Lookahead")(base, k=cfg.k, alpha=cfg.alpha)
