"""The maths of a range-test curve: the LR ladder, smoothing, and the divergence ratio."""

from __future__ import annotations

import math

import numpy as np


def lr_ladder(start: float, end: float, points: int, mode: str) -> np.ndarray:
    """`points` LRs from `start` to `end`, both included, evenly spaced in log or linear space."""
    if mode == "exp":
        return np.logspace(math.log10(start), math.log10(end), points)
    return np.linspace(start, end, points)


class DebiasedEMA:
    """Exponential moving average with Adam-style bias correction, so the first values are
    not pulled towards zero: avg_t = (beta m_{t-1} + (1 - beta) x_t) / (1 - beta^t)."""

    def __init__(self, beta: float):
        self.beta = beta
        self.mean = 0.0
        self.count = 0

    def update(self, value: float) -> float:
        self.count += 1
        self.mean = self.beta * self.mean + (1 - self.beta) * value
        return self.mean / (1 - self.beta**self.count)


def smooth(values: np.ndarray, beta: float) -> np.ndarray:
    """The debiased EMA of `values` (what the test records as smoothed_loss)."""
    ema = DebiasedEMA(beta)
    return np.array([ema.update(v) for v in values])


def zero_lag_smooth(values: np.ndarray, beta: float) -> np.ndarray:
    """The debiased EMA run forwards, then backwards over the result.

    An EMA lags its input by about beta / (1 - beta) points, which on an LR ladder shifts
    every feature to larger LRs; running it both ways cancels the lag (like filtfilt), so
    suggestions land where the raw curve has its features.
    """
    forward = smooth(values, beta)
    return smooth(forward[::-1], beta)[::-1]


def running_median(values: np.ndarray, width: int) -> np.ndarray:
    """The median of each value's window of `width` points (narrower at the ends)."""
    half = width // 2
    return np.array(
        [np.median(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]
    )


def robust_trend(values: np.ndarray, beta: float) -> np.ndarray:
    """The zero-lag smoothed running median of 5: a spike of one or two points that the
    loss recovers from is dropped instead of spread over its neighbours, where it would
    fake a fall as steep as the spike is tall."""
    return zero_lag_smooth(running_median(values, 5), beta)


def divergence_ratio(loss: float, best: float, initial: float, noise: float = 0.0) -> float:
    """How far `loss` has climbed above the best, in units of the drop from the initial loss.

    (loss - best) / (initial - best) is unchanged by adding a constant to the loss, so it
    works for offset or negative losses where loss / best does not. While the drop is no
    bigger than the curve's own noise, the noise is the unit instead: a noisy flat start is
    not a divergence, a loss that only ever rises is.
    """
    unit = max(initial - best, noise, 1e-12 * max(abs(initial), 1.0))
    return (loss - best) / unit
