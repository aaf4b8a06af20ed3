"""Every optimizer optbench can run, described once as data (after timm's `OptimInfo`).

Adding an optimizer is adding one `OptimizerInfo` here and one file in `configs/optimizer/`.
Implementations are named by dotted path and imported only when asked for, so a missing
optional backend fails for that optimizer alone, with a one-line message.

A user's optimizer is the same kind of thing, made from their class: an `optimizer:` config
with a `target` (optimizer=custom, or their own YAML), or an `OptimizerInfo` an installed
package registers under the entry-point group `optbench.optimizers`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from omegaconf import DictConfig, OmegaConf

from optbench.errors import UserError
from optbench.user_code import import_object

# bitsandbytes warns on import that an optional 4-bit CPU matmul kernel is missing; its 8-bit
# optimizers do not use that kernel.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    description: str
    backend: str  # dotted path of the class that implements it
    state: str  # optimizer state per parameter element, e.g. "2 x params" for Adam
    # Fixed constructor arguments of the backend (a reference gets those its signature names).
    defaults: dict[str, Any] = field(default_factory=dict)
    fused_on_cuda: bool = False  # the constructor takes fused=True on CUDA
    reference: str | None = None  # dotted path of optbench's from-scratch implementation
    hessian: bool = False  # wants Hessian-diagonal estimates from the trainer (Sophia)
    schedule_free: bool = False  # needs optimizer.train()/.eval() around evaluation
    builder: str | None = None  # dotted path of a function(groups, cfg, device) -> optimizer
    # The keys the builder takes for itself; a builder whose own keys include `base` wraps
    # that optimizer (Lookahead), which gets and checks the other keys.
    own_keys: tuple[str, ...] = ()
    # Sets its own step size (its lr, 1.0, only multiplies it): the tuning protocol searches no
    # hyperparameters for it and gives its one run 1.5x the epochs (AlgoPerf's self-tuning track).
    self_tuning: bool = False
    # Documented hyperparameters, for an optimizer with no file in configs/optimizer/ (an
    # entry point's): what `optimizer=NAME` selects.
    config: dict[str, Any] | None = None
    # Where it comes from: optbench, `target` (a class given by import path) or the
    # distribution that registered it; only optbench's own backends are imported with
    # load_object's install hint.
    origin: str = "optbench"


_PO = "pytorch_optimizer."
_ADAM_STATE = "2 x params"
# The AdamW part of the Muon variants: its own LR, betas, eps and weight decay.
_ADAMW_KEYS = ("adamw_lr", "adamw_betas", "adamw_eps", "adamw_wd")

OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in [
        OptimizerInfo(
            "sgd", "plain stochastic gradient descent", "torch.optim.SGD", "0",
            defaults={"momentum": 0.0}, fused_on_cuda=True,
            reference="optbench.optim.reference.sgd.SGD",
        ),
        OptimizerInfo(
            "momentum", "SGD with heavy-ball momentum (Polyak 1964)", "torch.optim.SGD", "1 x params",
            fused_on_cuda=True,
            reference="optbench.optim.reference.sgd.SGD",
        ),
        OptimizerInfo(
            "nesterov", "SGD with Nesterov momentum (Sutskever et al. 2013)", "torch.optim.SGD", "1 x params",
            defaults={"nesterov": True}, fused_on_cuda=True,
            reference="optbench.optim.reference.sgd.SGD",
        ),
        OptimizerInfo(
            "adagrad", "per-coordinate LR from the sum of squared gradients (Duchi et al. 2011)",
            "torch.optim.Adagrad", "1 x params",
            reference="optbench.optim.reference.adagrad.Adagrad",
        ),
        OptimizerInfo(
            "rmsprop", "gradient over a running RMS (Hinton 2012); optional momentum",
            "torch.optim.RMSprop", "1 x params (2 x with momentum)",
            reference="optbench.optim.reference.rmsprop.RMSprop",
        ),
        OptimizerInfo(
            "adam", "Adam, weight decay as L2 in the gradient (Kingma & Ba 2015)", "torch.optim.Adam",
            _ADAM_STATE, fused_on_cuda=True,
            reference="optbench.optim.reference.adam.Adam",
        ),
        OptimizerInfo(
            "adamw", "Adam with decoupled weight decay (Loshchilov & Hutter 2019)", "torch.optim.AdamW",
            _ADAM_STATE, fused_on_cuda=True,
            reference="optbench.optim.reference.adam.AdamW",
        ),
        OptimizerInfo(
            "nadam", "Adam with Nesterov momentum (Dozat 2016)", "torch.optim.NAdam",
            _ADAM_STATE,
        ),
        OptimizerInfo(
            "radam", "Adam with a rectified warm-up of the adaptive LR (Liu et al. 2020)",
            "torch.optim.RAdam", _ADAM_STATE,
        ),
        OptimizerInfo(
            "lamb", "Adam update scaled per layer by a trust ratio (You et al. 2020)", _PO + "Lamb",
            _ADAM_STATE,
            reference="optbench.optim.reference.lamb.Lamb",
        ),
        OptimizerInfo(
            "lars", "momentum SGD scaled per layer by a trust ratio (You et al. 2017)", _PO + "LARS",
            "1 x params",
        ),
        OptimizerInfo(
            "adafactor", "factored second moments, no first moment (Shazeer & Stern 2018)",
            "torch.optim.Adafactor", "row + column factors of the last two dims (0.7 x on ResNet-18)",
        ),
        OptimizerInfo(
            "lion", "sign of an interpolated momentum (Chen et al. 2023)", _PO + "Lion",
            "1 x params",
            reference="optbench.optim.reference.lion.Lion",
        ),
        OptimizerInfo(
            "adam8bit", "Adam with block-wise 8-bit states (Dettmers et al. 2022)", "bitsandbytes.optim.Adam8bit",
            "~0.5 x params (two 8-bit states)",
        ),
        OptimizerInfo(
            "adamw8bit", "AdamW with block-wise 8-bit states (Dettmers et al. 2022)",
            "bitsandbytes.optim.AdamW8bit", "~0.5 x params (two 8-bit states)",
        ),
        OptimizerInfo(
            "sophia", "clipped Newton-like step from a Hutchinson Hessian diagonal (Liu et al. 2024)",
            _PO + "SophiaH", "3 x params (momentum, Hessian EMA, last estimate)", hessian=True,
        ),
        OptimizerInfo(
            "muon", "orthogonalised momentum for matrices, AdamW for the rest (Jordan et al. 2024)",
            _PO + "Muon", "1 x matrices, 2 x the rest", builder="optbench.optim.muon.build_muon",
            own_keys=_ADAMW_KEYS,
        ),
        OptimizerInfo(
            "schedule_free", "Schedule-Free AdamW: no LR schedule needed (Defazio et al. 2024)",
            _PO + "ScheduleFreeAdamW", "2 x params", schedule_free=True,
        ),
        OptimizerInfo(
            "lookahead", "k fast steps of a base optimizer, then a step of the slow weights (Zhang et al. 2019)",
            _PO + "Lookahead", "base + 1 x params",
            builder="optbench.optim.lookahead.build_lookahead", own_keys=("base", "k", "alpha"),
        ),
        OptimizerInfo(
            "adopt", "Adam normalising by the previous second moment, clipped (Taniguchi et al. 2024)",
            _PO + "ADOPT", _ADAM_STATE,
            reference="optbench.optim.reference.adopt.ADOPT",
        ),
        OptimizerInfo(
            "laprop", "momentum of the RMS-normalised gradient, Adam's order swapped (Ziyin et al. 2020)",
            _PO + "LaProp", _ADAM_STATE,
        ),
        OptimizerInfo(
            "ademamix", "Adam plus a slow second momentum that keeps old gradients (Pagliardini et al. 2024)",
            _PO + "AdEMAMix", "3 x params",
        ),
        OptimizerInfo(
            "mars", "AdamW on a variance-reduced gradient, MARS-AdamW (Yuan et al. 2024)", _PO + "MARS",
            "3 x params (moments, last gradient)",
        ),
        OptimizerInfo(
            "adam_mini", "Adam with one second moment per parameter block (Zhang et al. 2024)",
            _PO + "AdamMini", "1 x params + 1 per tensor",
            builder="optbench.optim.adam_mini.build_adam_mini",
        ),
        OptimizerInfo(
            "cadamw", "Cautious AdamW: steps only where the update agrees with the gradient (Liang et al. 2024)",
            _PO + "AdamP", _ADAM_STATE, defaults={"delta": 0.0, "cautious": True},
            reference="optbench.optim.reference.cautious.CautiousAdamW",
        ),
        OptimizerInfo(
            "clion", "Cautious Lion: Lion's sign step, masked where it disagrees with the gradient (Liang et al. 2024)",
            _PO + "Lion", "1 x params", defaults={"cautious": True},
        ),
        OptimizerInfo(
            "soap", "Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al. 2024)", _PO + "SOAP",
            "2 x params + 2 d x d per dimension (2.6 x on ResNet-18)",
        ),
        OptimizerInfo(
            "shampoo", "one preconditioner factor per tensor dimension, L^(-1/2k) (Gupta et al. 2018)",
            _PO + "Shampoo", "2 d x d per dimension: factor, inverse root (2.2 x on ResNet-18)",
        ),
        OptimizerInfo(
            "kron", "PSGD with Kronecker-factored preconditioners (Li 2018)", _PO + "Kron",
            "1 x params + a d x d factor per dimension (1.3 x on ResNet-18)",
        ),
        OptimizerInfo(
            "normuon", "Muon with a per-neuron second moment of the orthogonalised update (Li et al. 2025)",
            _PO + "NorMuon", "1 x matrices + 1 per row, 2 x the rest (1.0 x on ResNet-18)",
            builder="optbench.optim.muon.build_normuon", own_keys=_ADAMW_KEYS,
        ),
        OptimizerInfo(
            "muon_sgd", "airbench94_muon's split: weight-normalised Muon for filters, Nesterov SGD for the rest",
            "optbench.optim.muon_sgd.FilterMuon", "1 x params",
            builder="optbench.optim.muon_sgd.build_muon_sgd",
            own_keys=("sgd_lr", "sgd_momentum", "weight_decay"),
        ),
        OptimizerInfo(
            "torch_muon", "torch's Muon for 2-D hidden matrices, AdamW for the rest (Jordan et al. 2024)",
            "torch.optim.Muon", "1 x 2-D matrices, 2 x the rest (2.0 x on ResNet-18: its kernels are 4-D)",
            builder="optbench.optim.torch_muon.build_torch_muon", own_keys=_ADAMW_KEYS,
        ),
        OptimizerInfo(
            "prodigy", "self-tuning Adam: estimates its own step size d (Mishchenko & Defazio 2024)",
            _PO + "Prodigy", "4 x params (moments, s, initial weights)", self_tuning=True,
        ),
        OptimizerInfo(
            "dadapt_adam", "self-tuning Adam by D-Adaptation (Defazio & Mishchenko 2023)", _PO + "DAdaptAdam",
            "3 x params (moments, s)", self_tuning=True,
        ),
    ]
}  # fmt: skip


ENTRY_POINT_GROUP = "optbench.optimizers"
# The name of a config with a `target`, and of configs/optimizer/custom.yaml.
CUSTOM = "custom"


@functools.cache
def entry_point_optimizers() -> dict[str, OptimizerInfo]:
    """The optimizers installed packages register: each entry point of the group names an
    `OptimizerInfo` whose backend is the package's class and whose `config` documents it."""
    found = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {entry.name} = {entry.value}"
        try:
            info = entry.load()
        except Exception as err:
            raise UserError(f"{where} does not load: {type(err).__name__}: {err}") from None
        if not isinstance(info, OptimizerInfo):
            raise UserError(f"{where} must name an optbench.optim.OptimizerInfo, got {info!r}")
        if entry.name in OPTIMIZERS or info.name != entry.name:
            raise UserError(f"{where}: the name must be its OptimizerInfo's and not optbench's own")
        origin = entry.dist.name if entry.dist is not None else entry.value
        found[entry.name] = OptimizerInfo(
            **{**info.__dict__, "origin": origin, "config": dict(info.config or {})}
        )
    return found


