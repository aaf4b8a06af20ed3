"""Models: one registry entry and one `configs/model/` file each.

Input channels, image size and class count come from the dataset, so any model runs on any
dataset.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from optbench.checks import require_int, require_positive
from optbench.data import DatasetInfo
from optbench.errors import UserError
from optbench.models import schemas
from optbench.models.airbench import Airbench94
from optbench.models.fastcnn import FastCNN
from optbench.models.gpt import GPT
from optbench.models.mlp import MLP
from optbench.models.resnet import ResNet18
from optbench.models.vit import ViT
from optbench.user_code import import_object, keyword_parameters


def widths(values: object, key: str, exactly: int | None = None) -> tuple[int, ...]:
    """A list of layer widths, each an integer >= 1 (a zero-width layer would train nothing)."""
    if not isinstance(values, list | tuple | ListConfig) or (
        exactly is not None and len(values) != exactly
    ):
        count = f"{exactly} " if exactly is not None else ""
        raise UserError(f"{key} must be a list of {count}integers >= 1, got {values!r}")
    return tuple(require_int(v, key, 1) for v in values)


@dataclass(frozen=True)
class ModelEntry:
    description: str
    build: Callable[[DictConfig, DatasetInfo], nn.Module]
    # Its config's keys and types (optbench/models/schemas.py), or a function of the config
    # that gives them (a user's class: its constructor's keys).
    schema: type | Callable[[DictConfig], type]
    inputs: str = "images"  # images (C, H, W) | tokens (block_size,) | any


def _optional_int(value: object, name: str) -> int | None:
    return None if value is None else require_int(value, name, 0)


def _optional_positive(value: object, name: str) -> float | None:
    return None if value is None else require_positive(value, name)


def input_kind(info: DatasetInfo) -> str:
    return "images" if len(info.shape) == 3 else "tokens"


# What optbench gives a user's model class, where its constructor names them.
DATASET_ARGUMENTS = ("input_shape", "num_classes")


def _target_class(cfg: DictConfig) -> type[nn.Module]:
    if OmegaConf.is_missing(cfg, "target"):
        raise UserError(
            "model=custom needs model.target, the import path of your nn.Module class "
            "(e.g. model.target=mypkg.models.Net)"
        )
    cls = import_object(cfg.target, "model.target")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UserError(f"model.target={cfg.target} is not a torch.nn.Module subclass")
    return cls


def _target_schema(cfg: DictConfig) -> type:
    """name, target and the constructor's own keys (`+model.KEY=VALUE`)."""
    own = keyword_parameters(_target_class(cfg), skip=DATASET_ARGUMENTS)
    fields = [("name", str, field(default="custom")), ("target", str, field(default="???"))]
    fields += [(key, Any, field(default=None)) for key in own]
    return make_dataclass("CustomModelConfig", fields)


def _target_model(cfg: DictConfig, info: DatasetInfo) -> nn.Module:
    """A user's class, built with the dataset's `input_shape` ((C, H, W) images or
    (block_size,) tokens) and `num_classes` (the vocabulary for tokens) where it takes them."""
    cls = _target_class(cfg)
    takes = inspect.signature(cls).parameters
    given = {"input_shape": tuple(info.shape), "num_classes": info.num_classes}
    kwargs = {k: v for k, v in given.items() if k in takes}
    kwargs |= {
        k: OmegaConf.to_object(v) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k not in ("name", "target")
    }
    try:
        return cls(**kwargs)
    except Exception as err:
        raise UserError(
            f"model.target={cfg.target}: {cls.__name__}(...) raised {type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        ) from None


MODELS: dict[str, ModelEntry] = {
    "resnet18": ModelEntry(
        "CIFAR ResNet-18: 3x3 stem, no max-pool (11.2 M parameters at width 64)",
        lambda cfg, info: ResNet18(
            info.shape[0], info.num_classes, width=require_int(cfg.width, "model.width", 1)
        ),
        schemas.ResNet18Config,
    ),
    "fastcnn": ModelEntry(
        "airbench94-style 8-layer CNN (2x2 stem, three conv groups, scaled linear head)",
        lambda cfg, info: FastCNN(
            info.shape[0], info.num_classes, widths=widths(cfg.widths, "model.widths", exactly=3)
        ),
        schemas.FastCNNConfig,
    ),
    "airbench94": ModelEntry(
        "airbench94: fastcnn with a frozen patch-whitening stem, frozen BN scales, Dirac init",
        lambda cfg, info: Airbench94(
            info.shape[0],
            info.num_classes,
            widths=widths(cfg.widths, "model.widths", exactly=3),
            whiten_bias_epochs=_optional_int(
                cfg.get("whiten_bias_epochs"), "model.whiten_bias_epochs"
            ),
            logit_divisor=require_positive(cfg.get("logit_divisor", 9), "model.logit_divisor"),
            head_std=_optional_positive(cfg.get("head_std"), "model.head_std"),
        ),
        schemas.Airbench94Config,
    ),
    "vit": ModelEntry(
        "Vision Transformer: patch embedding, class token or mean pool, pre-norm blocks",
        lambda cfg, info: ViT(
            info.shape[0],
            info.num_classes,
            info.shape[1:],
            patch_size=require_int(cfg.patch_size, "model.patch_size", 1),
            dim=require_int(cfg.dim, "model.dim", 1),
            depth=require_int(cfg.depth, "model.depth", 1),
            heads=require_int(cfg.heads, "model.heads", 1),
            mlp_ratio=require_positive(cfg.mlp_ratio, "model.mlp_ratio"),
            pool=cfg.pool,
        ),
        schemas.ViTConfig,
    ),
    "gpt": ModelEntry(
        "small GPT language model (nanoGPT's shape): causal pre-norm blocks, tied head",
        lambda cfg, info: GPT(
            info.num_classes,
            info.shape[0],
            dim=require_int(cfg.dim, "model.dim", 1),
            depth=require_int(cfg.depth, "model.depth", 1),
            heads=require_int(cfg.heads, "model.heads", 1),
            mlp_ratio=require_positive(cfg.mlp_ratio, "model.mlp_ratio"),
            tied=cfg.tied,
        ),
        schemas.GPTConfig,
        inputs="tokens",
    ),
    "mlp": ModelEntry(
        "multilayer perceptron on flattened pixels",
        lambda cfg, info: MLP(
            math.prod(info.shape), info.num_classes, hidden=widths(cfg.hidden, "model.hidden")
        ),
        schemas.MLPConfig,
    ),
    "custom": ModelEntry(
        "your nn.Module class (model.target), given input_shape and num_classes",
        _target_model,
        _target_schema,
        inputs="any",
    ),
}


def build_model(cfg: DictConfig, info: DatasetInfo) -> nn.Module:
    """The model `cfg` names, sized for the dataset `info` describes."""
    if cfg.name not in MODELS:
        raise UserError(f"unknown model '{cfg.name}'; choose from {', '.join(MODELS)}")
    entry = MODELS[cfg.name]
    if entry.inputs not in ("any", input_kind(info)):
        fits = ", ".join(n for n, e in MODELS.items() if e.inputs == input_kind(info))
        raise UserError(
            f"model={cfg.name} takes {entry.inputs}, but the dataset gives {input_kind(info)}; "
            f"use one of {fits}"
        )
    try:
        return entry.build(cfg, info)
    except ValueError as err:  # a shape the model cannot take (heads, patch size)
        raise UserError(f"model={cfg.name}: {err}") from None
