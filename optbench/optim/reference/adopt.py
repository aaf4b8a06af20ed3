"""ADOPT, as `pytorch_optimizer.ADOPT` computes it, written as a plain loop over tensors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from optbench.optim.reference.base import ReferenceOptimizer
from optbench.optim.reference.checks import check_betas, check_non_negative, check_positive


class ADOPT(ReferenceOptimizer):
    """Normalise the gradient by the second moment of the steps before it, clip, then take
    momentum (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any beta2").

    Normalising by v_{t-1}, not v_t, keeps the current gradient out of its own denominator;
    the first step only initialises v. The clip of the normalised gradient to +-t^(1/4) is
    the paper's and pytorch-optimizer's default.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
    ) -> None:
        check_positive("lr", lr)
        check_betas(betas)
        check_positive("eps", eps)
        check_non_negative("weight_decay", weight_decay)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "weight_decouple": weight_decouple,
        }
        super().__init__(params, defaults)

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        for p in params:
            state = self.state_of(p, "exp_avg", "exp_avg_sq", step=0)
            state["step"] += 1
            t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad

            # p = p - lr * wd * p   (weight_decouple)   or   g = g + wd * p
            # t = 1:  v = g^2, and no step
            # u = clip(g / max(sqrt(v), eps), -t^(1/4), t^(1/4))
            # m = beta1 * m + (1 - beta1) * u
            # p = p - lr * m
            # v = beta2 * v + (1 - beta2) * g^2
            if wd != 0 and group["weight_decouple"]:
                p.mul_(1 - wd * lr)
            elif wd != 0:
                g = g.add(p, alpha=wd)
            if t == 1:
                v.addcmul_(g, g)
                continue
            clip = t**0.25
            u = g.div(v.sqrt().clamp_(min=group["eps"])).clamp_(-clip, clip)
            m.lerp_(u, 1 - beta1)
            p.add_(m, alpha=-lr)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
