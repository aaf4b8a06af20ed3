"""Closed-form LR factors: lr(t) = base LR x a group's `lr_scale` x factor(t).

Each factor is a small frozen dataclass: a pure function of the optimizer step `t`, so the
LR range, the warm-up end and the peak are read off it, and resuming is restoring `t`.
torch's schedulers stay as the test oracles (tests/test_schedules.py compares every step).
Where a scheduler also cycles momentum (1cycle, cyclic), `momentum(t)` gives it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass


def half_cosine(progress: float) -> float:
    """1 at progress 0, 0 at progress 1."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Constant:
    def __call__(self, t: int) -> float:
        return 1.0


@dataclass(frozen=True)
class Table:
    """A factor computed once per step (a user's function), held at its last value after."""

    values: tuple[float, ...]

    def __call__(self, t: int) -> float:
        return self.values[min(t, len(self.values) - 1)]


@dataclass(frozen=True)
class Steps:
    """x gamma at each milestone step (StepLR: milestones every `step_size`)."""

    milestones: tuple[int, ...]
    gamma: float
    every: int = 0  # > 0: a milestone every `every` steps, with no end

    def __call__(self, t: int) -> float:
        drops = t // self.every if self.every else bisect.bisect_right(self.milestones, t)
        return self.gamma**drops


@dataclass(frozen=True)
class Exponential:
    gamma: float  # per step

    def __call__(self, t: int) -> float:
        return self.gamma**t


@dataclass(frozen=True)
class Cosine:
    """From 1 at step 0 down a half cosine to `floor` at step `last`, then flat (a one-step
    schedule, `last` 0, stays at 1: its one step trains)."""

    last: int
    floor: float

    def __call__(self, t: int) -> float:
        progress = min(t, self.last) / self.last if self.last else 0.0
        return self.floor + (1.0 - self.floor) * half_cosine(progress)


@dataclass(frozen=True)
class CosineRestarts:
    """SGDR (Loshchilov & Hutter 2017): cosine cycles of `period` steps, each `mult` x longer."""

    period: int
    mult: int
    floor: float

    def __call__(self, t: int) -> float:
        length, position = self.period, t
        while position >= length:
            position -= length
            length *= self.mult
        return self.floor + (1.0 - self.floor) * half_cosine(position / length)


@dataclass(frozen=True)
class Linear:
    """From 1 at step 0 linearly to `end` at step `last`, then flat."""

    last: int
    end: float

    def __call__(self, t: int) -> float:
        return 1.0 + (self.end - 1.0) * (min(t, self.last) / self.last if self.last else 0.0)


@dataclass(frozen=True)
class Polynomial:
    """(1 - t/last)^power, 0 from step `last` on."""

    last: int
    power: float

    def __call__(self, t: int) -> float:
        return (1.0 - (min(t, self.last) / self.last if self.last else 0.0)) ** self.power


@dataclass(frozen=True)
class OneCycle:
    """Smith's 1cycle as torch's OneCycleLR computes it, relative to the peak (max_lr = 1).

    Phases end at steps pct x T - 1 (the peak) and T - 1 (or, three-phase, at pct x T - 1,
    2 pct x T - 2 and T - 1); within each the factor moves from one end value to the next
    by a cosine or a straight line, and momentum moves the other way.
    """

    total: int
    pct_start: float
    div_factor: float
    final_div_factor: float
    three_phase: bool
    anneal: str  # cos | linear
    base_momentum: float
    max_momentum: float

    def _phases(self) -> list[tuple[float, float, float, str]]:
        """(end step, start factor, end factor, momentum direction) of each phase."""
        start, peak = 1.0 / self.div_factor, 1.0
        low = start / self.final_div_factor
        rise = float(self.pct_start * self.total) - 1
        if self.three_phase:
            return [(rise, start, peak, "down"), (2 * rise, peak, start, "up"),
                    (self.total - 1, start, low, "flat")]  # fmt: skip
        return [(rise, start, peak, "down"), (self.total - 1, peak, low, "up")]

    def _position(self, t: int) -> tuple[float, float, float, str]:
        begin = 0.0
        phases = self._phases()
        for i, (end, a, b, direction) in enumerate(phases):
            if t <= end or i == len(phases) - 1:
                return (t - begin) / (end - begin), a, b, direction
            begin = end
        raise AssertionError("unreachable")

    def _interpolate(self, a: float, b: float, pct: float) -> float:
        if self.anneal == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (b - a) * pct + a

    def __call__(self, t: int) -> float:
        pct, a, b, _ = self._position(t)
        return self._interpolate(a, b, pct)

    def momentum(self, t: int) -> float:
        pct, _, _, direction = self._position(t)
        high, low = self.max_momentum, self.base_momentum
        if direction == "down":
            return self._interpolate(high, low, pct)
        if direction == "up":
            return self._interpolate(low, high, pct)
        return high


@dataclass(frozen=True)
class Cyclic:
    """Smith's cyclical LR as torch's CyclicLR computes it, relative to the peak (max_lr = 1)."""

    half_cycle: int
    low: float  # the low end, as a fraction of the peak
    mode: str  # triangular | triangular2 | exp_range
    gamma: float
    base_momentum: float
    max_momentum: float

    def _height(self, t: int) -> float:
        """Where in the cycle step t is: 0 at the low end, 1 at the peak, times the mode's decay."""
        cycle = math.floor(1 + t / (2 * self.half_cycle))
        x = 1.0 + t / (2 * self.half_cycle) - cycle
        scale = x / 0.5 if x <= 0.5 else (x - 1) / (0.5 - 1)
        if self.mode == "triangular2":
            return scale / (2.0 ** (cycle - 1))
        if self.mode == "exp_range":
            return scale * self.gamma**t
        return scale

    def __call__(self, t: int) -> float:
        return self.low + (1.0 - self.low) * self._height(t)

    def momentum(self, t: int) -> float:
        return self.max_momentum - (self.max_momentum - self.base_momentum) * self._height(t)


@dataclass(frozen=True)
class WarmedUp:
    """A linear warm-up from `start` x main(0) to main(0) over `steps`, then `main` from its step 0."""

    main: object
    steps: int
    start: float

    def __call__(self, t: int) -> float:
        if t < self.steps:
            return (self.start + (1.0 - self.start) * t / self.steps) * self.main(0)
        return self.main(t - self.steps)

    def momentum(self, t: int) -> float | None:
        cycle = getattr(self.main, "momentum", None)
        return None if cycle is None else cycle(max(t - self.steps, 0))
