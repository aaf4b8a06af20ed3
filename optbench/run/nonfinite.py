"""Keeping NaN/Inf out of the weights without waiting for the host at every step.

A check on the host (`bool(isfinite(loss))`) blocks the CPU until the GPU has finished the
step, so it cannot queue the next one. `DeferredGuard` keeps the decision on the device:
before each step it copies the weights, buffers and optimizer state (on the device), and
after the optimizer step it puts back the copy wherever the step was not finite, with
`torch.where`, so no value of a bad step is ever kept. The flags it records (how many steps
were skipped, the first bad step and its loss) are read once per logging interval.

Why this and not the alternatives: fused optimizers' `found_inf` covers only torch's fused
Adam/AdamW/SGD; zeroing the gradient still lets momentum and weight decay move the weights;
rolling back a whole interval loses the good steps around a bad one. The cost is one copy of
the model and optimizer state per step (device memory and bandwidth, no sync). Host-side
counters (a group's integer `step` in some pytorch-optimizer classes) still advance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from optbench.run.sync import to_host


@dataclass(frozen=True)
class GuardReport:
    skipped: int  # steps whose update was discarded since the last report
    first_bad_step: int | None
    first_bad_loss: float | None


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor of the optimizer's state, a wrapped base optimizer's (Lookahead) included."""
    tensors = []
    while optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        optimizer = getattr(optimizer, "optimizer", None)
    return tensors


class DeferredGuard:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 *, stop_on_first: bool):  # fmt: skip
        self.model, self.optimizer, self.stop_on_first = model, optimizer, stop_on_first
        self.poisoned = torch.zeros((), dtype=torch.bool, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.first_bad_loss = torch.zeros((), device=device)
        self._saved: list[torch.Tensor] = []
        self._tensors: list[torch.Tensor] = []
        self.ready = (
            False  # the first step, which creates the optimizer state, is checked on the host
        )

    @torch.no_grad()
    def begin(self) -> None:
        """Copy what the step may change, before its forward pass (batch-norm statistics too)."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        buffers = list(self.model.buffers())
        self._tensors = params + buffers + optimizer_state_tensors(self.optimizer)
        self._saved = [t.clone() for t in self._tensors]

    @torch.no_grad()
    def end(self, finite: torch.Tensor, loss: torch.Tensor, step: int) -> None:
        """Keep the step's values where it was finite (and, with stop, nothing after a bad one)."""
        keep = finite & ~self.poisoned if self.stop_on_first else finite
        for tensor, saved in zip(self._tensors, self._saved, strict=True):
            tensor.copy_(torch.where(keep, tensor, saved))
        self._saved = []
        self.ready = True
        bad = ~finite
        first = bad & (self.first_bad_step < 0)
        self.first_bad_step.copy_(torch.where(first, step, self.first_bad_step))
        self.first_bad_loss.copy_(torch.where(first, loss.float(), self.first_bad_loss))
        self.poisoned |= bad
        self.skipped += bad.long()

    def report(self) -> GuardReport:
        """The flags since the last report (one host-device sync); counts restart."""
        skipped, step, loss = to_host(
            torch.stack([self.skipped.float(), self.first_bad_step.float(), self.first_bad_loss])
        )
        self.skipped.zero_()
        if not self.stop_on_first:
            self.first_bad_step.fill_(-1)
        return GuardReport(
            int(skipped), None if step < 0 else int(step), None if step < 0 else loss
        )
