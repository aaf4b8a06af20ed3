"""LAMB, as `pytorch_optimizer.Lamb` computes it with its defaults.

That is version 3 of the paper's algorithm with pytorch-optimizer's choices: the first moment
averages gradients (`grad_averaging`), only it is bias-corrected (through the step size), the
weight decay is decoupled, the weight norm is clamped to 10 and a zero norm gives a trust
ratio of 1. Written as a plain loop over tensors: each line is one line of the rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from optbench.optim.reference.base import ReferenceOptimizer
from optbench.optim.reference.checks import check_betas, check_non_negative, check_positive

WEIGHT_NORM_CLAMP = 10.0


class Lamb(ReferenceOptimizer):
    """Scale each tensor's Adam step by the trust ratio ||p|| / ||step|| (You et al. 2020)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        check_positive("lr", lr)
        check_betas(betas)
        check_positive("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for p in params:
            state = self.state_of(p, "exp_avg", "exp_avg_sq", step=0)
            state["step"] += 1
            t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad

            # p = p * (1 - lr * wd)
            # m = beta1 * m + (1 - beta1) * g
            # v = beta2 * v + (1 - beta2) * g^2
            # u = m / (sqrt(v) + eps)
            # w = min(||p||, 10)
            # r = w / (||u|| + eps)   if ||p|| > 0 and ||u|| > 0   else   1
            # p = p - lr / (1 - beta1^t) * r * u
            if group["weight_decay"] != 0:
                p.mul_(1 - group["weight_decay"] * lr)
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            # Times the reciprocal, not divided, as pytorch-optimizer does: equal bit for bit.
            u = v.sqrt().add_(eps).reciprocal_().mul_(m)
            w = torch.linalg.vector_norm(p).clamp_(max=WEIGHT_NORM_CLAMP)
            u_norm = torch.linalg.vector_norm(u)
            r = torch.where((w != 0) & (u_norm != 0), w / (u_norm + eps), 1.0)
            p.add_(u.mul_(r), alpha=-lr / (1 - beta1**t))
