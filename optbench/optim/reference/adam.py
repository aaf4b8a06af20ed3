"""Adam and AdamW, written as a plain loop over tensors: each line is one line of the rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from optbench.optim.reference.base import ReferenceOptimizer
from optbench.optim.reference.checks import check_betas, check_non_negative, check_positive


class Adam(ReferenceOptimizer):
    """Step along bias-corrected moving averages of the gradient and its square (Kingma & Ba 2015).

    Weight decay is L2, added to the gradient (coupled); `AdamW` decouples it.
    """

    decoupled_weight_decay = False

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        check_positive("lr", lr)
        check_betas(betas)
        check_positive("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        for p in params:
            state = self.state_of(p, "exp_avg", "exp_avg_sq", step=0)
            state["step"] += 1
            t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad

            # p = p - lr * wd * p   (AdamW)   or   g = g + wd * p   (Adam)
            # m = beta1 * m + (1 - beta1) * g
            # v = beta2 * v + (1 - beta2) * g^2
            # p = p - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)
            if wd != 0 and self.decoupled_weight_decay:
                p.mul_(1 - lr * wd)
            elif wd != 0:
                g = g.add(p, alpha=wd)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(group["eps"])
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


class AdamW(Adam):
    """Adam with weight decay decoupled from the gradient, `p -= lr * wd * p` (Loshchilov & Hutter 2019)."""

    decoupled_weight_decay = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
