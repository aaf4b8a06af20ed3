"""Muon as its authors run it: Muon for hidden matrices, AdamW for everything else.

Newton-Schulz orthogonalisation only makes sense for weight matrices (conv kernels are
flattened to out_channels x rest). Biases, normalisation weights, the first layer and the
classifier head train with AdamW, as in Keller Jordan's CIFAR-10 and NanoGPT speedruns.
The same split serves NorMuon and torch.optim.Muon (`optbench/optim/torch_muon.py`), which
takes 2-D matrices only and so leaves conv kernels to AdamW.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from optbench.errors import UserError
from optbench.optim.factory import hyperparameters
from optbench.optim.registry import load_object

# AdamW settings of the non-matrix groups, taken from the config and not passed on to Muon.
ADAMW_KEYS = ("adamw_lr", "adamw_betas", "adamw_eps", "adamw_wd")


def uses_muon(
    param_name: str, param: torch.Tensor, first: str, last: str, kernels: bool = True
) -> bool:
    """Hidden matrices: at least 2-D (exactly 2-D without `kernels`) and in neither the first
    nor the last top-level module."""
    stage = param_name.split(".")[0]
    matrix = param.ndim >= 2 if kernels else param.ndim == 2
    return matrix and stage not in (first, last)


def build_muon(
    groups: list[dict[str, Any]],
    cfg: DictConfig,
    device: torch.device,
    muon_class: str = "pytorch_optimizer.Muon",
    kernels: bool = True,
) -> torch.optim.Optimizer:
    """`muon_class` over the split groups; `kernels`: whether conv kernels count as matrices."""
    if not all(isinstance(g, dict) and "param_names" in g for g in groups):
        raise UserError(
            f"optimizer={cfg.name} needs named parameter groups (train a model, not loose tensors)"
        )
    stages = list(dict.fromkeys(name.split(".")[0] for g in groups for name in g["param_names"]))
    first, last = stages[0], stages[-1]
    base_lr = cfg.lr
    split: list[dict[str, Any]] = []
    for group in groups:
        muon, adamw = {"params": [], "param_names": []}, {"params": [], "param_names": []}
        for name, param in zip(group["param_names"], group["params"], strict=True):
            target = muon if uses_muon(name, param, first, last, kernels) else adamw
            target["params"].append(param)
            target["param_names"].append(name)
        scale = group["lr"] / base_lr  # LR multipliers and layer decay carry over to both parts
        if muon["params"]:
            split.append(
                {**muon, "name": f"muon/{group['name']}", "use_muon": True, "lr": group["lr"],
                 "weight_decay": group["weight_decay"]}
            )  # fmt: skip
        if adamw["params"]:
            split.append(
                {**adamw, "name": f"adamw/{group['name']}", "use_muon": False, "lr": cfg.adamw_lr * scale,
                 "betas": tuple(cfg.adamw_betas), "eps": cfg.adamw_eps,
                 "weight_decay": cfg.adamw_wd if group["weight_decay"] > 0 else 0.0}
            )  # fmt: skip
    kwargs = {k: v for k, v in hyperparameters(cfg).items() if k not in ADAMW_KEYS}
    try:
        return load_object(muon_class)(split, **kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"optimizer={cfg.name}: {err}") from None


def build_normuon(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    return build_muon(groups, cfg, device, muon_class="pytorch_optimizer.NorMuon")
