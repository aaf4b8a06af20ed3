"""Every LR schedule optbench can run, one builder each, counted in optimizer steps.

A builder gets the optimizer, its `scheduler:` config and the `Horizon` of the main phase
(after any warm-up): `horizon.steps` LR values, step 0 to step `horizon.steps - 1`, where the
last is the schedule's end value, applied to the run's last optimizer step. Durations in the
configs are epochs (a number) or a share of the schedule ("25%"), converted to optimizer
steps by `horizon.duration`, so changing epochs, batch size or accumulation never cuts a
schedule short or overruns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch.optim import lr_scheduler as torch_schedulers

from optbench.checks import is_number
from optbench.errors import UserError
from optbench.schedules.factors import CosineFactor, CosineRestartsFactor

PLATEAU_METRICS = {"test_loss": "min", "test_acc": "max", "train_loss": "min", "train_acc": "max"}


@dataclass(frozen=True)
class Horizon:
    """Length of the main phase and the clock that converts epochs to optimizer steps."""

    steps: int
    steps_per_epoch: int
    peak_scale: float = 1.0  # configured peak LR / optimizer LR, for schedules with a peak

    def duration(self, value: float | str, key: str) -> int:
        """Optimizer steps of a duration given in epochs (`2.5`) or as a share of the schedule (`"25%"`)."""
        if isinstance(value, str) and value.endswith("%"):
            try:
                steps = round(float(value[:-1]) / 100 * self.steps)
            except ValueError:
                raise UserError(
                    f"scheduler.{key} must be epochs or a percentage like '25%', got '{value}'"
                ) from None
        elif is_number(value):
            steps = round(value * self.steps_per_epoch)
        else:
            raise UserError(
                f"scheduler.{key} must be epochs or a percentage like '25%', got {value!r}"
            )
        if steps < 1:
            raise UserError(f"scheduler.{key}={value} is shorter than one optimizer step")
        return steps


@dataclass(frozen=True)
class SchedulerInfo:
    description: str
    implementation: str
    build: Callable[[torch.optim.Optimizer, DictConfig, Horizon], torch_schedulers.LRScheduler]
    per_evaluation: bool = False  # steps on a validation metric after each evaluation


def has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer uses a momentum coefficient a scheduler could cycle.

    OneCycleLR and CyclicLR would silently switch momentum on for SGD without it (and raise
    for Adagrad), so they cycle momentum only where the optimizer already has some.
    """
    if "betas" in optimizer.defaults:
        return True
    return "momentum" in optimizer.defaults and any(
        g.get("momentum", 0) > 0 for g in optimizer.param_groups
    )


def _group_lrs(optimizer: torch.optim.Optimizer, scale: float = 1.0) -> list[float]:
    return [group["lr"] * scale for group in optimizer.param_groups]


def _constant(opt, cfg, horizon):
    return torch_schedulers.ConstantLR(opt, factor=1.0, total_iters=0)


def _step(opt, cfg, horizon):
    return torch_schedulers.StepLR(opt, horizon.duration(cfg.step_size, "step_size"), cfg.gamma)


def _multistep(opt, cfg, horizon):
    milestones = [horizon.duration(m, "milestones") for m in cfg.milestones]
    if milestones != sorted(milestones):
        raise UserError(f"scheduler.milestones must increase, got {list(cfg.milestones)}")
    return torch_schedulers.MultiStepLR(opt, milestones, cfg.gamma)


def _exponential(opt, cfg, horizon):
    if not 0 < cfg.gamma <= 1:
        raise UserError(f"scheduler.gamma must be in (0, 1], got {cfg.gamma}")
    # gamma is per epoch; spread it over the epoch's steps for a smooth decay.
    return torch_schedulers.ExponentialLR(opt, cfg.gamma ** (1 / horizon.steps_per_epoch))


