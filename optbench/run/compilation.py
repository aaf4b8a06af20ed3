"""`trainer.compile`: torch.compile the model, or the model and the optimizer step.

- `model` (or `true`): `torch.compile(model)`.
- `step`: also PyTorch's "compiling the optimizer" recipe, for torch.optim optimizers: their
  step runs through `torch.compile` with the foreach implementation (inductor fuses it into a
  few kernels; `fused=True` is an opaque kernel it cannot see into) and, where the class has
  it, `capturable=True`, which lets the LR be a device tensor. The LR changes every step, and
  a Python float would be a constant of the graph, recompiled at each new value; the compiled
  step therefore reads each group's float LR into a tensor of its own (`fill_`, no sync) and
  hands the optimizer that tensor for the call. Other optimizers keep an eager step (a
  one-line warning); a momentum that changes during the run is refused, for the same reason.

`trainer.compile_mode` is torch.compile's mode; `reduce-overhead` and `max-autotune` capture
CUDA graphs, which need static shapes. Every graph is compiled with `dynamic=False`: an
epoch's last, shorter batch (and each evaluation batch size) compiles one more graph, once,
rather than dropping data or making every graph dynamic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from optbench.errors import UserError

log = logging.getLogger("optbench")

COMPILE_TARGETS = ("false", "model", "step")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compile_target(setting: Any) -> str:
    """`false`, `model` or `step`; `true`, from before `step` existed, is `model`."""
    if setting is True:
        return "model"
    target = "false" if setting is False or setting is None else str(setting)
    if target not in COMPILE_TARGETS:
        raise UserError(f"trainer.compile must be false, model or step, got '{setting}'")
    return target


def check_compile(t: DictConfig, *, momentum_changes: bool, device: torch.device) -> str:
    """The run's compile target, once its settings are known to go together."""
    target = compile_target(t.compile)
    if t.compile_mode not in COMPILE_MODES:
        raise UserError(
            f"trainer.compile_mode must be one of {', '.join(COMPILE_MODES)}, got '{t.compile_mode}'"
        )
    if t.compile_mode != "default" and target == "false":
        raise UserError(
            f"trainer.compile_mode={t.compile_mode} does nothing without trainer.compile "
            "(model or step)"
        )
    if t.compile_mode != "default" and device.type != "cuda":
        raise UserError(
            f"trainer.compile_mode={t.compile_mode} captures CUDA graphs, but the device is "
            f"{device}; use compile_mode=default"
        )
    if target == "step" and momentum_changes:
        raise UserError(
            "trainer.compile=step would recompile the optimizer step at every new momentum "
            "value; use trainer.compile=model, or a constant momentum "
            "(scheduler.cycle_momentum=false, momentum.schedule=none)"
        )
    return target


def compiled_model(model: nn.Module, target: str, mode: str) -> nn.Module:
    """The module the step calls: `model` itself, or its compiled wrapper (same parameters)."""
    if target == "false":
        return model
    return torch.compile(model, mode=mode, dynamic=False)


def is_torch_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    return type(optimizer).__module__.startswith("torch.optim.")


def compile_optimizer_step(optimizer: torch.optim.Optimizer, mode: str) -> bool:
    """Replace `optimizer.step` by its compiled form; False (and a warning) where it cannot."""
    if not is_torch_optimizer(optimizer):
        log.warning(
            "trainer.compile=step: %s is not a torch.optim optimizer; only the model is "
            "compiled, its step runs eagerly",
            type(optimizer).__name__,
        )
        return False
    for group in optimizer.param_groups:
        group["foreach"] = True
        for key, value in (("fused", False), ("capturable", True)):
            if key in group:
                group[key] = value
    optimizer.step = CompiledOptimizerStep(optimizer, mode)
    return True


class CompiledOptimizerStep:
    """`optimizer.step` compiled, with each group's LR passed as a device tensor."""

    def __init__(self, optimizer: torch.optim.Optimizer, mode: str):
        self.optimizer = optimizer
        self.eager_step: Callable[..., Any] = optimizer.step
        self.lrs = [
            torch.tensor(float(g["lr"]), device=g["params"][0].device)
            for g in optimizer.param_groups
        ]
        self.compiled = torch.compile(self.eager_step, mode=mode, dynamic=False)

    def __call__(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is not None:  # a closure re-runs the model: not graph material
            return self.eager_step(closure)
        groups = self.optimizer.param_groups
        floats = [g["lr"] for g in groups]
        for group, lr, value in zip(groups, self.lrs, floats, strict=True):
            lr.fill_(value)
            group["lr"] = lr
        try:
            return self.compiled()
        finally:  # everything else (logs, schedules, checkpoints) keeps reading floats
            for group, value in zip(groups, floats, strict=True):
                group["lr"] = value
