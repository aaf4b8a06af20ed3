"""Build the optimizer an `optimizer:` config describes, for a given model."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_optimizer.base.exception import NegativeLRError, NegativeStepError
from torch import nn

from optbench.checks import is_number
from optbench.config import group_option
from optbench.errors import UserError
from optbench.optim.param_groups import parameter_groups
from optbench.optim.registry import OPTIMIZERS, OptimizerInfo, load_object, optimizer_info

# Config keys that select or wrap an optimizer rather than being passed to its constructor.
SELECTION_KEYS = ("name", "impl")
# Keys of `optimizer=lookahead` that configure the wrapper itself; the rest go to the base.
LOOKAHEAD_KEYS = ("name", "impl", "base", "k", "alpha")
# The keys each builder takes for itself, by dotted path, loaded lazily like the builders.
# A builder that takes `base` wraps that optimizer, which gets (and checks) the other keys;
# any other builder passes them to its `backend` class.
BUILDER_KEYS = {
    "optbench.optim.muon.build_muon": "optbench.optim.muon.ADAMW_KEYS",
    "optbench.optim.muon.build_normuon": "optbench.optim.muon.ADAMW_KEYS",
    "optbench.optim.torch_muon.build_torch_muon": "optbench.optim.muon.ADAMW_KEYS",
    "optbench.optim.muon_sgd.build_muon_sgd": "optbench.optim.muon_sgd.BUILDER_KEYS",
    "optbench.optim.lookahead.build_lookahead": "optbench.optim.factory.LOOKAHEAD_KEYS",
}


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
    return {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if name != "params" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def accepted_keys(info: OptimizerInfo, impl: str, base: str | None = None) -> dict[str, Any]:
    """Every key optimizer `info` takes, with the default of the parameter it sets: the
    constructor's, plus a builder's own keys (default `inspect.Parameter.empty`)."""
    if info.builder is None or impl != "library":
        return constructor_defaults(optimizer_class(info, impl))
    own = BUILDER_KEYS.get(info.builder)
    own_keys = {
        key: inspect.Parameter.empty
        for key in (load_object(own) if own else ())
        if key not in SELECTION_KEYS
    }
    if "base" in own_keys:
        return own_keys | accepted_keys(optimizer_info(base), impl)
    return own_keys | constructor_defaults(load_object(info.backend))


def check_keys(info: OptimizerInfo, impl: str, hparams: dict[str, Any]) -> None:
    """Raise a one-line UserError for a key the optimizer does not take, or betas of another
    length than its constructor's default (torch fails on them with an IndexError, or not
    at all)."""
    accepted = accepted_keys(info, impl, hparams.get("base"))
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
    return load_object(info.backend)


def optimizer_config(name: str) -> DictConfig:
    """The documented defaults of optimizer `name`: its file in configs/optimizer/."""
    optimizer_info(name)
    return group_option("optimizer", name)


def resolve_optimizer_config(cfg: DictConfig) -> DictConfig:
    """`cfg` with a wrapper's base defaults filled in.

    `optimizer=lookahead optimizer.base=adamw` takes AdamW's documented hyperparameters;
    any key set on the lookahead node (non-null) overrides them. Other optimizers pass through.
    """
    if cfg.name != "lookahead":
        return cfg
    if cfg.base == "lookahead":
        raise UserError("optimizer.base of lookahead must be another optimizer, not lookahead")
    base = optimizer_config(cfg.base)
    overrides = {
        k: v
        for k, v in OmegaConf.to_container(cfg).items()
        if k not in LOOKAHEAD_KEYS and v is not None
    }
    merged = OmegaConf.merge(base, overrides)
    return OmegaConf.merge(merged, {k: cfg[k] for k in LOOKAHEAD_KEYS if k in cfg})


def with_resolved_optimizer(cfg: DictConfig) -> DictConfig:
    """A run config whose `optimizer` node is resolved, so everything that reads
    `cfg.optimizer.lr` (schedules, logs, the LR finder) sees the LR the optimizer gets."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.optimizer = resolve_optimizer_config(cfg.optimizer)
    return cfg


def build_optimizer(
    model: nn.Module, cfg: DictConfig, groups_cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer `cfg` names over `model`'s parameter groups (`groups_cfg`)."""
    cfg = resolve_optimizer_config(cfg)
    hparams = hyperparameters(cfg)
    validate_hyperparameters(cfg.name, hparams)
    groups = parameter_groups(
        model,
        weight_decay=hparams.get("weight_decay", 0.0),
        no_decay_bias_norm=groups_cfg.no_decay_bias_norm,
        lr_multipliers=groups_cfg.lr_multipliers,
        layer_decay=groups_cfg.layer_decay,
        norm_lr_multiplier=groups_cfg.norm_lr_multiplier,
        decay_per_step=groups_cfg.decay_per_step,
    )
    return optimizer_from_groups(groups, cfg, device)


def optimizer_from_groups(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer `cfg` names over ready-made parameter groups (or a list of tensors).

    Each group starts at `lr x lr_scale`; an `auto` LR starts at 0, since the run sets
    every group's LR before each step anyway (optbench/run/hyperparameters.py).
    """
    cfg = resolve_optimizer_config(cfg)
    info = optimizer_info(cfg.name)
    hparams = {**info.defaults, **hyperparameters(cfg)}
    validate_hyperparameters(info.name, hparams)
    impl = cfg.get("impl", "library")
    check_keys(info, impl, hparams)
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
