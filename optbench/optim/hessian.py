"""Hessian-diagonal estimates for second-order optimizers, computed by the trainer.

Hutchinson (1989): for probe vectors z with E[z z^T] = I (Rademacher), E[z * (H z)] is the
Hessian diagonal; H z is one extra backward pass through the gradient's graph. Any
optimizer whose `step` accepts `hessian=[...]` (one tensor per parameter) can use it.
"""

from __future__ import annotations

import torch


class HutchinsonHessian:
    def __init__(self, interval: int, samples: int = 1):
        if interval < 1 or samples < 1:
            raise ValueError("the Hessian interval and sample count must be at least 1")
        self.interval = interval
        self.samples = samples

    def due(self, steps_taken: int) -> bool:
        """Whether the optimizer's next step (after `steps_taken`) wants a fresh estimate."""
        return steps_taken % self.interval == 0

    def estimate(
        self, params: list[torch.Tensor], grads: list[torch.Tensor | None]
    ) -> list[torch.Tensor]:
        """diag(H) per parameter from `grads`, which must still carry their graph (create_graph)."""
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        diagonal = [torch.zeros_like(p) for p in params]
        for sample in range(self.samples):
            probes = [torch.randint_like(params[i], 2) * 2 - 1 for i in live]
            products = torch.autograd.grad(
                [grads[i] for i in live],
                [params[i] for i in live],
                grad_outputs=probes,
                retain_graph=sample < self.samples - 1,
            )
            for i, z, hz in zip(live, probes, products, strict=True):
                diagonal[i].addcmul_(z, hz, value=1.0 / self.samples)
        return diagonal
