"""RMSprop, optionally centered and with heavy-ball or Nesterov momentum.

Written as a plain loop over tensors: each line is one line of the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from optbench.optim.reference.base import ReferenceOptimizer
from optbench.optim.reference.checks import (
    check_non_negative,
    check_positive,
    check_unit_interval,
)


class RMSprop(ReferenceOptimizer):
    """Divide the gradient by a running root mean square of past gradients (Hinton 2012, lecture 6e).

    With `nesterov=True` the momentum buffer is used as PyTorch's SGD uses it, on the
    RMS-normalised gradient: the rule of `optax.rmsprop(momentum=mu, nesterov=True)`
    (`optax.trace` with `nesterov=True`) with PyTorch's `eps` outside the square root and
    the LR outside the buffer. `torch.optim.RMSprop` has no Nesterov option.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        nesterov: bool = False,
    ) -> None:
        check_positive("lr", lr)
        check_unit_interval("alpha", alpha)
        check_positive("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        check_unit_interval("momentum", momentum)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, alpha, mu = group["lr"], group["alpha"], group["momentum"]
        for p in params:
            state = self.state[p]
            if not state:
                state["square_avg"] = torch.zeros_like(p)
                if group["centered"]:
                    state["grad_avg"] = torch.zeros_like(p)
                if mu > 0:
                    state["momentum_buffer"] = torch.zeros_like(p)
            g = p.grad

            # g = g + weight_decay * p
            # s = alpha * s + (1 - alpha) * g^2
            # m = alpha * m + (1 - alpha) * g                         (centered)
            # r = sqrt(s - m^2) + eps   if centered else   sqrt(s) + eps
            if group["weight_decay"] != 0:
                g = g.add(p, alpha=group["weight_decay"])
            s = state["square_avg"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
            if group["centered"]:
                m = state["grad_avg"].lerp_(g, 1 - alpha)
                r = s.addcmul(m, m, value=-1).sqrt_().add_(group["eps"])
            else:
                r = s.sqrt().add_(group["eps"])

            if mu == 0:
                # p = p - lr * g / r
                p.addcdiv_(g, r, value=-lr)
                continue
            # v = mu * v + g / r
            # p = p - lr * (g / r + mu * v)   if nesterov else   p = p - lr * v
            v = state["momentum_buffer"].mul_(mu).addcdiv_(g, r)
            if group["nesterov"]:
                p.add_((g / r).add_(v, alpha=mu), alpha=-lr)
            else:
                p.add_(v, alpha=-lr)
