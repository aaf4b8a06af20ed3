"""Muon as its authors run it: Muon for hidden matrices, AdamW for everything else.

Newton-Schulz orthogonalisation only makes sense for weight matrices (conv kernels are
flattened to out_channels x rest). Biases, normalisation weights, the first layer and the
classifier head train with AdamW, as in Keller Jordan's CIFAR-10 and NanoGPT speedruns.
The same split serves NorMuon and torch.optim.Muon (`optbench/optim/torch_muon.py`), which
takes 2-D matrices only and so leaves conv kernels to AdamW.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from optbench.errors import UserError
from optbench.optim.factory import hyperparameters
from optbench.optim.registry import load_object, optimizer_info

# AdamW settings of the non-matrix groups, taken from the config and not passed on to Muon.


def uses_muon(param: torch.Tensor, layer: int, num_layers: int, kernels: bool = True) -> bool:
    """Hidden matrices: at least 2-D (exactly 2-D without `kernels`) and in neither the first
    layer (stem, embeddings) nor the last (head); layers as optbench/optim/param_groups.py
    counts them (blocks for a ViT/GPT)."""
    matrix = param.ndim >= 2 if kernels else param.ndim == 2
    return matrix and 0 < layer < num_layers - 1


Members = dict[str, list[Any]]


def split_groups(
    groups: list[dict[str, Any]], kernels: bool, optimizer: str
) -> list[tuple[dict[str, Any], Members, Members]]:
    """Each named group with its members split: (group, Muon's part, the rest)."""
    if not all(isinstance(g, dict) and "layers" in g for g in groups):
        raise UserError(
            f"optimizer={optimizer} needs named parameter groups (train a model, not loose tensors)"
        )
    split = []
    for group in groups:
        muon, rest = ({"params": [], "param_names": [], "layers": []} for _ in range(2))
        members = zip(group["param_names"], group["params"], group["layers"], strict=True)
        for name, param, layer in members:
            target = muon if uses_muon(param, layer, group["num_layers"], kernels) else rest
            target["params"].append(param)
            target["param_names"].append(name)
            target["layers"].append(layer)
        split.append((group, muon, rest))
    return split


def build_muon(
    groups: list[dict[str, Any]],
    cfg: DictConfig,
    device: torch.device,
    muon_class: str = "pytorch_optimizer.Muon",
    kernels: bool = True,
) -> torch.optim.Optimizer:
    """`muon_class` over the split groups; `kernels`: whether conv kernels count as matrices."""
    split: list[dict[str, Any]] = []
    for group, muon, adamw in split_groups(groups, kernels, cfg.name):
        # LR multipliers and layer decay (`lr_scale`) carry over to both parts; the AdamW part
        # scales from its own base LR, adamw_lr, not Muon's.
        scale = group.get("lr_scale", 1.0)
        if muon["params"]:
            split.append(
                {**muon, "name": f"muon/{group['name']}", "use_muon": True, "lr_scale": scale,
                 "lr": group["lr"], "weight_decay": group["weight_decay"]}
            )  # fmt: skip
        if adamw["params"]:
            split.append(
                {**adamw, "name": f"adamw/{group['name']}", "use_muon": False, "lr_scale": scale,
                 "base_lr": cfg.adamw_lr, "lr": cfg.adamw_lr * scale,
                 "betas": tuple(cfg.adamw_betas), "eps": cfg.adamw_eps,
                 "weight_decay": cfg.adamw_wd if group["weight_decay"] > 0 else 0.0}
            )  # fmt: skip
    try:
        return load_object(muon_class)(split, **muon_kwargs(cfg, optimizer_info(cfg.name).own_keys))
    except (ValueError, TypeError) as err:
        raise UserError(f"optimizer={cfg.name}: {err}") from None


def muon_kwargs(cfg: DictConfig, own_keys: tuple[str, ...]) -> dict[str, Any]:
    """The config's keys for the Muon part: all but the builder's own."""
    kwargs = {k: v for k, v in hyperparameters(cfg).items() if k not in own_keys}
    if kwargs.get("lr") == "auto":
        kwargs["lr"] = 0.0  # the run sets every group's LR before each step
    return kwargs


class MuonAndRest(torch.optim.Optimizer):
    """Two optimizers as one: `muon_class` on the groups with `use_muon`, `rest_class` on the
    others, under one list of parameter groups and one state, which is what schedulers,
    checkpoints, the momentum control and the logs read."""

    muon_class: type[torch.optim.Optimizer]
    rest_class: type[torch.optim.Optimizer]

    def __init__(self, params: list[dict[str, Any]], **muon_kwargs: Any) -> None:
        groups = list(params)
        muon = [g for g in groups if g["use_muon"]]
        rest = [g for g in groups if not g["use_muon"]]
        # Each part fills in its own defaults; this optimizer then holds the same group dicts.
        self.parts: list[torch.optim.Optimizer] = []
        if muon:
            self.parts.append(self.muon_class(muon, **muon_kwargs))
        if rest:
            self.parts.append(self.rest_class(rest))
        super().__init__(muon + rest, defaults={})
        self._share_groups_and_state()

    def _share_groups_and_state(self) -> None:
        """Point each part at this optimizer's groups and state (load_state_dict replaces both)."""
        for part in self.parts:
            is_muon = isinstance(part, self.muon_class)
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


def build_normuon(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    return build_muon(groups, cfg, device, muon_class="pytorch_optimizer.NorMuon")
