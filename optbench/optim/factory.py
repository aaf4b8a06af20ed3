"""Build the optimizer an `optimizer:` config describes, for a given model."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_optimizer.base.exception import NegativeLRError, NegativeStepError
from torch import nn

from optbench.checks import is_number
from optbench.config import group_option
from optbench.errors import UserError
from optbench.optim.param_groups import parameter_groups
from optbench.optim.registry import (
    CUSTOM,
    OPTIMIZERS,
    OptimizerInfo,
    info_of,
    load_backend,
    load_object,
    optimizer_info,
)
from optbench.user_code import keyword_parameters

# Config keys that select an optimizer rather than being passed to its constructor.
SELECTION_KEYS = ("name", "impl", "target")


# What pytorch-optimizer's constructors raise for an argument they refuse (not ValueErrors).
LIBRARY_ARGUMENT_ERRORS = (NegativeLRError, NegativeStepError)


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The constructor arguments of an `optimizer:` config (lists become tuples, as for betas)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    return {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in values.items()
        if k not in SELECTION_KEYS
    }


def validate_hyperparameters(name: str, hparams: dict[str, Any]) -> None:
    """Raise a one-line UserError for values no optimizer accepts."""

    def fail(key: str, rule: str) -> None:
        raise UserError(f"optimizer={name}: {key} must be {rule}, got {hparams[key]!r}")

    if (
        "lr" in hparams
        and hparams["lr"] != "auto"
        and not (is_number(hparams["lr"]) and hparams["lr"] > 0)
    ):
        fail("lr", "a positive number or auto")
    for key in ("weight_decay", "momentum"):
        if key in hparams and not is_number(hparams[key]):
            fail(key, "a number")
    eps = hparams.get("eps", 1.0)
    # Adafactor's eps is a pair, either part of which may be left to its default.
    if not all(
        e is None or (is_number(e) and e > 0) for e in (eps if isinstance(eps, tuple) else (eps,))
    ):
        fail("eps", "positive")
    if hparams.get("weight_decay", 0) < 0:
        fail("weight_decay", "non-negative")
    if not 0 <= hparams.get("momentum", 0) < 1:
        fail("momentum", "in [0, 1)")
    if "betas" in hparams:
        betas = hparams["betas"]
        if not (isinstance(betas, tuple) and all(is_number(b) and 0 <= b < 1 for b in betas)):
            fail("betas", "a list of numbers in [0, 1)")


def constructor_defaults(cls: type) -> dict[str, Any]:
    """The explicit keyword parameters of `cls` and their defaults (`inspect.Parameter.empty`
    where none): pytorch-optimizer's classes also take **kwargs, which would swallow a typo."""
    return keyword_parameters(cls, skip=("params",))


def accepted_keys(cfg: DictConfig, info: OptimizerInfo | None = None) -> dict[str, Any]:
    """Every key the optimizer `cfg` describes takes, with the default of the parameter it
    sets: the constructor's, plus a builder's own keys (default `inspect.Parameter.empty`);
    a wrapper's are its own plus its base's."""
    info = info or info_of(cfg)
    impl = cfg.get("impl", "library")
    if info.builder is None or impl != "library":
        return constructor_defaults(optimizer_class(info, impl))
    own = {key: inspect.Parameter.empty for key in info.own_keys}
    if "base" in own:
        return own | accepted_keys(wrapped_config(cfg, info))
    return own | constructor_defaults(load_backend(info))


