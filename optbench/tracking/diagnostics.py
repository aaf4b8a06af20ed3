"""How the optimizer moves the weights, sampled every N steps: per parameter group, the
weight norm, the update-to-weight ratio ||w_new - w_old|| / ||w_old|| and the norm of the
momentum (first-moment) buffers. Sampling keeps the copy of the weights and the host sync
off all other steps."""

from __future__ import annotations

import torch
from torch.utils.tensorboard import SummaryWriter

from optbench.optim.momentum import momentum_norms


class StepDiagnostics:
    def __init__(self, optimizer: torch.optim.Optimizer, writer: SummaryWriter, interval: int):
        self.optimizer = optimizer
        self.writer = writer
        self.interval = interval
        self.names = [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]

    def due(self, step: int) -> bool:
        return self.interval > 0 and step % self.interval == 0

    def capture(self) -> list[list[torch.Tensor]]:
        """A copy of every group's weights before the step."""
        return [[p.detach().clone() for p in g["params"]] for g in self.optimizer.param_groups]

    @torch.no_grad()
    def write(self, step: int, before: list[list[torch.Tensor]]) -> None:
        rows = []
        for group, old in zip(self.optimizer.param_groups, before, strict=True):
            weight = torch.linalg.vector_norm(torch.stack([p.norm() for p in old]))
            update = torch.linalg.vector_norm(
                torch.stack([(p - o).norm() for p, o in zip(group["params"], old, strict=True)])
            )
            rows.append(torch.stack([weight, update / weight.clamp_min(1e-12)]))
        values = torch.stack(rows).tolist()
        for name, (weight, ratio) in zip(self.names, values, strict=True):
            self.writer.add_scalar(f"weight_norm/{name}", weight, step)
            self.writer.add_scalar(f"update_ratio/{name}", ratio, step)
        for name, norm in momentum_norms(self.optimizer).items():
            self.writer.add_scalar(f"momentum_norm/{name}", norm.item(), step)
