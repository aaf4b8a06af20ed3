"""The one training loop every optbench run goes through."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from optbench.data import Batch
from optbench.schedules import build_schedule
from optbench.tracking.console import ProgressBar, console, summary_table
from optbench.tracking.files import atomic_write_json, atomic_write_text
from optbench.tracking.hparams import write_hparams
from optbench.tracking.run_info import run_info
from optbench.tracking.training_log import EpochTotals, TrainingLog
from optbench.train.evaluate import evaluate
from optbench.train.plan import plan_run
from optbench.train.setup import build_setup
from optbench.train.step import NonFiniteStep

log = logging.getLogger("optbench")


@dataclass
class TrainState:
    """Where training stands; everything here goes into results.json."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    train_time_s: float = 0.0  # training only: evaluation is timed separately
    eval_time_s: float = 0.0
    images: int = 0  # training images processed
    best_test_acc: float | None = None
    best_epoch: int | None = None
    nonfinite_skips: int = 0
    time_to_target: dict[str, dict[str, float] | None] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)  # the last metrics.jsonl record


def optimizer_steps(batches: Iterable[Batch], accumulation: int) -> Iterator[list[Batch]]:
    """Group micro-batches into optimizer steps; a shorter trailing group is still a step."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == accumulation:
            yield group
            group = []
    if group:
        yield group


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock intervals measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train as `cfg` says, write everything into `run_dir`, return the results."""
    wall_start = time.perf_counter()
    plan = plan_run(cfg)
    t = cfg.trainer
    setup = build_setup(cfg, plan)
    model, optimizer, step, device = setup.model, setup.optimizer, setup.step, plan.device
    schedule = build_schedule(
        optimizer,
        cfg.scheduler,
        steps_per_epoch=plan.steps_per_epoch,
        total_steps=plan.total_steps,
        base_lr=cfg.optimizer.lr,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(run_dir / "run_info.json", run_info(device))
    writer = SummaryWriter(str(run_dir))
    group_names = [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]
    training_log = TrainingLog(run_dir, writer, group_names, t.log_interval)
    state = TrainState(time_to_target={str(target): None for target in t.targets})
    status, diagnosis = "completed", None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log.info(
        "training %s on %s with %s + %s: %d epochs x %d optimizer steps on %s",
        cfg.model.name, cfg.dataset.name, cfg.optimizer.name, cfg.scheduler.name,
        plan.epochs, plan.steps_per_epoch, device,
    )  # fmt: skip

    with ProgressBar(plan.total_steps, enabled=t.progress) as bar:
        for epoch in range(plan.epochs):
            model.train()
            totals = EpochTotals.zeros(device)
            synchronize(device)
            epoch_start = time.perf_counter()
            for micro_batches in optimizer_steps(
                setup.train_batches.epoch(epoch), plan.accumulation
            ):
                try:
                    result = step(micro_batches, state.step)
                except NonFiniteStep as bad:
                    lrs = ", ".join(f"{g['lr']:.3g}" for g in optimizer.param_groups)
                    message = (
                        f"non-finite value at step {state.step} (epoch {epoch}, lr {lrs}): {bad}"
                    )
                    if t.on_nonfinite == "skip":
                        state.nonfinite_skips += 1
                        log.warning("%s; skipped (trainer.on_nonfinite=skip)", message)
                        optimizer.zero_grad(set_to_none=True)
                        state.step += 1
                        schedule.step()
                        continue
                    log.error("%s; stopping (trainer.on_nonfinite=stop)", message)
                    training_log.flush()
                    status = "diverged"
                    diagnosis = {
                        "step": state.step,
                        "epoch": epoch,
                        "lr": [g["lr"] for g in optimizer.param_groups],
                        "loss": bad.loss,
                        "nonfinite_grads": bad.bad_params,
                        "last_finite_loss": training_log.latest_loss,
                    }
                    break
                if training_log.step(state.step, result, optimizer):
                    lr = optimizer.param_groups[0]["lr"]
                    bar.update(
                        state.step + 1,
                        f"epoch {epoch + 1}/{plan.epochs}",
                        loss=training_log.latest_loss,
                        lr=lr,
                    )
                totals.add(result)
                state.step += 1
                schedule.step()
            synchronize(device)
            epoch_time = time.perf_counter() - epoch_start
            state.train_time_s += epoch_time
            state.images += totals.samples
            if status != "completed":
                break

            record: dict[str, Any] = {"epoch": epoch + 1, "step": state.step}
            if (epoch + 1) % t.eval_interval == 0 or epoch + 1 == plan.epochs:
                eval_start = time.perf_counter()
                metrics = evaluate(step, setup.test_batches, setup.train_batches)
                state.eval_time_s += time.perf_counter() - eval_start
                record |= {"test_loss": metrics["loss"], "test_acc": metrics["acc"]}
            record |= {
                "lr": {
                    name: g["lr"]
                    for name, g in zip(group_names, optimizer.param_groups, strict=True)
                },
                "epoch_time_s": epoch_time,
                "images_per_s": totals.samples / epoch_time,
                "train_time_s": state.train_time_s,
            }
            record = training_log.epoch(record, totals)
            if "test_acc" in record:
                schedule.evaluated(
                    {k: record[k] for k in ("test_loss", "test_acc", "train_loss", "train_acc")}
                )
                _note_progress(state, record, epoch + 1)
            state.epoch = epoch + 1
            state.last = record
            log.info(
                "epoch %d/%d  train loss %.4f acc %.4f  test loss %s acc %s  %.0f img/s",
                epoch + 1, plan.epochs, record["train_loss"], record["train_acc"],
                _fmt(record.get("test_loss")), _fmt(record.get("test_acc")), record["images_per_s"],
            )  # fmt: skip

    results = _results(
        cfg, plan, state, status, diagnosis, training_log, device, time.perf_counter() - wall_start
    )
    write_hparams(writer, cfg, results)
    writer.close()
    atomic_write_json(run_dir / "results.json", results)
    console.print(
        summary_table(f"run {status}", {"run_dir": str(run_dir), **_summary_rows(results)})
    )
    return results


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _note_progress(state: TrainState, record: dict[str, Any], epoch: int) -> None:
    """Best accuracy so far, and the first time each target accuracy was reached."""
    acc = record["test_acc"]
    if state.best_test_acc is None or acc > state.best_test_acc:
        state.best_test_acc, state.best_epoch = acc, epoch
    for target, reached in state.time_to_target.items():
        if reached is None and acc >= float(target):
            state.time_to_target[target] = {
                "epoch": epoch,
                "step": state.step,
                "train_time_s": state.train_time_s,
            }


def _results(
    cfg, plan, state, status, diagnosis, training_log, device, wall_time_s
) -> dict[str, Any]:
    last = state.last
    return {
        "status": status,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "optimizer": cfg.optimizer.name,
        "scheduler": cfg.scheduler.name,
        "seed": cfg.trainer.seed,
        "epochs": state.epoch,
        "steps": state.step,
        "final_test_acc": last.get("test_acc"),
        "final_test_loss": last.get("test_loss"),
        "final_train_loss": last.get("train_loss"),
        "final_train_acc": last.get("train_acc"),
        "best_test_acc": state.best_test_acc,
        "best_epoch": state.best_epoch,
        "time_to_target": state.time_to_target,
        "wall_time_s": wall_time_s,
        "train_time_s": state.train_time_s,
        "eval_time_s": state.eval_time_s,
        "images_per_s": state.images / state.train_time_s if state.train_time_s else None,
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
        "scaler_skipped_steps": training_log.scaler_skips,
        "nonfinite_skipped_steps": state.nonfinite_skips,
        "diagnosis": diagnosis,
        "planned_epochs": plan.epochs,
        "planned_steps": plan.total_steps,
    }


def _summary_rows(results: dict[str, Any]) -> dict[str, Any]:
    keys = [
        "final_test_acc",
        "best_test_acc",
        "final_train_loss",
        "steps",
        "train_time_s",
        "images_per_s",
    ]
    return {k: results[k] for k in keys if results.get(k) is not None}
