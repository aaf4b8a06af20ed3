"""The trainer's reporting: TensorBoard scalars, metrics.jsonl and the progress bar.

Per-step values stay on the device and are written every `interval` optimizer steps with
one host-device sync, so logging at full step resolution costs the hot loop nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from optbench.optim.momentum import momentum_coefficient
from optbench.run.step import StepResult
from optbench.run.sync import to_host
from optbench.tasks import Task
from optbench.tracking.files import append_json_line
from optbench.tracking.scalar_layout import ScalarTags


@dataclass
class EpochTotals:
    """Sums over the current epoch's optimizer steps, kept on the device (and checkpointed)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # the task's metric sums
    grad_norm: float | torch.Tensor = 0.0
    counted_samples: float | torch.Tensor = 0.0  # of the steps whose update was kept
    counted_steps: float | torch.Tensor = 0.0
    samples: int = 0  # every sample trained on, for throughput
    time_s: float = 0.0  # training time of the epoch so far, across an interruption

    def add(self, result: StepResult) -> None:
        sums, samples, grad_norm = result.counted()
        for key, value in sums.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.grad_norm = self.grad_norm + grad_norm
        self.counted_samples = self.counted_samples + samples
        self.counted_steps = self.counted_steps + (1.0 if result.kept is None else result.kept)
        self.samples += result.samples

    def means(self, task: Task) -> dict[str, float]:
        """The epoch's training metrics (`train_loss`, ...) and mean gradient norm (one sync)."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        counts = [self.grad_norm, self.counted_samples, self.counted_steps]
        device = next(iter(self.sums.values())).device
        counts = [torch.as_tensor(c, dtype=torch.float32, device=device) for c in counts]
        values = to_host(torch.stack([*(v.float() for v in self.sums.values()), *counts]))
        *sums, grad_norm, samples, steps = values
        metrics = task.metrics(dict(zip(keys, sums, strict=True)), max(samples, 1))
        return {f"train_{k}": v for k, v in metrics.items()} | {
            "grad_norm": grad_norm / max(steps, 1)
        }


@dataclass
class PendingStep:
    step: int
    result: StepResult
    lrs: list[float]
    momenta: list[float | None]


class DiscardingWriter:
    """The SummaryWriter of ranks other than 0: rank 0 alone writes the run's files."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@dataclass
class TrainingLog:
    run_dir: Path | None  # None: another rank writes metrics.jsonl
    writer: SummaryWriter | DiscardingWriter
    tags: ScalarTags  # which optional families this run writes
    interval: int
    pending: list[PendingStep] = field(default_factory=list)
    scaler_skips: int = 0
    latest_loss: float = float("nan")

    def step(self, step: int, result: StepResult, optimizer: torch.optim.Optimizer) -> bool:
        """Record optimizer step `step`; returns True when this call flushed to disk."""
        groups = optimizer.param_groups
        lrs = [float(g["lr"]) for g in groups]
        self.pending.append(
            PendingStep(step, result, lrs, [momentum_coefficient(g) for g in groups])
        )
        self.scaler_skips += result.scaler_skipped
        if len(self.pending) >= self.interval:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        if not self.pending:
            return
        values = to_host(
            torch.stack(
                [
                    torch.stack([p.result.loss, p.result.grad_norm, p.result.clipped_grad_norm])
                    for p in self.pending
                ]
            )
        )
        for p, (loss, norm, clipped) in zip(self.pending, values, strict=True):
            self.writer.add_scalar("train/loss_step", loss, p.step)
            self.writer.add_scalar("grad_norm/before_clip", norm, p.step)
            if self.tags.clipping:
                self.writer.add_scalar("grad_norm/after_clip", clipped, p.step)
            for name, lr, momentum in zip(self.tags.groups, p.lrs, p.momenta, strict=True):
                self.writer.add_scalar(f"lr/{name}", lr, p.step)
                if self.tags.momentum and momentum is not None:
                    self.writer.add_scalar(f"momentum/{name}", momentum, p.step)
        if self.tags.scaler:
            self.writer.add_scalar(
                "train/scaler_skipped_steps", self.scaler_skips, self.pending[-1].step
            )
        self.latest_loss = values[-1][0]
        self.pending.clear()

    def epoch(self, record: dict[str, Any]) -> dict[str, Any]:
        """Close an epoch: write its record (training means included) and return it."""
        self.flush()
        self.evaluation(record)
        return record

    def evaluation(self, record: dict[str, Any]) -> None:
        """Write a metrics.jsonl record: an epoch's, or an evaluation's between epochs."""
        if self.run_dir is not None:
            append_json_line(self.run_dir / "metrics.jsonl", record)
        # Everything on the optimizer-step axis, so runs with different epoch lengths line up
        # and a resumed run can purge what was logged after its checkpoint; the axis makes
        # `step` and `epoch` curves of themselves.
        for key, value in record.items():
            if key not in ("step", "examples", "epoch") and isinstance(value, int | float):
                self.writer.add_scalar(epoch_tag(key), value, record["step"])


def epoch_tag(key: str) -> str:
    """TensorBoard tag of a metrics.jsonl key: `val_acc` -> `val/acc`, `images_per_s` -> `epoch/images_per_s`."""
    split, _, metric = key.partition("_")
    if split in ("train", "val", "test") and metric != "time_s":
        return f"{split}/{metric}"
    return f"epoch/{key}"
