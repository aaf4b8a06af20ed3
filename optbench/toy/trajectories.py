"""Run optimizers from a start point over a test function and record their paths.

The optimizers come from the same factory as in training (`optbench.optim`), on a single
float64 parameter of shape (2,): the point (x, y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from optbench.errors import UserError
from optbench.optim import optimizer_config, optimizer_from_groups, optimizer_info
from optbench.optim.factory import resolve_optimizer_config
from optbench.optim.hessian import HutchinsonHessian
from optbench.optim.registry import all_optimizers
from optbench.toy.functions import Point, ToyFunction

DTYPE = torch.float64
CPU = torch.device("cpu")

# Optimizers whose defining feature cannot act on one 2-element point: run here, they would
# draw another method's path under their name.
UNSUPPORTED: dict[str, str] = {
    "lamb": "its trust ratio scales every step by ||x, y||, the distance from (0, 0), "
    "which means nothing on a test function",
    "lars": "it applies its trust ratio only to tensors of 2+ dimensions, so on a 2-element "
    "point it is plain momentum SGD (use momentum)",
    "adafactor": "it factors second moments only for matrices and scales its step by the "
    "point's RMS, the distance from (0, 0)",
    "adam8bit": "bitsandbytes keeps 32-bit state for tensors under 4096 elements, so on a "
    "2-element point it is plain Adam (use adam)",
    "adamw8bit": "bitsandbytes keeps 32-bit state for tensors under 4096 elements, so on a "
    "2-element point it is plain AdamW (use adamw)",
    "muon": "it orthogonalises updates of weight matrices; a 2-element point has none, "
    "so it would be AdamW alone (use adamw)",
    "normuon": "it orthogonalises updates of weight matrices; a 2-element point has none, "
    "so it would be AdamW alone (use adamw)",
    "torch_muon": "it orthogonalises updates of weight matrices; a 2-element point has none, "
    "so it would be AdamW alone (use adamw)",
    "muon_sgd": "it orthogonalises updates of weight matrices; a 2-element point has none, "
    "so it would be Nesterov SGD alone (use nesterov)",
    "adam_mini": "it shares second moments within a model's named parameter blocks; a point "
    "is not a model",
    "soap": "it preconditions 1-D tensors only with precondition_1d, so on a 2-element point "
    "it is plain Adam (use adam)",
    "mars": "it gives 1-D tensors plain AdamW unless optimize_1d, so on a 2-element point it is "
    "AdamW (use adamw)",
}


def check_supported(name: str) -> None:
    """Raise a UserError for an unknown optimizer or one that cannot run on a 2-D point."""
    known = all_optimizers()
    if name not in known and "." not in name:  # a dotted path names a user's class
        supported = [n for n in known if n not in UNSUPPORTED]
        raise UserError(
            f"unknown optimizer '{name}'; choose from {', '.join(supported)}, or give your "
            "class's import path (mypkg.opt.MyRMSprop)"
        )
    if name in UNSUPPORTED:
        raise UserError(f"optimizer {name} cannot run on a 2-D test function: {UNSUPPORTED[name]}")


def default_lr(function: ToyFunction, name: str) -> tuple[float, str]:
    """The LR `name` gets on `function` unless set, and where it comes from."""
    if name in function.lrs:
        return function.lrs[name], "function"
    return float(resolve_optimizer_config(optimizer_config(name)).lr), "optimizer"


def build_toy_optimizer(
    name: str, lr: float, impl: str, point: torch.Tensor
) -> torch.optim.Optimizer:
    """Optimizer `name` over `point`, with its documented hyperparameters except the LR."""
    cfg = optimizer_config(name)
    cfg.impl = impl
    cfg.lr = lr
    if "weight_decay" in cfg:
        cfg.weight_decay = 0.0  # decay pulls towards (0, 0), which is nothing special here
    return optimizer_from_groups([point], cfg, CPU)


@dataclass(frozen=True)
class ToyRun:
    """What every optimizer of one `optbench toy` run shares."""

    function: ToyFunction
    steps: int
    start: Point
    impl: str = "library"
    bound: float = 1e3  # |x| or |y| beyond this counts as diverged
    seed: int = 0  # random Hessian probes (Sophia)


@dataclass(frozen=True)
class Trajectory:
    optimizer: str
    lr: float
    lr_source: str  # config (the lr option) | function | optimizer (their defaults) | grid
    points: torch.Tensor  # (n, 2): the start, then the point after each step
    losses: torch.Tensor  # (n,): the function at each point
    diverged_at: int | None  # the step that left the bounds or went non-finite (not in points)

    def steps_to(self, threshold: float) -> int | None:
        """The first step whose loss is below `threshold` (0: the start), None if none is."""
        below = torch.nonzero(self.losses < threshold)
        return int(below[0, 0]) if len(below) else None

    def summary(self, function: ToyFunction, threshold: float) -> dict[str, Any]:
        """The run in numbers; a diverged run has no final loss or distance to report."""
        finished = self.diverged_at is None
        final_loss = float(self.losses[-1]) if finished else None
        distance = function.distance_to_minimum(self.points[-1]) if finished else None
        return {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "lr_source": self.lr_source,
            "status": "ok" if finished else "diverged",
            "diverged_at_step": self.diverged_at,
            "final_loss": final_loss,
            "distance_to_minimum": distance,
            "steps_to_threshold": self.steps_to(threshold),
        }


def _backward(
    function: ToyFunction,
    point: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    hessian: HutchinsonHessian | None,
) -> dict[str, Any]:
    """The gradient into `point.grad`; returns the extra `step` arguments (Sophia's Hessian)."""
    loss = function(point)
    # The optimizer's own step count, as the trainer does, so the estimate matches its period.
    if hessian is None or not hessian.due(optimizer.param_groups[0].get("step", 0)):
        loss.backward()
        return {}
    (grad,) = torch.autograd.grad(loss, [point], create_graph=True)
    estimate = hessian.estimate([point], [grad])
    point.grad = grad.detach()
    return {"hessian": estimate}


def _recorded_point(
    point: torch.Tensor, optimizer: torch.optim.Optimizer, schedule_free: bool
) -> torch.Tensor:
    """Where the optimizer is: for Schedule-Free, its averaged point, which it would evaluate."""
    if not schedule_free:
        return point.detach().clone()
    optimizer.eval()
    averaged = point.detach().clone()
    optimizer.train()
    return averaged


def run_trajectory(run: ToyRun, name: str, lr: float, lr_source: str) -> Trajectory:
    """Optimizer `name` for `run.steps` steps from `run.start`, stopped where it diverges."""
    torch.manual_seed(run.seed)
    point = torch.tensor(run.start, dtype=DTYPE, requires_grad=True)
    optimizer = build_toy_optimizer(name, lr, run.impl, point)
    info = optimizer_info(name)
    hessian = None
    if info.hessian:
        cfg = optimizer_config(name)
        hessian = HutchinsonHessian(cfg.update_period, cfg.num_samples)
    points, diverged_at = [point.detach().clone()], None
    for step in range(1, run.steps + 1):
        optimizer.zero_grad()
        optimizer.step(**_backward(run.function, point, optimizer, hessian))
        current = _recorded_point(point, optimizer, info.schedule_free)
        if not (torch.isfinite(current).all() and current.abs().max() <= run.bound):
            diverged_at = step
            break
        points.append(current)
    path = torch.stack(points)
    with torch.no_grad():
        losses = run.function(path)
    return Trajectory(name, lr, lr_source, path, losses, diverged_at)


def grid_rank(trajectory: Trajectory, threshold: float) -> tuple[bool, float, float]:
    """Sort key of the LR grid: not diverged, then fewest steps to threshold, then final loss."""
    steps = trajectory.steps_to(threshold)
    diverged = trajectory.diverged_at is not None
    return (
        diverged,
        math.inf if steps is None else steps,
        math.inf if diverged else float(trajectory.losses[-1]),
    )


def best_on_grid(
    run: ToyRun, name: str, centre_lr: float, factors: list[float], threshold: float
) -> Trajectory:
    """The best of `name`'s runs with LR `centre_lr` x each factor (ranked by `grid_rank`)."""
    runs = [run_trajectory(run, name, centre_lr * f, "grid") for f in factors]
    return min(runs, key=lambda t: grid_rank(t, threshold))
