"""Closed-form LR factors (lr(t) / base LR) for `torch.optim.lr_scheduler.LambdaLR`.

torch's cosine schedulers take one absolute `eta_min` for all parameter groups, so a floor
that is a ratio of each group's own LR needs the closed form. These are callable objects,
not lambdas, so `LambdaLR.state_dict()` saves them as plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def half_cosine(progress: float) -> float:
    """1 at progress 0, 0 at progress 1."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class CosineFactor:
    """From 1 at step 0 down a half cosine to `floor` at step `last`, then flat."""

    last: int
    floor: float

    def __call__(self, step: int) -> float:
        return self.floor + (1.0 - self.floor) * half_cosine(min(step, self.last) / self.last)


@dataclass
class CosineRestartsFactor:
    """SGDR (Loshchilov & Hutter 2017): cosine cycles of `period` steps, each `mult` x longer."""

    period: int
    mult: int
    floor: float

    def __call__(self, step: int) -> float:
        length, position = self.period, step
        while position >= length:
            position -= length
            length *= self.mult
        return self.floor + (1.0 - self.floor) * half_cosine(position / length)
