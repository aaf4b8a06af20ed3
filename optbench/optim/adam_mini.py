"""Adam-mini over optbench's parameter groups.

pytorch_optimizer.AdamMini takes the model, not parameter groups: it reads the parameters' names
to find embeddings and attention heads and builds one group per tensor. It is given the named
parameters of optbench's groups instead, and each of its per-tensor groups then takes the LR and
weight decay of the optbench group the tensor is in, so LR multipliers, layer decay and no
weight decay on biases and norms apply as for every other optimizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from optbench.errors import UserError
from optbench.optim.factory import hyperparameters
from optbench.optim.registry import load_object


class NamedParameters:
    """What AdamMini reads of a model: `named_parameters()`."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]) -> None:
        self.named = named

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return iter(self.named)


def build_adam_mini(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    if not all(isinstance(g, dict) and "param_names" in g for g in groups):
        raise UserError(
            f"optimizer={cfg.name} needs named parameter groups (train a model, not loose tensors)"
        )
    owner = {id(p): g for g in groups for p in g["params"]}
    named = [(n, p) for g in groups for n, p in zip(g["param_names"], g["params"], strict=True)]
    try:
        optimizer = load_object("pytorch_optimizer.AdamMini")(
            NamedParameters(named), **hyperparameters(cfg)
        )
    except (ValueError, TypeError) as err:
        raise UserError(f"optimizer={cfg.name}: {err}") from None
    for group in optimizer.param_groups:
        source = owner[id(group["params"][0])]
        group["lr"], group["weight_decay"] = source["lr"], source["weight_decay"]
        group["lr_scale"] = source["lr_scale"]  # the run scales each step's LR by it
    return optimizer
