"""Split a model's parameters into optimizer groups with their own LR and weight decay.

Each group keeps its own LR multiplier as `lr_scale` (module multiplier x layer decay), never
baked into `lr`: before every step the run sets `lr = base LR x lr_scale x schedule factor`
(optbench/run/hyperparameters.py), as timm's `lr_scale` and modded-nanogpt's `lr_mul` do.
Groups also carry a `name`, for logging, and `param_names`, for optimizers that treat
parameters differently (Muon).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from optbench.errors import UserError

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def is_bias_or_norm(module: nn.Module, param_name: str) -> bool:
    return param_name.endswith("bias") or isinstance(module, NORM_LAYERS)


def stage_depths(model: nn.Module) -> dict[str, int]:
    """Depth of each top-level child that owns parameters, in the order the model runs them."""
    stages = [
        name for name, child in model.named_children() if any(True for _ in child.parameters())
    ]
    return {name: depth for depth, name in enumerate(stages)}


def parameter_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    no_decay_bias_norm: bool = True,
    lr_multipliers: Mapping[str, float] | None = None,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for `model`.

    - `no_decay_bias_norm`: biases and normalisation weights get weight decay 0.
    - `lr_multipliers`: module-name prefix -> LR factor (e.g. `{"head": 10}`); the longest
      matching prefix wins.
    - `layer_decay`: the top-level child at depth d of D gets LR x layer_decay^(D - d), so the
      head trains at the full LR and the stem at the smallest (BEiT/ELECTRA-style decay).
    """
    lr_multipliers = {
        str(k): v for k, v in (lr_multipliers or {}).items()
    }  # Hydra may parse "3" as 3
    depths = stage_depths(model)
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise UserError(f"param_groups.layer_decay must be in (0, 1], got {layer_decay}")
    module_names = {name for name, _ in model.named_modules() if name}
    for prefix, factor in lr_multipliers.items():
        if factor <= 0:
            raise UserError(f"param_groups.lr_multipliers.{prefix} must be positive, got {factor}")
        if prefix not in module_names:
            raise UserError(
                f"param_groups.lr_multipliers: the model has no module '{prefix}'; "
                f"top-level modules: {', '.join(depths)}"
            )

    groups: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()  # a parameter shared by two modules joins one group only
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            name_parts, factor = [], 1.0
            if layer_decay is not None:
                depth = depths.get(full_name.split(".")[0], len(depths) - 1)
                factor *= layer_decay ** (len(depths) - 1 - depth)
                name_parts.append(f"depth{depth}")
            prefix = max(
                (p for p in lr_multipliers if full_name == p or full_name.startswith(p + ".")),
                key=len,
                default=None,
            )
            if prefix is not None:
                factor *= lr_multipliers[prefix]
                name_parts.append(prefix)
            decays = not (no_decay_bias_norm and is_bias_or_norm(module, param_name))
            name_parts.append("decay" if decays else "no_decay")
            name = "/".join(name_parts)
            group = groups.setdefault(
                name,
                {
                    "name": name,
                    "params": [],
                    "param_names": [],
                    "lr_scale": factor,
                    "weight_decay": weight_decay if decays else 0.0,
                },
            )
            group["params"].append(param)
            group["param_names"].append(full_name)
    return list(groups.values())
