"""Loss and accuracy of a model on a whole split, with one host-device sync."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from optbench.data import DeviceBatches
from optbench.train.step import TrainStep


@torch.no_grad()
def evaluate(step: TrainStep, batches: DeviceBatches) -> dict[str, float]:
    """Mean loss and accuracy of `step.model` over `batches`, under the step's autocast."""
    model: nn.Module = step.model
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=step.device)
    correct = torch.zeros((), device=step.device, dtype=torch.long)
    for images, labels in batches.epoch(0):
        with step.autocast():
            logits = model(images)
        # Plain cross-entropy: label smoothing is a training device, not part of the metric.
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    model.train(was_training)
    loss, hits = torch.stack([loss_sum, correct.to(loss_sum.dtype)]).tolist()
    return {"loss": loss / batches.num_samples, "acc": hits / batches.num_samples}
