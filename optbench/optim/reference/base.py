"""What every reference optimizer shares, so each file holds only its update rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class ReferenceOptimizer(torch.optim.Optimizer):
    """`step()` runs the closure, then `update(group, params)` once per parameter group with
    the group's parameters that have a gradient; subclasses write only `update`."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self.update(group, params)
        return loss

    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        raise NotImplementedError

    def state_of(self, p: Tensor, *zeros: str, **values: Any) -> dict[str, Any]:
        """`p`'s state, created on first use: `zeros` as zero tensors shaped like `p`, then `values`."""
        state = self.state[p]
        if not state:
            state.update({name: torch.zeros_like(p) for name in zeros}, **values)
        return state
