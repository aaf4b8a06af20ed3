"""Adagrad, written as a plain loop over tensors: each line is one line of the rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from optbench.optim.reference.base import ReferenceOptimizer
from optbench.optim.reference.checks import check_non_negative, check_positive


class Adagrad(ReferenceOptimizer):
    """Divide each coordinate's step by the root of its summed squared gradients (Duchi et al. 2011)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        check_positive("lr", lr)
        check_non_negative("lr_decay", lr_decay)
        check_non_negative("weight_decay", weight_decay)
        check_non_negative("initial_accumulator_value", initial_accumulator_value)
        check_positive("eps", eps)
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
        }
        super().__init__(params, defaults)

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["sum"] = torch.full_like(p, group["initial_accumulator_value"])
            state["step"] += 1
            t, s, g = state["step"], state["sum"], p.grad

            # g = g + weight_decay * p
            # lr_t = lr / (1 + (t - 1) * lr_decay)
            # s = s + g^2
            # p = p - lr_t * g / (sqrt(s) + eps)
            if group["weight_decay"] != 0:
                g = g.add(p, alpha=group["weight_decay"])
            lr_t = group["lr"] / (1 + (t - 1) * group["lr_decay"])
            s.addcmul_(g, g)
            p.addcdiv_(g, s.sqrt().add_(group["eps"]), value=-lr_t)
