"""Split a model's parameters into optimizer groups with their own LR and weight decay.

Each group keeps its own LR multiplier as `lr_scale` (module multiplier x layer decay), never
baked into `lr`: before every step the run sets `lr = base LR x lr_scale x schedule factor`
(optbench/run/hyperparameters.py), as timm's `lr_scale` and modded-nanogpt's `lr_mul` do.
Groups also carry a `name`, for logging, and per parameter its `param_names` and `layers`
(its layer index), for optimizers that treat parameters differently (Muon).

A model may say which layer each parameter belongs to (`layer_id(name)` and `num_layers`,
as the ViT and GPT do by block index) and which tensors never decay (`no_weight_decay()`,
timm's convention); otherwise a layer is a top-level child, in the order the model runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from optbench.errors import UserError

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


def stage_depths(model: nn.Module) -> dict[str, int]:
    """Depth of each top-level child that owns parameters, in the order the model runs them.
    A child that only names parameters an earlier one owns (airbench94's `whiten`, an alias of
    `stem[0]`) is no layer of its own."""
    stages, seen = [], set()
    for name, child in model.named_children():
        params = {id(p) for p in child.parameters()}
        if params - seen:
            stages.append(name)
        seen |= params
    return {name: depth for depth, name in enumerate(stages)}


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Each parameter's layer index, and the number of layers."""
    names = [name for name, _ in model.named_parameters()]
    if hasattr(model, "layer_id"):
        return {name: model.layer_id(name) for name in names}, model.num_layers
    depths = stage_depths(model)
    # A parameter owned by the model itself, outside every child, counts as the last layer.
    return {n: depths.get(n.split(".")[0], len(depths) - 1) for n in names}, len(depths)


def decays(model: nn.Module, name: str, param: nn.Parameter) -> bool:
    """timm's rule: biases, norm weights and every other tensor of at most one dimension do
    not decay, nor does anything the model's `no_weight_decay()` names."""
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    return param.ndim > 1 and name not in exempt


def parameter_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    no_decay_bias_norm: bool = True,
    lr_multipliers: Mapping[str, float] | None = None,
    layer_decay: float | None = None,
    norm_lr_multiplier: float = 1.0,
    decay_per_step: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for `model`.

    - `no_decay_bias_norm`: 1-D tensors (biases, norm weights) and the model's
      `no_weight_decay()` names get weight decay 0.
    - `lr_multipliers`: module-name prefix -> LR factor (e.g. `{"head": 10}`); the longest
      matching prefix wins.
    - `layer_decay`: layer d of D gets LR x layer_decay^(D - 1 - d), so the head trains at the
      full LR and the embedding at the smallest (BEiT/ELECTRA-style decay).
    - `norm_lr_multiplier`: LR factor for the parameters of normalisation layers (airbench94
      trains its batch-norm biases at 64x the LR).
    - `decay_per_step`: a group at m x the LR gets weight_decay / m, so its decay per step
      (lr x weight_decay) is the base group's, whatever its multiplier (airbench94's rule).
    """
    lr_multipliers = {
        str(k): v for k, v in (lr_multipliers or {}).items()
    }  # Hydra may parse "3" as 3
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise UserError(f"param_groups.layer_decay must be in (0, 1], got {layer_decay}")
    module_names = {name for name, _ in model.named_modules() if name}
    for prefix, factor in lr_multipliers.items():
        if factor <= 0:
            raise UserError(f"param_groups.lr_multipliers.{prefix} must be positive, got {factor}")
        if prefix not in module_names:
            raise UserError(
                f"param_groups.lr_multipliers: the model has no module '{prefix}'; "
                f"top-level modules: {', '.join(stage_depths(model))}"
            )
    if norm_lr_multiplier <= 0:
        raise UserError(
            f"param_groups.norm_lr_multiplier must be positive, got {norm_lr_multiplier}"
        )
    norm_params = {
        f"{module_name}.{name}" if module_name else name
        for module_name, module in model.named_modules()
        if isinstance(module, NORM_LAYERS)
        for name, _ in module.named_parameters(recurse=False)
    }
    layers, num_layers = layer_ids(model)
    groups: dict[str, dict[str, Any]] = {}
    # named_parameters lists a parameter shared by two modules (a tied head) once, first name.
    for full_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name_parts, factor, layer = [], 1.0, layers[full_name]
        if layer_decay is not None:
            factor *= layer_decay ** (num_layers - 1 - layer)
            name_parts.append(f"depth{layer}")
        prefix = max(
            (p for p in lr_multipliers if full_name == p or full_name.startswith(p + ".")),
            key=len,
            default=None,
        )
        if prefix is not None:
            factor *= lr_multipliers[prefix]
            name_parts.append(prefix)
        if full_name in norm_params and norm_lr_multiplier != 1.0:
            factor *= norm_lr_multiplier
            name_parts.append("norm")
        decay = not no_decay_bias_norm or decays(model, full_name, param)
        name_parts.append("decay" if decay else "no_decay")
        name = "/".join(name_parts)
        group = groups.setdefault(
            name,
            {
                "name": name,
                "params": [],
                "param_names": [],
                "layers": [],
                "num_layers": num_layers,
                "lr_scale": factor,
                "weight_decay": (weight_decay / (factor if decay_per_step else 1.0))
                if decay
                else 0.0,
            },
        )
        group["params"].append(param)
        group["param_names"].append(full_name)
        group["layers"].append(layer)
    return list(groups.values())
