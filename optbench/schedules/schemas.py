"""The keys of each LR schedule's config (`configs/scheduler/`) and their types: its schema
(optbench/run/schema.py). Durations are optimizer steps (an integer), a fraction of training
(0.05) or a share of it ('25%'), so they are typed loosely and read by `Horizon`. The YAMLs
document the defaults; tests/test_schema.py keeps both in step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class ConstantConfig:
    name: str = "constant"
    warmup: Any = 0  # optimizer steps (an integer) or a fraction of training
    warmup_start_factor: float = 0.0


@dataclass
class CosineConfig(ConstantConfig):
    name: str = "cosine"
    min_lr_ratio: float = 0.0


@dataclass
class WarmupCosineConfig(CosineConfig):
    name: str = "warmup_cosine"
    warmup: Any = 0.05


@dataclass
class WarmupLinearConfig(CosineConfig):
    name: str = "warmup_linear"
    warmup: Any = 0.06


@dataclass
class CosineRestartsConfig(CosineConfig):
    name: str = "cosine_restarts"
    T_0: Any = "25%"
    T_mult: int = 1


@dataclass
class StepConfig(ConstantConfig):
    name: str = "step"
    step_size: Any = "30%"
    gamma: float = 0.1


@dataclass
class MultiStepConfig(ConstantConfig):
    name: str = "multistep"
    milestones: list[Any] = field(default_factory=lambda: ["50%", "75%"])
    gamma: float = 0.1


@dataclass
class ExponentialConfig(ConstantConfig):
    name: str = "exponential"
    gamma: float = 0.9


@dataclass
class PolynomialConfig(ConstantConfig):
    name: str = "polynomial"
    power: float = 0.9


@dataclass
class PlateauConfig(CosineConfig):
    name: str = "plateau"
    metric: str = "val_loss"
    mode: str | None = None
    factor: float = 0.1
    patience: int = 2
    threshold: float = 1.0e-4


@dataclass
class OneCycleConfig(ConstantConfig):
    name: str = "onecycle"
    max_lr: Any = None  # the peak (a number or auto); null: optimizer.lr
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1.0e4
    three_phase: bool = False
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95


@dataclass
class CyclicConfig(ConstantConfig):
    name: str = "cyclic"
    max_lr: Any = None  # the peak (a number or auto); null: optimizer.lr
    base_lr_ratio: float = 0.25
    half_cycle: Any = "12.5%"
    mode: str = "triangular"
    gamma: float = 1.0
    cycle_momentum: bool = True
    base_momentum: float = 0.8
    max_momentum: float = 0.9


@dataclass
class CustomConfig(ConstantConfig):
    name: str = "custom"
    target: str = MISSING  # dotted path of f(step, total_steps) -> factor
