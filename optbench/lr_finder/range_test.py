"""The LR range test loop (Smith 2015, 2018), independent of any particular model.

At each point of an LR ladder the test takes `batches_per_step` optimizer steps at that LR
and records the loss (their mean, or a held-out loss) and its debiased EMA. It stops once
the smoothed loss has climbed `diverge_factor` times the drop so far (or the start's
jitter, if larger) above its best for `patience` points in a row, or is not finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig

from optbench.checks import require_fraction, require_int, require_number, require_positive
from optbench.errors import UserError
from optbench.lr_finder.curve import DebiasedEMA, divergence_ratio, lr_ladder
from optbench.run.step import NonFiniteStep

# The first points measure the curve's own jitter; no divergence is declared before that.
NOISE_POINTS = 5
END_OF_RANGE = "reached end_lr"
DIVERGED = "diverged"
NON_FINITE = "non-finite loss"
# A raw loss within half the drop (or the start's jitter, if larger) of the lowest one is
# still at the bottom of the curve, not climbing out of it.
NEAR_BOTTOM = 0.5


@dataclass(frozen=True)
class RangeTestSettings:
    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 100  # LR points, both ends included
    mode: str = "exp"  # exp | linear spacing
    batches_per_step: int = (
        1  # optimizer steps (one batch each) at each LR; the point's loss is their mean
    )
    smoothing: float = 0.85  # beta of the debiased EMA
    diverge_factor: float = 4.0
    patience: int = 3  # points in a row over the threshold before stopping

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RangeTestSettings:
        """Read and check the range test's keys of the `lr_find:` block."""
        start = require_number(cfg.start_lr, "lr_find.start_lr")
        end = require_number(cfg.end_lr, "lr_find.end_lr")
        if not 0 < start < end:
            raise UserError(f"lr_find needs 0 < start_lr < end_lr, got {start:g} and {end:g}")
        if cfg.mode not in ("exp", "linear"):
            raise UserError(f"lr_find.mode must be exp or linear, got '{cfg.mode}'")
        return cls(
            start_lr=start,
            end_lr=end,
            num_iter=require_int(cfg.num_iter, "lr_find.num_iter", 2),
            mode=cfg.mode,
            batches_per_step=require_int(cfg.batches_per_step, "lr_find.batches_per_step", 1),
            smoothing=require_fraction(cfg.smoothing, "lr_find.smoothing"),
            diverge_factor=require_positive(cfg.diverge_factor, "lr_find.diverge_factor"),
            patience=require_int(cfg.patience, "lr_find.patience", 1),
        )


@dataclass
class Curve:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # raw, one per LR point
    smoothed: list[float] = field(default_factory=list)  # the debiased EMA, as the test saw it
    stop_reason: str = END_OF_RANGE
    diverged_at: int | None = None  # index of the point the divergence climbs from

    @property
    def diverged_lr(self) -> float | None:
        return None if self.diverged_at is None else self.lrs[self.diverged_at]


def run_range_test(
    take_step: Callable[[], float],
    set_lr: Callable[[float], None],
    settings: RangeTestSettings,
    measure: Callable[[], float] | None = None,
) -> Curve:
    """Walk the LR ladder; `take_step()` steps the optimizer once and returns its loss.

    With `measure`, the recorded loss is `measure()` after the point's steps (a held-out
    loss) instead of the mean training loss.
    """
    ladder = lr_ladder(settings.start_lr, settings.end_lr, settings.num_iter, settings.mode)
    ema = DebiasedEMA(settings.smoothing)
    curve = Curve()
    best, noise, over = math.inf, 0.0, 0
    for lr in ladder:
        set_lr(float(lr))
        try:
            losses = [take_step() for _ in range(settings.batches_per_step)]
            loss = measure() if measure is not None else float(np.mean(losses))
        except NonFiniteStep:
            loss = math.nan
        curve.lrs.append(float(lr))
        curve.losses.append(loss)
        if not math.isfinite(loss):
            curve.smoothed.append(math.nan)
            curve.stop_reason = NON_FINITE
            break
        smoothed = ema.update(loss)
        curve.smoothed.append(smoothed)
        best = min(best, smoothed)
        if len(curve.losses) < NOISE_POINTS:
            continue
        if len(curve.losses) == NOISE_POINTS:
            noise = float(np.std(curve.losses))
        ratio = divergence_ratio(smoothed, best, curve.smoothed[0], noise)
        over = over + 1 if ratio > settings.diverge_factor else 0
        if over >= settings.patience:
            curve.stop_reason = DIVERGED
            break
    if curve.stop_reason != END_OF_RANGE:
        curve.diverged_at = _divergence_onset(curve, noise)
    return curve


def _divergence_onset(curve: Curve, noise: float) -> int:
    """The point the climb that stopped the test starts from, read off the raw losses (the
    EMA lags by several points).

    The climb is the first one out of the curve's bottom that never comes back to it: a
    spike that partly recovers before the test stops is part of it (left in the usable
    stretch, it would lift the trend the rules read), a spike that falls back to the bottom
    is not. It is followed back along its unbroken rise, so in a deterministic problem the
    onset is the minimum itself.
    """
    losses = np.array(curve.losses, dtype=float)
    if not np.isfinite(losses[0]):
        return 0
    losses[~np.isfinite(losses)] = np.inf  # a non-finite loss is as far from the bottom as any
    lowest = int(np.argmin(losses))
    onset = max(
        i
        for i in range(lowest, len(losses))
        if divergence_ratio(losses[i], losses[lowest], losses[0], noise) <= NEAR_BOTTOM
    )
    while onset > lowest and losses[onset - 1] < losses[onset]:
        onset -= 1
    return onset