def store_entry_point_configs() -> None:
    """Make `optimizer=NAME` select each entry point's documented config, through Hydra's
    ConfigStore (its file would otherwise have to sit in configs/optimizer/)."""
    from hydra.core.config_store import ConfigStore

    for name, info in entry_point_optimizers().items():
        ConfigStore.instance().store(
            group="optimizer", name=name, node={"name": name, **info.config}
        )


def all_optimizers() -> dict[str, OptimizerInfo]:
    """optbench's optimizers, then those installed packages register."""
    return OPTIMIZERS | entry_point_optimizers()


def optimizer_info(name: str, target: str | None = None) -> OptimizerInfo:
    """The optimizer `name` selects, or, given a `target`, the user's class it names (a
    dotted path as the name, `mypkg.opt.MyAdam`, is that class too)."""
    if target is None and "." in name:
        name, target = CUSTOM, name
    if target is not None:
        return target_optimizer(name, target)
    known = all_optimizers()
    if name not in known:
        raise UserError(f"unknown optimizer '{name}'; choose from {', '.join(known)}")
    return known[name]


def info_of(cfg: DictConfig) -> OptimizerInfo:
    """The optimizer an `optimizer:` config describes."""
    if "target" in list(cfg) and OmegaConf.is_missing(cfg, "target"):  # `in cfg` skips a ???
        raise UserError(
            f"optimizer={cfg.name} needs optimizer.target, the import path of your optimizer "
            "class (e.g. optimizer.target=mypkg.opt.MyAdam)"
        )
    return optimizer_info(cfg.name, cfg.get("target"))


