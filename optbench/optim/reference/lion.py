"""Lion, as `pytorch_optimizer.Lion` computes it with its defaults (decoupled weight decay).

Written with `torch._foreach_*` ops: the rule is the same four lines for all tensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from optbench.optim.reference.base import ReferenceOptimizer
from optbench.optim.reference.checks import check_betas, check_non_negative, check_positive


class Lion(ReferenceOptimizer):
    """Step by the sign of an interpolation of momentum and gradient (Chen et al. 2023)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        check_positive("lr", lr)
        check_betas(betas)
        check_non_negative("weight_decay", weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        ms = [self.state_of(p, "exp_avg")["exp_avg"] for p in params]
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]

        # p = p * (1 - lr * wd)
        # u = sign(beta1 * m + (1 - beta1) * g)
        # m = beta2 * m + (1 - beta2) * g
        # p = p - lr * u
        if wd != 0:
            torch._foreach_mul_(params, 1 - wd * lr)
        updates = torch._foreach_lerp(ms, grads, 1 - beta1)
        torch._foreach_sign_(updates)
        torch._foreach_lerp_(ms, grads, 1 - beta2)
        torch._foreach_add_(params, updates, alpha=-lr)
