"""Everything a training step needs, built from a config: data, model, optimizer, step.

`optbench train` and `optbench lr-find` build the same setup, so the range test measures
exactly the training the run will do.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from optbench.data import DeviceBatches, ImageDataset, load_dataset
from optbench.models import build_model
from optbench.optim import build_optimizer, optimizer_info
from optbench.optim.hessian import HutchinsonHessian
from optbench.train.plan import RunPlan
from optbench.train.step import TrainStep


@dataclass
class TrainingSetup:
    plan: RunPlan
    dataset: ImageDataset
    train_batches: DeviceBatches
    test_batches: DeviceBatches
    model: nn.Module  # the module whose state is saved (not the compiled wrapper)
    optimizer: torch.optim.Optimizer
    step: TrainStep


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python and torch (CPU and every CUDA device); optionally demand deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS reads this when it first starts; without it deterministic matmuls raise.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Set both ways: in a sweep, jobs share one process.
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


def uses_channels_last(setting: str | bool, device: torch.device, model: nn.Module) -> bool:
    """`auto`: channels-last on CUDA for convolutional models, where it is faster with AMP."""
    if setting == "auto":
        return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    return bool(setting)


def build_setup(cfg: DictConfig, plan: RunPlan, *, lr: float | None = None) -> TrainingSetup:
    """Load data, build model, optimizer and step for `cfg` (with `lr` replacing optimizer.lr)."""
    t = cfg.trainer
    seed_everything(t.seed, t.deterministic)
    dataset = load_dataset(cfg.dataset)
    model = build_model(cfg.model, dataset.info).to(plan.device)
    channels_last = uses_channels_last(t.channels_last, plan.device, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer_cfg = cfg.optimizer.copy()
    if lr is not None:
        optimizer_cfg.lr = lr
    optimizer = build_optimizer(model, optimizer_cfg, cfg.param_groups, plan.device)
    augment = cfg.dataset.augment
    common = dict(
        device=plan.device, mean=dataset.mean, std=dataset.std, channels_last=channels_last
    )
    train_batches = DeviceBatches(
        dataset.train,
        batch_size=plan.batch_size,
        shuffle=True,
        drop_last=t.drop_last,
        crop_padding=augment.crop_padding,
        flip=augment.flip,
        seed=t.seed,
        **common,
    )
    test_batches = DeviceBatches(dataset.test, batch_size=t.eval_batch_size, **common)
    info = optimizer_info(optimizer_cfg.name)
    hessian = None
    if info.hessian:
        hessian = HutchinsonHessian(optimizer_cfg.update_period, optimizer_cfg.num_samples)
    step = TrainStep(
        torch.compile(model) if t.compile else model,
        optimizer,
        device=plan.device,
        amp=plan.amp,
        clip_mode=t.clip.mode,
        clip_max=t.clip.max,
        label_smoothing=t.label_smoothing,
        hessian=hessian,
        schedule_free=info.schedule_free,
    )
    return TrainingSetup(plan, dataset, train_batches, test_batches, model, optimizer, step)
