"""The TensorBoard HParams entry of a run: its main settings beside its final metrics."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from optbench.tracking.results import best_key, final_key

# Besides the final and best value of the run's main metric (results["metric"]).
COSTS = ("final_train_loss", "train_time_s", "images_per_s")


def run_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The settings a sweep varies, flattened to the scalar types HParams accepts."""
    t = cfg.trainer
    values = {
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "optimizer": cfg.optimizer.name,
        "scheduler": cfg.scheduler.name,
        "lr": cfg.optimizer.lr,
        "weight_decay": cfg.optimizer.get("weight_decay"),
        "batch_size": t.batch_size,
        "accumulation": t.accumulation,
        "epochs": t.epochs,
        "amp": t.amp,
        "clip": t.clip.mode if t.clip.mode == "none" else f"{t.clip.mode}:{t.clip.max}",
        "seed": t.seed,
    }
    return {k: v for k, v in values.items() if isinstance(v, int | float | str | bool)}


def write_hparams(writer: SummaryWriter, cfg: DictConfig, results: dict[str, Any]) -> None:
    metrics = {
        f"hparams/{key}": float(results[key])
        for key in (final_key(results["metric"]), best_key(results["metric"]), *COSTS)
        if isinstance(results.get(key), int | float) and math.isfinite(results[key])
    }
    experiment, start, end = hparams(run_hparams(cfg), metrics)
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)
    for key, value in metrics.items():
        writer.add_scalar(key, value)