def _check_floor(cfg) -> float:
    if not 0 <= cfg.min_lr_ratio <= 1:
        raise UserError(f"scheduler.min_lr_ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    return cfg.min_lr_ratio


def _cosine(opt, cfg, horizon):
    return torch_schedulers.LambdaLR(opt, CosineFactor(horizon.steps - 1, _check_floor(cfg)))


def _cosine_restarts(opt, cfg, horizon):
    if cfg.T_mult < 1 or int(cfg.T_mult) != cfg.T_mult:
        raise UserError(f"scheduler.T_mult must be an integer >= 1, got {cfg.T_mult}")
    period = horizon.duration(cfg.T_0, "T_0")
    return torch_schedulers.LambdaLR(
        opt, CosineRestartsFactor(period, int(cfg.T_mult), _check_floor(cfg))
    )


def _linear(opt, cfg, horizon):
    return torch_schedulers.LinearLR(
        opt, start_factor=1.0, end_factor=_check_floor(cfg), total_iters=horizon.steps - 1
    )


def _polynomial(opt, cfg, horizon):
    if cfg.power <= 0:
        raise UserError(f"scheduler.power must be positive, got {cfg.power}")
    return torch_schedulers.PolynomialLR(opt, total_iters=horizon.steps - 1, power=cfg.power)


def _onecycle(opt, cfg, horizon):
    return torch_schedulers.OneCycleLR(
        opt,
        max_lr=_group_lrs(opt, horizon.peak_scale),
        total_steps=horizon.steps,
        pct_start=cfg.pct_start,
        anneal_strategy=cfg.anneal_strategy,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
        three_phase=cfg.three_phase,
        cycle_momentum=cfg.cycle_momentum and has_momentum(opt),
        base_momentum=cfg.base_momentum,
        max_momentum=cfg.max_momentum,
    )


def _cyclic(opt, cfg, horizon):
    peaks = _group_lrs(opt, horizon.peak_scale)
    return torch_schedulers.CyclicLR(
        opt,
        base_lr=[peak * cfg.base_lr_ratio for peak in peaks],
        max_lr=peaks,
        step_size_up=horizon.duration(cfg.half_cycle, "half_cycle"),
        mode=cfg.mode,
        gamma=cfg.gamma,
        cycle_momentum=cfg.cycle_momentum and has_momentum(opt),
        base_momentum=cfg.base_momentum,
        max_momentum=cfg.max_momentum,
    )


def _plateau(opt, cfg, horizon):
    if cfg.metric not in PLATEAU_METRICS:
        raise UserError(
            f"scheduler.metric must be one of {', '.join(PLATEAU_METRICS)}, got '{cfg.metric}'"
        )
    mode = cfg.mode or PLATEAU_METRICS[cfg.metric]
    if mode not in ("min", "max"):
        raise UserError(f"scheduler.mode must be min or max, got '{mode}'")
    return torch_schedulers.ReduceLROnPlateau(
        opt,
        mode=mode,
        factor=cfg.factor,
        patience=cfg.patience,
        threshold=cfg.threshold,
        min_lr=_group_lrs(opt, _check_floor(cfg)),
    )


_TORCH = "torch "  # torch.optim.lr_scheduler.
SCHEDULERS: dict[str, SchedulerInfo] = {
    "constant": SchedulerInfo("the optimizer's LR throughout", _TORCH + "ConstantLR", _constant),
    "step": SchedulerInfo("multiply by gamma every step_size epochs", _TORCH + "StepLR", _step),
    "multistep": SchedulerInfo(
        "multiply by gamma at each milestone epoch", _TORCH + "MultiStepLR", _multistep
    ),
    "exponential": SchedulerInfo(
        "multiply by gamma every epoch, smoothly", _TORCH + "ExponentialLR", _exponential
    ),
    "cosine": SchedulerInfo("half cosine to min_lr_ratio x LR", "closed form (LambdaLR)", _cosine),
    "cosine_restarts": SchedulerInfo(
        "SGDR: cosine cycles of T_0 epochs, each T_mult x longer",
        "closed form (LambdaLR)",
        _cosine_restarts,
    ),
    "onecycle": SchedulerInfo(
        "Smith's 1cycle: warm up to max_lr, anneal far below", _TORCH + "OneCycleLR", _onecycle
    ),
    "warmup_cosine": SchedulerInfo(
        "linear warm-up, then half cosine to a floor", "closed form (LambdaLR)", _cosine
    ),
    "warmup_linear": SchedulerInfo(
        "linear warm-up, then linear decay (BERT)", _TORCH + "LinearLR", _linear
    ),
    "polynomial": SchedulerInfo("(1 - t/T)^power decay to 0", _TORCH + "PolynomialLR", _polynomial),
    "plateau": SchedulerInfo(
        "multiply by factor when a validation metric stalls",
        _TORCH + "ReduceLROnPlateau",
        _plateau,
        True,
    ),
    "cyclic": SchedulerInfo(
        "triangular cycles between two LRs (Smith 2017)", _TORCH + "CyclicLR", _cyclic
    ),
}
