"""The task's metrics of a model on a whole split, with one host-device sync.

Under DDP each rank evaluates its shard of every batch and the sums are added over ranks,
so evaluation costs 1/N of a single process's and every rank gets the same metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from optbench.data import Batch, DeviceBatches
from optbench.distributed import sum_over_ranks
from optbench.run.step import TrainStep

# Training batches used to re-estimate batch-norm statistics at Schedule-Free's eval weights.
BN_REFRESH_BATCHES = 20


def tta_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views test-time augmentation averages: the image and its mirror, and (with
    `mirror_translate`) each shifted one pixel up-left and down-right (reflect-padded)."""
    views = [images] if mode == "none" else [images, images.flip(-1)]
    if mode == "mirror_translate":
        padded = [torch.nn.functional.pad(v, (1, 1, 1, 1), mode="reflect") for v in views[:2]]
        h, w = images.shape[-2:]
        views += [p[..., :h, :w] for p in padded] + [p[..., 2:, 2:] for p in padded]
    return views


@torch.no_grad()
def evaluate(
    step: TrainStep,
    splits: dict[str, DeviceBatches],
    train_batches: DeviceBatches | None = None,
    tta: str = "none",
) -> dict[str, float]:
    """The task's metrics of the step's model on each split, named `<split>_<metric>`, under
    the step's autocast.

    For Schedule-Free optimizers the model is evaluated at the optimizer's averaged
    weights, with batch-norm statistics recomputed there from `train_batches`.
    """
    with _evaluation_weights(step, train_batches):
        return {
            f"{split}_{name}": value
            for split, batches in splits.items()
            for name, value in evaluate_batches(step, batches.epoch(0), tta).items()
        }


@torch.no_grad()
def evaluate_batches(
    step: TrainStep, batches: Iterable[Batch], tta: str = "none"
) -> dict[str, float]:
    """The task's metrics over `batches` in eval mode (one host-device sync); with `tta`, of
    the mean of the model's outputs over the augmented views."""
    model: nn.Module = step.eval_model
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    samples = 0
    for inputs, targets in batches:
        if not len(targets):  # this rank's shard of a batch smaller than the world
            continue
        with step.autocast():
            views = tta_views(inputs, tta) if tta != "none" else [inputs]
            outputs = torch.stack([model(v).float() for v in views]).mean(dim=0)
        for key, value in step.task.sums(outputs, targets).items():
            sums[key] = sums[key] + value if key in sums else value
        samples += len(targets)
    model.train(was_training)
    device = next(iter(sums.values())).device
    packed = [*(v.float() for v in sums.values()), torch.tensor(float(samples), device=device)]
    *values, samples = sum_over_ranks(torch.stack(packed)).tolist()
    return step.task.metrics(dict(zip(sums, values, strict=True)), int(samples))


@contextmanager
def _evaluation_weights(step: TrainStep, train_batches: DeviceBatches | None) -> Iterator[None]:
    """Schedule-Free trains at one point and averages at another: evaluate the average.

    Batch-norm running statistics were gathered at the training point, so they are
    re-estimated at the averaged point (as the Schedule-Free authors advise).
    """
    if not step.schedule_free:
        yield
        return
    step.optimizer.eval()
    try:
        if train_batches is not None:
            _refresh_batch_norm(step, train_batches)
        yield
    finally:
        step.optimizer.train()


def _refresh_batch_norm(step: TrainStep, train_batches: DeviceBatches) -> None:
    norms = [m for m in step.eval_model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the refresh batches
    was_training = step.eval_model.training
    step.eval_model.train()
    for i, (images, _) in enumerate(train_batches.epoch(-1)):
        if i == BN_REFRESH_BATCHES:
            break
        with step.autocast():
            step.eval_model(images)
    step.eval_model.train(was_training)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
