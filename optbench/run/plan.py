"""The numbers fixed before training starts, checked before anything is loaded or written."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from optbench.checks import require_int, require_positive
from optbench.data import DatasetInfo, dataset_info
from optbench.distributed import World, launched
from optbench.errors import UserError
from optbench.optim.registry import info_of
from optbench.schedules import scheduler_info

AMP_MODES = ("none", "fp16", "bf16")
CLIP_MODES = ("none", "norm", "value")
NONFINITE_POLICIES = ("stop", "skip")
NONFINITE_CHECKS = ("auto", "step", "deferred")
TTA_MODES = ("none", "mirror", "mirror_translate")  # optbench/run/evaluate.py
# The trainer's other integer settings and their smallest allowed value.
INTEGER_SETTINGS = {
    "eval_batch_size": 1,
    "eval_interval": 1,
    "eval_every": 0,
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
    world: World  # the processes the run is split over (rank and size)

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
    # Seeds make generators as seed x 1,000,003 + epoch: below 2^32 that stays in 64 bits.
    require_int(t.seed, "trainer.seed", 0, 2**32 - 1)
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
    world = plan_world(cfg)
    device = resolve_device(str(t.device))
    if world.distributed:
        device = _rank_device(device, world)
    if t.amp == "fp16" and device.type != "cuda":
        raise UserError(
            f"trainer.amp=fp16 needs a CUDA device, but the device is {device}; "
            "use trainer.amp=bf16 or trainer.amp=none"
        )
    if t.amp == "fp16" and info_of(cfg.optimizer).hessian:
        raise UserError(
            f"optimizer={cfg.optimizer.name} estimates Hessians, which fp16 loss scaling would distort; "
            "use trainer.amp=bf16 or none"
        )
    info = dataset_info(cfg.dataset)
    if t.tta not in TTA_MODES:
        raise UserError(f"trainer.tta must be one of {', '.join(TTA_MODES)}, got '{t.tta}'")
    if t.tta != "none" and len(info.shape) != 3:
        raise UserError(f"trainer.tta={t.tta} augments images; dataset={cfg.dataset.name} has none")
    if batch_size > info.train_size:
        raise UserError(
            f"trainer.batch_size={batch_size} is larger than the {info.train_size} training "
            f"samples; full-batch training is trainer.batch_size={info.train_size}"
        )
    batches = (
        info.train_size // batch_size if t.drop_last else math.ceil(info.train_size / batch_size)
    )
    if accumulation > batches:
        raise UserError(
            f"trainer.accumulation={accumulation} is more micro-batches than an epoch has "
            f"({batches}); at most trainer.accumulation={batches}"
        )
    if t.channels_last not in ("auto", True, False):
        raise UserError(
            f"trainer.channels_last must be auto, true or false, got {t.channels_last!r}"
        )
    if t.sync_batchnorm and plan_world(cfg).size == 1:
        raise UserError(
            "trainer.sync_batchnorm needs trainer.devices > 1: one process has nothing to sync"
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
    plan = RunPlan(device, t.amp, deferred, epochs, batch_size, accumulation, batches, info, world)
    if not info.val_size:
        _refuse_choosing(cfg)
    if world.distributed:
        _check_split(cfg, plan)
    return plan


def require_validation(dataset: DictConfig, info: DatasetInfo, feature: str) -> None:
    """`feature` chooses by the validation split: without one it refuses, rather than
    choosing on the test split it reports."""
    if info.val_size:
        return
    key = "dataset.val_fraction=0.1" if "val_fraction" in dataset else "dataset.val_size=5000"
    raise UserError(
        f"{feature} chooses by the validation split, but this dataset holds none out; "
        f"set one, e.g. {key} (choosing on the test split would bias what it reports)"
    )


def _refuse_choosing(cfg: DictConfig) -> None:
    t, info = cfg.trainer, dataset_info(cfg.dataset)
    choosing = {
        "trainer.targets": bool(t.targets),
        f"scheduler={cfg.scheduler.name}": scheduler_info(cfg.scheduler.name).per_evaluation,
        "trainer.keep_best": t.keep_best is True,
        "lr_find.validation_batches": bool(cfg.lr_find.validation_batches),
    }
    for feature, used in choosing.items():
        if used:
            require_validation(cfg.dataset, info, feature)


def plan_world(cfg: DictConfig) -> World:
    """The world the launcher started, or (checked before it starts) the one it will."""
    devices = require_int(cfg.trainer.devices, "trainer.devices", 1)
    world = launched()
    if world.distributed:
        if devices not in (1, world.size):
            raise UserError(
                f"trainer.devices={devices}, but the launcher started {world.size} processes"
            )
        return world
    return World(size=devices)


def _rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank's device: GPU `local_rank` on CUDA, the CPU (gloo) otherwise."""
    if device.type == "mps":
        raise UserError("trainer.devices > 1 needs CUDA GPUs or the CPU; MPS has no process group")
    if device.type != "cuda":
        # Each rank holds the data and a model: more ranks than cores only exhausts memory.
        cores = len(os.sched_getaffinity(0))
        if not launched().distributed and world.size > cores:
            raise UserError(
                f"trainer.devices={world.size} would start {world.size} CPU processes, but this "
                f"machine has {cores} cores; use at most trainer.devices={cores}"
            )
        return device
    if launched().distributed:
        return torch.device("cuda", world.local_rank)
    if world.size > torch.cuda.device_count():
        raise UserError(
            f"trainer.devices={world.size} but this machine has {torch.cuda.device_count()} GPUs"
        )
    return device


def _check_split(cfg: DictConfig, plan: RunPlan) -> None:
    """Every global training batch, the last one included, splits evenly over the ranks:
    then DDP's mean of the ranks' gradients is exactly the whole batch's gradient."""
    t, ranks, samples = cfg.trainer, plan.world.size, plan.dataset.train_size
    if plan.batch_size % ranks:
        raise UserError(
            f"trainer.batch_size={plan.batch_size} does not split evenly over {ranks} processes"
        )
    last = 0 if t.drop_last else samples % plan.batch_size
    if last % ranks:
        raise UserError(
            f"the last batch of {last} samples ({samples} in batches of {plan.batch_size}) does "
            f"not split evenly over {ranks} processes; set trainer.drop_last=true"
        )
    if t.sync_batchnorm and plan.device.type != "cuda":
        raise UserError(
            "trainer.sync_batchnorm needs CUDA: torch's SyncBatchNorm runs on GPUs only"
        )
