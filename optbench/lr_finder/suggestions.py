"""Named rules that turn a range-test curve into a suggested LR, or say why they cannot.

All rules read the loss's trend (a running median, smoothed without lag) as a function of
log10(lr), up to the point the divergence climbs from, and search only the stretch where the
loss falls (from where a quarter of its drop is done to its minimum), so noise on a flat
start cannot move them:
- steepest: where the loss falls fastest per decade of LR;
- valley: fastai's rule, the middle of the longest decreasing run of the loss;
- min/10: a tenth of the LR at the lowest loss;
- cycle: Smith's (base_lr, max_lr) for cyclic and 1cycle schedules: where the loss has
  clearly begun to fall and where it stops falling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from optbench.lr_finder.curve import robust_trend
from optbench.lr_finder.range_test import Curve

RULES = ("steepest", "valley", "min/10", "cycle")
MIN_POINTS = 10  # fewer points than this say nothing about the shape of the curve
START_SHARE = 0.1  # the median of the first tenth of the points: the loss before any LR matters
FLAT_DROP = 3.0  # a drop under 3 standard deviations of the loss at the first points is no drop
FALL_STARTS = 0.25  # the loss has clearly begun to fall: a quarter of its total drop is done
FALL_ENDS = 0.1  # ... and has stopped falling: within a tenth of the drop of its minimum
STEEPEST_SHARE = 0.8  # points falling at least this share as fast as the fastest


@dataclass(frozen=True)
class Suggestion:
    rule: str
    lr: float | None  # None: no suggestion makes sense, and `reason` says why
    reason: str
    base_lr: float | None = None  # the cycle rule's lower bound

    def as_dict(self) -> dict[str, float | str | None]:
        out = {"lr": self.lr, "reason": self.reason}
        return out | ({"base_lr": self.base_lr} if self.rule == "cycle" else {})


def usable_points(curve: Curve) -> int:
    """Points up to and including the one the divergence climbs from, the bottom of the
    curve (all of them if the test reached end_lr)."""
    if curve.diverged_at is None:
        return len(curve.losses)
    return min(curve.diverged_at + 1, len(curve.losses))


def _problem(
    lrs: np.ndarray, losses: np.ndarray, trend: np.ndarray, start: float, curve: Curve
) -> str | None:
    """Why no rule can be trusted on this curve, or None."""
    if len(lrs) < MIN_POINTS:
        where = f" at lr {curve.diverged_lr:.3g}" if curve.diverged_lr is not None else ""
        return (
            f"only {len(lrs)} points before the loss diverged{where} (need {MIN_POINTS}); "
            "lower lr_find.start_lr or raise lr_find.num_iter"
        )
    drop = start - trend.min()
    if drop <= 0 or int(np.argmin(trend)) == 0:
        return f"the loss never fell below its value at lr {lrs[0]:.3g}; lower lr_find.start_lr"
    noise = float(np.std(losses[: _start_points(len(losses))]))  # before the LR matters
    if drop < FLAT_DROP * noise:
        return (
            f"the loss is flat between lr {lrs[0]:.3g} and {lrs[-1]:.3g}: it falls {drop:.3g}, "
            f"within its noise ({noise:.3g}); widen the LR range or check that the model can learn"
        )
    return None


def trend(curve: Curve, smoothing: float) -> np.ndarray:
    """The robust trend of the loss up to where the divergence climbs from: what every rule
    reads."""
    losses = np.array(curve.losses[: usable_points(curve)], dtype=float)
    return robust_trend(losses, smoothing) if len(losses) else losses


def suggest(curve: Curve, smoothing: float) -> dict[str, Suggestion]:
    """Every rule's suggestion for `curve`, each found in the stretch where the loss falls."""
    n = usable_points(curve)
    lrs = np.array(curve.lrs[:n], dtype=float)
    losses = np.array(curve.losses[:n], dtype=float)
    smoothed = trend(curve, smoothing)
    start = float(np.median(losses[: _start_points(n)])) if n else math.nan
    reason = _problem(lrs, losses, smoothed, start, curve)
    if reason is not None:
        return {rule: Suggestion(rule, None, reason) for rule in RULES}
    lowest = int(np.argmin(smoothed))
    drop = start - smoothed[lowest]
    begins = int(np.argmax(smoothed <= start - FALL_STARTS * drop))
    ends = begins + int(np.argmax(smoothed[begins:] <= smoothed[lowest] + FALL_ENDS * drop))
    falling = slice(begins, lowest + 1)
    x = np.log10(lrs)
    slope = np.gradient(smoothed, x)[falling]
    # The centre (in log10 lr) of the points falling at least 80% as fast as the fastest:
    # the extreme itself sits on a flat top that noise shifts by several points.
    steep = slope <= STEEPEST_SHARE * slope.min()
    steepest = 10 ** float(np.average(x[falling][steep], weights=-slope[steep]))
    valley = begins + _valley(smoothed[falling])
    lrs = [float(lr) for lr in lrs]  # plain floats: they end up in configs and JSON
    return {
        "steepest": Suggestion(
            "steepest", steepest, f"the loss falls fastest around lr {steepest:.3g}"
        ),
        "valley": Suggestion(
            "valley", lrs[valley], f"middle of the longest fall, lr {lrs[valley]:.3g}"
        ),
        "min/10": Suggestion(
            "min/10", lrs[lowest] / 10, f"a tenth of lr {lrs[lowest]:.3g}, where the loss is lowest"
        ),
        "cycle": Suggestion(
            "cycle",
            lrs[ends],
            f"the loss clearly falls from lr {lrs[begins]:.3g} and stops falling at {lrs[ends]:.3g}",
            base_lr=lrs[begins],
        ),
    }


def _start_points(n: int) -> int:
    return max(5, round(START_SHARE * n))


def _valley(trend: np.ndarray) -> int:
    """fastai's valley: the longest decreasing subsequence of the loss; its middle."""
    n = len(trend)
    length = [1] * n
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if trend[i] < trend[j] and length[i] < length[j] + 1:
                length[i] = length[j] + 1
            if length[end] < length[i]:
                end = i
                start = end - length[end]
    third = (end - start) / 3
    return max(0, start + int(third) + int(third / 2))