def check_keys(info: OptimizerInfo, cfg: DictConfig, hparams: dict[str, Any]) -> None:
    """Raise a one-line UserError for a key the optimizer does not take, or betas of another
    length than its constructor's default (torch fails on them with an IndexError, or not
    at all)."""
    accepted = accepted_keys(cfg, info)
    # The registry's fixed arguments are the backend's to take (AdamP's `cautious` is read
    # from its **kwargs).
    unknown = sorted(hparams.keys() - accepted.keys() - info.defaults.keys())
    if unknown:
        raise UserError(
            f"optimizer={info.name}: unknown key{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    for key, value in hparams.items():
        default = accepted.get(key)
        betas = key == "betas" or key.endswith("_betas")
        if (
            betas
            and isinstance(default, tuple)
            and not (isinstance(value, tuple) and len(value) == len(default))
        ):
            shown = list(value) if isinstance(value, tuple) else value
            raise UserError(
                f"optimizer={info.name}: {key} must be a list of {len(default)} numbers, "
                f"got {shown!r}"
            )


def optimizer_class(info: OptimizerInfo, impl: str) -> type[torch.optim.Optimizer]:
    if impl == "reference":
        if info.reference is None:
            with_reference = ", ".join(name for name, i in OPTIMIZERS.items() if i.reference)
            raise UserError(
                f"optimizer={info.name} has no reference implementation; these do: {with_reference}"
            )
        return load_object(info.reference)
    if impl != "library":
        raise UserError(f"optimizer.impl must be 'library' or 'reference', got '{impl}'")
    return load_backend(info)


def optimizer_config(name: str) -> DictConfig:
    """The documented defaults of optimizer `name`: its file in configs/optimizer/, or an
    entry point's config; a dotted path names a user's class, with custom.yaml's defaults."""
    if "." in name:
        cfg = group_option("optimizer", CUSTOM)
        cfg.target = name
        optimizer_info(CUSTOM, name)  # it imports and is an optimizer class
        return cfg
    info = optimizer_info(name)
    if info.config is not None:
        return OmegaConf.create({"name": name, **info.config})
    return group_option("optimizer", name)


def wrapped_config(cfg: DictConfig, info: OptimizerInfo) -> DictConfig:
    """The config of the optimizer a wrapper (`info`, whose own keys include `base`) wraps:
    the wrapper's keys but its own, under the base's name (or, for a dotted path, its class)."""
    own = (*SELECTION_KEYS, *info.own_keys)
    base = OmegaConf.create({k: v for k, v in cfg.items() if k not in own})
    base.name = cfg.base
    if "." in cfg.base:
        base.name, base.target = CUSTOM, cfg.base
    return base


def resolve_optimizer_config(cfg: DictConfig) -> DictConfig:
    """`cfg` with a wrapper's base defaults filled in.

    `optimizer=lookahead optimizer.base=adamw` takes AdamW's documented hyperparameters
    (`optimizer.base=mypkg.opt.MyAdam`: a user's class, with custom.yaml's); any key set on
    the lookahead node (non-null) overrides them. Other optimizers pass through.
    """
    info = info_of(cfg)
    if "base" not in info.own_keys:
        return cfg
    if not isinstance(cfg.base, str) or cfg.base == cfg.name:
        raise UserError(
            f"optimizer.base of {cfg.name} must be another optimizer's name or a class's "
            f"import path, got {cfg.base!r}"
        )
    base = optimizer_config(cfg.base)
    wrapper_keys = (*SELECTION_KEYS, *info.own_keys)
    overrides = {
        k: v
        for k, v in OmegaConf.to_container(cfg).items()
        if k not in wrapper_keys and v is not None
    }
    merged = OmegaConf.merge(base, overrides)
    return OmegaConf.merge(merged, {k: cfg[k] for k in wrapper_keys if k in cfg})


def with_resolved_optimizer(cfg: DictConfig) -> DictConfig:
    """A run config whose `optimizer` node is resolved, so everything that reads
    `cfg.optimizer.lr` (schedules, logs, the LR finder) sees the LR the optimizer gets."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.optimizer = resolve_optimizer_config(cfg.optimizer)
    return cfg


@dataclass(frozen=True)
class OptimizerSpec:
    """An `optimizer:` config resolved and checked once: what it names and its arguments."""

    cfg: DictConfig  # a wrapper's base defaults filled in
    info: OptimizerInfo
    impl: str
    hparams: dict[str, Any]  # the constructor's arguments, fixed ones included


def resolve(cfg: DictConfig) -> OptimizerSpec:
    cfg = resolve_optimizer_config(cfg)
    info = info_of(cfg)
    hparams = {**info.defaults, **hyperparameters(cfg)}
    validate_hyperparameters(info.name, hparams)
    check_keys(info, cfg, hparams)
    return OptimizerSpec(cfg, info, cfg.get("impl", "library"), hparams)


def build_optimizer(
    model: nn.Module, cfg: DictConfig, groups_cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer `cfg` names over `model`'s parameter groups (`groups_cfg`)."""
    spec = resolve(cfg)
    groups = parameter_groups(
        model,
        weight_decay=spec.hparams.get("weight_decay", 0.0),
        no_decay_bias_norm=groups_cfg.no_decay_bias_norm,
        lr_multipliers=groups_cfg.lr_multipliers,
        layer_decay=groups_cfg.layer_decay,
        norm_lr_multiplier=groups_cfg.norm_lr_multiplier,
        decay_per_step=groups_cfg.decay_per_step,
    )
    return _construct(groups, spec, device)


def optimizer_from_groups(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer `cfg` names over ready-made parameter groups (or a list of tensors)."""
    return _construct(groups, resolve(cfg), device)


def _construct(
    groups: list[dict[str, Any]], spec: OptimizerSpec, device: torch.device
) -> torch.optim.Optimizer:
    """Each group starts at `lr x lr_scale`; an `auto` LR starts at 0, since the run sets
    every group's LR before each step anyway (optbench/run/hyperparameters.py)."""
    cfg, info, impl, hparams = spec.cfg, spec.info, spec.impl, dict(spec.hparams)
    if hparams.get("lr") == "auto":
        hparams["lr"] = 0.0
    for group in groups:
        if isinstance(group, dict):
            group["lr"] = group.get("base_lr", hparams["lr"]) * group.setdefault("lr_scale", 1.0)
    if info.builder is not None and impl == "library":
        return load_object(info.builder)(groups, cfg, device)
    cls = optimizer_class(info, impl)
    if impl == "reference":
        # A reference implements its registry variant by construction (C-AdamW is AdamP's
        # cautious=True, delta=0), so of the fixed arguments it takes those its signature names.
        accepted = inspect.signature(cls).parameters
        fixed = {k: v for k, v in info.defaults.items() if k in accepted}
        hparams = {**fixed, **hyperparameters(cfg)}
    if (
        info.fused_on_cuda
        and device.type == "cuda"
        and "fused" in inspect.signature(cls).parameters
    ):
        hparams.setdefault("fused", True)
    try:
        return cls(groups, **hparams)
    except (ValueError, TypeError, *LIBRARY_ARGUMENT_ERRORS) as err:
        raise UserError(f"optimizer={info.name}: {str(err).strip().splitlines()[0]}") from None
    except Exception as err:
        if info.origin == "optbench":
            raise
        # A user's constructor that fails is their mistake to see in one line, not ours.
        meta = any(_is_meta(group) for group in groups)
        raise UserError(
            f"optimizer={info.name}: {info.backend}(...) raised {type(err).__name__}"
            f"{' on the meta device, where optbench checks a run before it starts' if meta else ''}"
            f": {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        ) from None


def _is_meta(group: dict[str, Any] | torch.Tensor) -> bool:
    params = group["params"] if isinstance(group, dict) else [group]
    return any(p.is_meta for p in params)
