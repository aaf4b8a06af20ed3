"""Every LR schedule optbench can run, one builder each, counted in optimizer steps.

A builder gets its `scheduler:` config and the `Horizon` of the main phase (after any
warm-up) and returns a factor of the step (optbench/schedules/factors.py): `horizon.steps`
values, step 0 to step `horizon.steps - 1`, where the last is the schedule's end value,
applied to the run's last optimizer step. Durations in the configs are epochs (a number) or
a share of the schedule ("25%"), converted to optimizer steps by `horizon.duration`, so
changing epochs, batch size or accumulation never cuts a schedule short or overruns it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from optbench.checks import is_number
from optbench.errors import UserError
from optbench.schedules import factors, schemas
from optbench.schedules.factors import Constant
from optbench.user_code import import_object

Factor = Callable[[int], float]


@dataclass(frozen=True)
class Horizon:
    """Length of the main phase and the clock that converts epochs to optimizer steps."""

    steps: int
    steps_per_epoch: int

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
        if steps > self.steps:
            raise UserError(
                f"scheduler.{key}={value} is past the end of the run ({self.steps} optimizer "
                f"steps, {self.steps / self.steps_per_epoch:g} epochs after the warm-up)"
            )
        return steps


@dataclass(frozen=True)
class SchedulerInfo:
    description: str
    oracle: str  # the torch scheduler the tests compare it with at every step
    build: Callable[[DictConfig, Horizon], Factor]
    per_evaluation: bool = False  # moves on a validation metric after each evaluation
    schema: type = schemas.ConstantConfig  # its config's keys and types (schedules/schemas.py)


def _check_floor(cfg: DictConfig) -> float:
    if not 0 <= cfg.min_lr_ratio <= 1:
        raise UserError(f"scheduler.min_lr_ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    return cfg.min_lr_ratio


def _check_gamma(cfg: DictConfig) -> float:
    if not (is_number(cfg.gamma) and cfg.gamma > 0):
        raise UserError(f"scheduler.gamma must be a positive number, got {cfg.gamma!r}")
    return cfg.gamma


def _step(cfg, horizon):
    return factors.Steps((), _check_gamma(cfg), every=horizon.duration(cfg.step_size, "step_size"))


def _multistep(cfg, horizon):
    milestones = [horizon.duration(m, "milestones") for m in cfg.milestones]
    if milestones != sorted(milestones):
        raise UserError(f"scheduler.milestones must increase, got {list(cfg.milestones)}")
    return factors.Steps(tuple(milestones), _check_gamma(cfg))


def _exponential(cfg, horizon):
    if not 0 < cfg.gamma <= 1:
        raise UserError(f"scheduler.gamma must be in (0, 1], got {cfg.gamma}")
    # gamma is per epoch; spread it over the epoch's steps for a smooth decay.
    return factors.Exponential(cfg.gamma ** (1 / horizon.steps_per_epoch))


def _cosine(cfg, horizon):
    return factors.Cosine(horizon.steps - 1, _check_floor(cfg))


def _cosine_restarts(cfg, horizon):
    if cfg.T_mult < 1 or int(cfg.T_mult) != cfg.T_mult:
        raise UserError(f"scheduler.T_mult must be an integer >= 1, got {cfg.T_mult}")
    period = horizon.duration(cfg.T_0, "T_0")
    return factors.CosineRestarts(period, int(cfg.T_mult), _check_floor(cfg))


def _linear(cfg, horizon):
    return factors.Linear(horizon.steps - 1, _check_floor(cfg))


def _polynomial(cfg, horizon):
    if cfg.power <= 0:
        raise UserError(f"scheduler.power must be positive, got {cfg.power}")
    return factors.Polynomial(horizon.steps - 1, cfg.power)


def _momentum_range(cfg: DictConfig) -> tuple[float, float]:
    low, high = cfg.base_momentum, cfg.max_momentum
    if not (is_number(low) and is_number(high) and 0 <= low <= high < 1):
        raise UserError(
            f"scheduler: need 0 <= base_momentum <= max_momentum < 1, got {low!r} and {high!r}"
        )
    return low, high


def _onecycle(cfg, horizon):
    if not 0 < cfg.pct_start < 1:
        raise UserError(f"scheduler.pct_start must be in (0, 1), got {cfg.pct_start}")
    if cfg.anneal_strategy not in ("cos", "linear"):
        raise UserError(
            f"scheduler.anneal_strategy must be cos or linear, got '{cfg.anneal_strategy}'"
        )
    if not (cfg.div_factor > 0 and cfg.final_div_factor > 0):
        raise UserError("scheduler.div_factor and final_div_factor must be positive")
    factor = factors.OneCycle(
        horizon.steps, cfg.pct_start, cfg.div_factor, cfg.final_div_factor,
        bool(cfg.three_phase), cfg.anneal_strategy, *_momentum_range(cfg),
    )  # fmt: skip
    phases = [end for end, *_ in factor._phases()]
    if any(b <= a for a, b in zip([0.0, *phases], phases, strict=False)):
        raise UserError(
            f"scheduler=onecycle: {horizon.steps} steps are too few for pct_start={cfg.pct_start}"
        )
    return factor


def _cyclic(cfg, horizon):
    if cfg.mode not in ("triangular", "triangular2", "exp_range"):
        raise UserError(
            f"scheduler.mode must be triangular, triangular2 or exp_range, got '{cfg.mode}'"
        )
    if not 0 <= cfg.base_lr_ratio <= 1:
        raise UserError(f"scheduler.base_lr_ratio must be in [0, 1], got {cfg.base_lr_ratio}")
    return factors.Cyclic(
        horizon.duration(cfg.half_cycle, "half_cycle"), cfg.base_lr_ratio, cfg.mode,
        _check_gamma(cfg), *_momentum_range(cfg),
    )  # fmt: skip


def _plateau(cfg, horizon):
    for key in ("factor", "threshold"):
        if not (is_number(cfg[key]) and cfg[key] >= 0):
            raise UserError(f"scheduler.{key} must be a non-negative number, got {cfg[key]!r}")
    if not 0 < cfg.factor < 1:
        raise UserError(f"scheduler.factor must be in (0, 1), got {cfg.factor}")
    _check_floor(cfg)
    return Constant()  # the reductions are the Plateau's state, not a function of the step


def _target(cfg, horizon):
    """A user's function of the step, `f(step, total_steps) -> factor`, over the main phase.

    Every step's factor is computed here, once: a schedule that fails or is not a finite,
    non-negative number fails before training, in one line.
    """
    function = import_object(cfg.target, "scheduler.target")
    if isinstance(function, type) or not callable(function):
        raise UserError(
            f"scheduler.target={cfg.target} must be a function f(step, total_steps) -> factor, "
            f"got {'a class' if isinstance(function, type) else type(function).__name__}"
        )
    try:
        inspect.signature(function).bind(0, horizon.steps)
    except TypeError:
        raise UserError(
            f"scheduler.target={cfg.target} must take two arguments, (step, total_steps)"
        ) from None
    except ValueError:  # a builtin without a signature: calling it is the check
        pass
    values = []
    for step in range(horizon.steps):
        try:
            value = function(step, horizon.steps)
        except Exception as err:
            raise UserError(
                f"scheduler.target={cfg.target} raised {type(err).__name__} at step {step}: {err}"
            ) from None
        if not (is_number(value) and math.isfinite(value) and value >= 0):
            raise UserError(
                f"scheduler.target={cfg.target} returned {value!r} at step {step}; an LR "
                "factor must be a finite number >= 0"
            )
        values.append(float(value))
    return factors.Table(tuple(values))


SCHEDULERS: dict[str, SchedulerInfo] = {
    "constant": SchedulerInfo("the optimizer's LR throughout", "ConstantLR", lambda c, h: Constant(), schema=schemas.ConstantConfig),
    "step": SchedulerInfo("multiply by gamma every step_size epochs", "StepLR", _step, schema=schemas.StepConfig),
    "multistep": SchedulerInfo("multiply by gamma at each milestone epoch", "MultiStepLR", _multistep, schema=schemas.MultiStepConfig),
    "exponential": SchedulerInfo("multiply by gamma every epoch, smoothly", "ExponentialLR", _exponential, schema=schemas.ExponentialConfig),
    "cosine": SchedulerInfo("half cosine to min_lr_ratio x LR", "CosineAnnealingLR", _cosine, schema=schemas.CosineConfig),
    "cosine_restarts": SchedulerInfo(
        "SGDR: cosine cycles of T_0 epochs, each T_mult x longer", "CosineAnnealingWarmRestarts",
        _cosine_restarts, schema=schemas.CosineRestartsConfig),
    "onecycle": SchedulerInfo("Smith's 1cycle: warm up to max_lr, anneal far below", "OneCycleLR", _onecycle, schema=schemas.OneCycleConfig),
    "warmup_cosine": SchedulerInfo(
        "linear warm-up, then half cosine to a floor", "CosineAnnealingLR", _cosine, schema=schemas.WarmupCosineConfig),
    "warmup_linear": SchedulerInfo("linear warm-up, then linear decay (BERT)", "LinearLR", _linear, schema=schemas.WarmupLinearConfig),
    "polynomial": SchedulerInfo("(1 - t/T)^power decay to 0", "PolynomialLR", _polynomial, schema=schemas.PolynomialConfig),
    "plateau": SchedulerInfo(
        "multiply by factor when a validation metric stalls", "ReduceLROnPlateau", _plateau, True, schema=schemas.PlateauConfig),
    "cyclic": SchedulerInfo("triangular cycles between two LRs (Smith 2017)", "CyclicLR", _cyclic, schema=schemas.CyclicConfig),
    "custom": SchedulerInfo("your function f(step, total_steps) -> factor (scheduler.target)", "LambdaLR", _target, schema=schemas.CustomConfig),
}  # fmt: skip
