"""airbench94's lookahead: every k steps the weights move to an EMA of themselves.

Keller Jordan's airbench94 (after hlb-cifar10) keeps a slow copy `ema` of every floating-point
tensor of the model's state (weights and batch-norm statistics) and, after optimizer step s of
T (counted from 1), runs

    if s % k == 0:  d = decay^k * (s / T)^power;  ema <- d * ema + (1 - d) * w;  w <- ema
    if s == T:      w <- ema                      (decay 1: the run ends on the slow weights)

The decay grows from 0 to decay^k, so the rule does nothing early on and averages more and
more as the LR decays. `every: 0` turns it off. Its state (the EMA) is checkpointed, so a
resumed run ends on the weights an uninterrupted one does.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from optbench.checks import require_int
from optbench.errors import UserError


class Lookahead:
    def __init__(self, model: nn.Module, cfg: DictConfig, total_steps: int):
        self.every = require_int(cfg.every, "trainer.lookahead.every", 0)
        self.decay, self.power, self.total_steps = float(cfg.decay), float(cfg.power), total_steps
        if not 0 <= self.decay <= 1:
            raise UserError(f"trainer.lookahead.decay must be in [0, 1], got {cfg.decay}")
        if self.power < 0:
            raise UserError(f"trainer.lookahead.power must be at least 0, got {cfg.power}")
        self.tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.ema = [t.detach().clone() for t in self.tensors] if self.every else []

    def decay_at(self, step: int) -> float:
        return self.decay**self.every * (step / self.total_steps) ** self.power

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Apply the rule after optimizer step `step` (counted from 1); off: nothing."""
        if not self.every:
            return
        if step % self.every == 0:
            torch._foreach_lerp_(self.ema, self.tensors, 1 - self.decay_at(step))
            torch._foreach_copy_(self.tensors, self.ema)
        if step == self.total_steps:
            torch._foreach_copy_(self.tensors, self.ema)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        for ema, saved in zip(self.ema, state["ema"] if self.every else [], strict=True):
            ema.copy_(saved)  # saved on the CPU or another device: copy_ moves it
