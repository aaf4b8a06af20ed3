"""Cautious AdamW, as `pytorch_optimizer.AdamP(cautious=True, delta=0)` computes it.

pytorch-optimizer has no cautious AdamW class; AdamP with `delta=0` never applies its
projection (it needs a cosine similarity below 0), which leaves AdamW, with eps added to
sqrt(v) before the bias correction and the cautious mask on the first moment.
Written as a plain loop over tensors: each line is one line of the rule.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from optbench.optim.reference.adam import Adam


class CautiousAdamW(Adam):
    """AdamW that steps only in the coordinates where its update and the gradient agree in
    sign, rescaled to keep the step's size (Liang et al. 2024, "Cautious Optimizers").

    The mask is computed on m, whose sign is the update's (the denominator is positive).
    Its arguments and their checks are Adam's (weight decay decoupled, in `update`).
    """

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        for p in params:
            state = self.state_of(p, "exp_avg", "exp_avg_sq", step=0)
            state["step"] += 1
            t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad

            # m = beta1 * m + (1 - beta1) * g
            # v = beta2 * v + (1 - beta2) * g^2
            # phi = 1[m * g > 0] * n / (sum(1[m * g > 0]) + 1)       (n: elements of p)
            # p = p * (1 - lr * wd)
            # p = p - lr / (1 - beta1^t) * (m * phi) * sqrt(1 - beta2^t) / (sqrt(v) + eps)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            # The reciprocal times the bias correction, as pytorch-optimizer writes it.
            inv_denom = v.sqrt().add_(group["eps"]).reciprocal_().mul_(math.sqrt(1 - beta2**t))
            phi = (m * g > 0).to(g.dtype)
            phi.mul_(phi.numel() / (phi.sum() + 1))
            update = (m * phi).mul_(inv_denom)
            if wd != 0:
                p.mul_(1 - wd * lr)
            p.add_(update, alpha=-lr / (1 - beta1**t))