def target_optimizer(name: str, target: str) -> OptimizerInfo:
    """A user's optimizer class given by import path (`optimizer.target=mypkg.opt.MyAdam`)."""
    if name in all_optimizers():
        raise UserError(
            f"optimizer.name={name} is optbench's own optimizer; name yours something else "
            "(or drop optimizer.target)"
        )
    import torch  # the registry itself is read without torch (optbench optimizers, report)

    cls = import_object(target, "optimizer.target")
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise UserError(
            f"optimizer.target={target} is not a torch.optim.Optimizer subclass "
            f"(it is {_kind(cls)})"
        )
    doc = (inspect.getdoc(cls) or "").strip().splitlines()
    return OptimizerInfo(
        name, doc[0] if doc else f"{cls.__name__} from {cls.__module__}", target, "?",
        origin="target",
    )  # fmt: skip


def _kind(obj: Any) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__name__}"
    if callable(obj):
        return f"the function {getattr(obj, '__name__', obj)}"
    return f"a {type(obj).__name__}"


def load_object(dotted_path: str) -> Any:
    """Import `package.module.Name` lazily; a missing package is the user's to install."""
    module_name, _, attr = dotted_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(
            f"{dotted_path} needs the package '{err.name}': pip install {err.name}"
        ) from None
    return getattr(module, attr)


def load_backend(info: OptimizerInfo) -> type:
    """The class behind `info`: optbench's own with an install hint, a user's as they named it."""
    if info.origin == "optbench":
        return load_object(info.backend)
    return import_object(info.backend, f"optimizer={info.name}'s class")
