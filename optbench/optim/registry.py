"""Every optimizer optbench can run, described once as data (after timm's `OptimInfo`).

Adding an optimizer is adding one `OptimizerInfo` here and one file in `configs/optimizer/`.
Implementations are named by dotted path and imported only when asked for, so a missing
optional backend fails for that optimizer alone, with a one-line message.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import UserError


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    description: str
    backend: str  # dotted path of the class that implements it
    state: str  # optimizer state per parameter element, e.g. "2 x params" for Adam
    defaults: dict[str, Any] = field(default_factory=dict)  # fixed constructor arguments
    momentum: str | None = "momentum"  # group key of the momentum coefficient ("betas": beta1)
    cpu: bool = True
    fused_on_cuda: bool = False  # the constructor takes fused=True on CUDA
    reference: str | None = None  # dotted path of optbench's from-scratch implementation
    hessian: bool = False  # wants Hessian-diagonal estimates from the trainer (Sophia)
    schedule_free: bool = False  # needs optimizer.train()/.eval() around evaluation
    builder: str | None = None  # dotted path of a function(groups, hparams, device) -> optimizer


OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in [
        OptimizerInfo(
            "sgd",
            "plain stochastic gradient descent",
            "torch.optim.SGD",
            "0",
            defaults={"momentum": 0.0},
            fused_on_cuda=True,
        ),
        OptimizerInfo(
            "momentum",
            "SGD with heavy-ball momentum (Polyak 1964)",
            "torch.optim.SGD",
            "1 x params",
            fused_on_cuda=True,
        ),
        OptimizerInfo(
            "nesterov",
            "SGD with Nesterov momentum (Sutskever et al. 2013)",
            "torch.optim.SGD",
            "1 x params",
            defaults={"nesterov": True},
            fused_on_cuda=True,
        ),
        OptimizerInfo(
            "adam",
            "Adam with L2 weight decay added to the gradient (Kingma & Ba 2015)",
            "torch.optim.Adam",
            "2 x params",
            momentum="betas",
            fused_on_cuda=True,
        ),
        OptimizerInfo(
            "adamw",
            "Adam with decoupled weight decay (Loshchilov & Hutter 2019)",
            "torch.optim.AdamW",
            "2 x params",
            momentum="betas",
            fused_on_cuda=True,
        ),
    ]
}


def optimizer_info(name: str) -> OptimizerInfo:
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer '{name}'; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


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
