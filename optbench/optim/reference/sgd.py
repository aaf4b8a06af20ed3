"""SGD with momentum in the three conventions found in the literature.

`convention` picks how the momentum buffer `v` (state `momentum_buffer`) is written:
"pytorch" is `torch.optim.SGD`; "ema" averages gradients, so it equals "pytorch" at
`lr * (1 - momentum)`, whatever the LR schedule, as long as the momentum stays constant;
"velocity" folds the LR into `v`, so under a constant LR it equals "pytorch" exactly, but an
LR change reaches the steps already in `v` only as they decay.
Written with `torch._foreach_*` ops: each rule is the same few lines for all tensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from optbench.optim.reference.base import ReferenceOptimizer
from optbench.optim.reference.checks import (
    check_choice,
    check_non_negative,
    check_positive,
    check_unit_interval,
)

CONVENTIONS = ("pytorch", "ema", "velocity")


class SGD(ReferenceOptimizer):
    """SGD with heavy-ball or Nesterov momentum in a chosen convention
    (Polyak 1964; Sutskever et al. 2013)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        convention: str = "pytorch",
    ) -> None:
        check_positive("lr", lr)
        check_unit_interval("momentum", momentum)
        check_non_negative("weight_decay", weight_decay)
        check_choice("convention", convention, CONVENTIONS)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "convention": convention,
        }
        super().__init__(params, defaults)

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        lr, mu, nesterov = group["lr"], group["momentum"], group["nesterov"]

        # g = g + weight_decay * p
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        if mu == 0:
            # p = p - lr * g
            torch._foreach_add_(params, grads, alpha=-lr)
            return

        bufs = [self.state_of(p, "momentum_buffer")["momentum_buffer"] for p in params]
        if group["convention"] == "pytorch":
            _pytorch_momentum(params, grads, bufs, lr, mu, nesterov)
        elif group["convention"] == "ema":
            _ema_momentum(params, grads, bufs, lr, mu, nesterov)
        else:
            _velocity_momentum(params, grads, bufs, lr, mu, nesterov)


def _pytorch_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    lr: float,
    mu: float,
    nesterov: bool,
) -> None:
    """The convention of torch.optim.SGD, the LR outside the buffer:

    v = mu * v + g
    d = g + mu * v    if nesterov else    d = v
    p = p - lr * d
    """
    torch._foreach_mul_(bufs, mu)
    torch._foreach_add_(bufs, grads)
    direction = torch._foreach_add(grads, bufs, alpha=mu) if nesterov else bufs
    torch._foreach_add_(params, direction, alpha=-lr)


def _ema_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    lr: float,
    beta: float,
    nesterov: bool,
) -> None:
    """An exponential moving average of gradients (as Adam's first moment, without bias correction):

    v = beta * v + (1 - beta) * g
    d = (1 - beta) * g + beta * v    if nesterov else    d = v
    p = p - lr * d
    """
    torch._foreach_mul_(bufs, beta)
    torch._foreach_add_(bufs, grads, alpha=1 - beta)
    if nesterov:
        direction = torch._foreach_mul(grads, 1 - beta)
        torch._foreach_add_(direction, bufs, alpha=beta)
    else:
        direction = bufs
    torch._foreach_add_(params, direction, alpha=-lr)


def _velocity_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    lr: float,
    mu: float,
    nesterov: bool,
) -> None:
    """The velocity form of Sutskever et al. (2013), the LR inside the buffer:

    v = mu * v - lr * g
    p = p + mu * v - lr * g    if nesterov else    p = p + v

    Nesterov's look-ahead gradient is written at the current point (Bengio et al. 2013),
    which is what makes it equal to PyTorch's Nesterov under a constant LR.
    """
    torch._foreach_mul_(bufs, mu)
    torch._foreach_add_(bufs, grads, alpha=-lr)
    if nesterov:
        torch._foreach_add_(params, bufs, alpha=mu)
        torch._foreach_add_(params, grads, alpha=-lr)
    else:
        torch._foreach_add_(params, bufs)
