"""The LR range test on a real training setup: the same data, model, optimizer and step
(autocast, accumulation, clipping) as `optbench train`, and everything put back after.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig

from optbench.checks import require_int
from optbench.data import Batch, DeviceBatches
from optbench.errors import UserError
from optbench.lr_finder.curve import smooth
from optbench.lr_finder.range_test import Curve, RangeTestSettings, run_range_test
from optbench.lr_finder.snapshot import TrainingSnapshot
from optbench.lr_finder.suggestions import RULES, Suggestion, suggest
from optbench.run import Run
from optbench.run.evaluate import evaluate_batches
from optbench.run.hyperparameters import set_lrs

# Epoch numbers for the test's batches: far from any training epoch, one block per seed.
FIRST_EPOCH = 1_000_000
EPOCHS_PER_SEED = 1_000


@dataclass
class FinderResult:
    settings: RangeTestSettings
    rule: str
    curve: Curve  # the test's curve, or the median curve over seeds
    suggestions: dict[str, Suggestion]
    seed_curves: list[Curve] = field(default_factory=list)
    band: tuple[list[float], list[float]] | None = None  # lowest and highest loss over seeds

    @property
    def chosen(self) -> Suggestion:
        return self.suggestions[self.rule]


@dataclass(frozen=True)
class FinderSettings:
    """The whole `lr_find:` block: the range test's settings and how the finder uses them."""

    test: RangeTestSettings
    rule: str  # the suggestion `auto` uses
    seeds: int
    validation_batches: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> FinderSettings:
        if cfg.rule not in RULES:
            raise UserError(f"lr_find.rule must be one of {', '.join(RULES)}, got '{cfg.rule}'")
        return cls(
            RangeTestSettings.from_config(cfg),
            cfg.rule,
            require_int(cfg.seeds, "lr_find.seeds", 1),
            require_int(cfg.validation_batches, "lr_find.validation_batches", 0),
        )


def _endless(batches: DeviceBatches, first_epoch: int) -> Iterator[Batch]:
    epoch = first_epoch
    while True:
        yield from batches.epoch(epoch)
        epoch += 1


def find_lr(run: Run, cfg: DictConfig) -> FinderResult:
    """Run the range test on `run` as `cfg` (the `lr_find:` block) says, then restore it.

    The ladder's LR is the run's base LR: every parameter group's LR is the ladder's times
    its `lr_scale`, keeping LR multipliers and layer decay.
    """
    finder = FinderSettings.from_config(cfg)
    settings, rule = finder.test, finder.rule
    optimizer, step, model, data = run.optimizer, run.step, run.model, run.data

    def set_lr(lr: float) -> None:
        set_lrs(optimizer, lr)

    measure = None
    if finder.validation_batches:
        held_out = [
            batch
            for _, batch in zip(
                range(finder.validation_batches), data.val_batches.epoch(0), strict=False
            )
        ]
        measure = lambda: evaluate_batches(step, held_out)["loss"]  # noqa: E731

    snapshot = TrainingSnapshot.take(model, optimizer, step.scaler)
    curves = []
    try:
        for seed in range(finder.seeds):
            snapshot.restore(model, optimizer, step.scaler)
            model.train()
            batches = _endless(data.train_batches, FIRST_EPOCH + EPOCHS_PER_SEED * seed)
            counter = iter(range(10**9))

            def take_step(batches=batches, counter=counter) -> float:
                group = [next(batches) for _ in range(run.plan.accumulation)]
                return step(group, next(counter)).loss.item()

            curves.append(run_range_test(take_step, set_lr, settings, measure))
    finally:
        snapshot.restore(model, optimizer, step.scaler)
    if len(curves) == 1:
        return FinderResult(
            settings, rule, curves[0], suggest(curves[0], settings.smoothing), curves
        )
    curve, band = median_curve(curves, settings.smoothing)
    return FinderResult(settings, rule, curve, suggest(curve, settings.smoothing), curves, band)


def median_curve(
    curves: list[Curve], smoothing: float
) -> tuple[Curve, tuple[list[float], list[float]]]:
    """The point-wise median of several tests' losses, where at least half of them got to,
    with the lowest and highest loss at each point as a band."""
    length = max(len(c.losses) for c in curves)
    points = [
        i
        for i in range(length)
        if sum(i < len(c.losses) and math.isfinite(c.losses[i]) for c in curves) * 2 >= len(curves)
    ]
    n = len(points)
    values = [
        [c.losses[i] for c in curves if i < len(c.losses) and math.isfinite(c.losses[i])]
        for i in range(n)
    ]
    median = [float(np.median(v)) for v in values]
    onsets = [c.diverged_at for c in curves if c.diverged_at is not None]
    diverged = len(onsets) * 2 >= len(curves)
    curve = Curve(
        lrs=max(curves, key=lambda c: len(c.lrs)).lrs[:n],  # every seed walks the same ladder
        losses=median,
        smoothed=list(smooth(np.array(median), smoothing)) if n else [],
        stop_reason=f"median of {len(curves)} seeds; {sum(c.diverged_at is not None for c in curves)} diverged",
        diverged_at=min(int(np.median(onsets)), n) if diverged else None,
    )
    return curve, ([min(v) for v in values], [max(v) for v in values])
