"""The numbers fixed before training starts, checked before anything is loaded or written."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from optbench.checks import require_int, require_positive
from optbench.data import DatasetInfo, dataset_info
from optbench.errors import UserError
from optbench.optim.registry import optimizer_info

AMP_MODES = ("none", "fp16", "bf16")
CLIP_MODES = ("none", "norm", "value")
NONFINITE_POLICIES = ("stop", "skip")
NONFINITE_CHECKS = ("auto", "step", "deferred")
TTA_MODES = ("none", "mirror", "mirror_translate")  # optbench/run/evaluate.py
# The trainer's other integer settings and their smallest allowed value.
INTEGER_SETTINGS = {
    "eval_batch_size": 1,
    "eval_interval": 1,
    "log_interval": 1,
    "diagnostics_interval": 0,
    "checkpoint_every": 0,
    "keep_checkpoints": 1,
}


@dataclass(frozen=True)
class RunPlan:
    device: torch.device
    amp: str
    deferred_check: bool  # NaN/Inf guarded on the device (optbench/run/nonfinite.py)
    epochs: int
    batch_size: int
    accumulation: int
    batches_per_epoch: int
    dataset: DatasetInfo

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: a trailing group of fewer than `accumulation` batches
        still makes a step, so accumulation never drops data."""
        return math.ceil(self.batches_per_epoch / self.accumulation)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock intervals measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_for_job(setting: str, job_num: int | None, gpu_count: int) -> str:
    """The device a sweep job gets: with `auto` and several GPUs, job N uses GPU N mod count,
    so parallel jobs (hydra/launcher=joblib) spread over the machine's GPUs."""
    if setting != "auto" or job_num is None or gpu_count < 2:
        return setting
    return f"cuda:{job_num % gpu_count}"


def resolve_device(name: str) -> torch.device:
    """`auto` is the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(
            f"trainer.device must be auto, cpu, cuda, cuda:N or mps, got '{name}'"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"trainer.device={name} but no CUDA device is available; use trainer.device=cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"trainer.device={name} but only {torch.cuda.device_count()} CUDA devices exist"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.device=mps but MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"trainer.device must be auto, cpu, cuda, cuda:N or mps, got '{name}'")
    return device


def plan_run(cfg: DictConfig) -> RunPlan:
    """Check the `trainer:` settings and count batches and optimizer steps."""
    t = cfg.trainer
    require_int(t.seed, "trainer.seed", 0)
    epochs = require_int(t.epochs, "trainer.epochs", 1)
    batch_size = require_int(t.batch_size, "trainer.batch_size", 1)
    accumulation = require_int(t.accumulation, "trainer.accumulation", 1)
    for key, minimum in INTEGER_SETTINGS.items():
        require_int(t[key], f"trainer.{key}", minimum)
    if t.amp not in AMP_MODES:
        raise UserError(f"trainer.amp must be one of {', '.join(AMP_MODES)}, got '{t.amp}'")
    if t.clip.mode not in CLIP_MODES:
        raise UserError(
            f"trainer.clip.mode must be one of {', '.join(CLIP_MODES)}, got '{t.clip.mode}'"
        )
    if t.clip.mode != "none":
        require_positive(t.clip.max, "trainer.clip.max")
    device = resolve_device(str(t.device))
    if t.amp == "fp16" and device.type != "cuda":
        raise UserError(
            f"trainer.amp=fp16 needs a CUDA device, but the device is {device}; "
            "use trainer.amp=bf16 or trainer.amp=none"
        )
    if t.amp == "fp16" and optimizer_info(cfg.optimizer.name).hessian:
        raise UserError(
            f"optimizer={cfg.optimizer.name} estimates Hessians, which fp16 loss scaling would distort; "
            "use trainer.amp=bf16 or none"
        )
    info = dataset_info(cfg.dataset)
    if t.tta not in TTA_MODES:
        raise UserError(f"trainer.tta must be one of {', '.join(TTA_MODES)}, got '{t.tta}'")
    if t.tta != "none" and len(info.shape) != 3:
        raise UserError(f"trainer.tta={t.tta} augments images; dataset={cfg.dataset.name} has none")
    batches = (
        info.train_size // batch_size if t.drop_last else math.ceil(info.train_size / batch_size)
    )
    if batches < 1:
        raise UserError(
            f"trainer.batch_size={batch_size} with drop_last leaves no batch of the "
            f"{info.train_size} training samples"
        )
    if t.on_nonfinite not in NONFINITE_POLICIES:
        raise UserError(
            f"trainer.on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got '{t.on_nonfinite}'"
        )
    check = t.nonfinite_check
    if check not in NONFINITE_CHECKS:
        raise UserError(
            f"trainer.nonfinite_check must be one of {', '.join(NONFINITE_CHECKS)}, got '{check}'"
        )
    if check == "deferred" and t.amp == "fp16":
        raise UserError(
            "trainer.nonfinite_check=deferred does not go with trainer.amp=fp16: the loss "
            "scaler checks every step on the host; use bf16, or nonfinite_check=step"
        )
    deferred = check == "deferred" or (
        check == "auto" and device.type == "cuda" and t.amp != "fp16"
    )
    return RunPlan(device, t.amp, deferred, epochs, batch_size, accumulation, batches, info)
