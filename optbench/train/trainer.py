"""The one training loop every optbench run goes through."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from optbench.config import flatten, is_bookkeeping
from optbench.data import Batch
from optbench.errors import UserError
from optbench.lr_finder.finder import (
    AUTO_KEYS,
    PLACEHOLDER_LR,
    auto_keys,
    find_lr,
    lr_finder_needed,
    scale_group_lrs,
    with_found_lr,
)
from optbench.lr_finder.outputs import write_outputs
from optbench.optim import with_resolved_optimizer
from optbench.schedules import Schedule, build_schedule, has_momentum
from optbench.schedules.curve import lr_range
from optbench.schedules.momentum import MomentumSchedule
from optbench.tracking.console import ProgressBar, console, summary_table
from optbench.tracking.diagnostics import StepDiagnostics
from optbench.tracking.files import atomic_write_json, atomic_write_text
from optbench.tracking.hparams import write_hparams
from optbench.tracking.run_info import run_info
from optbench.tracking.training_log import EpochTotals, TrainingLog
from optbench.train import checkpoint
from optbench.train.evaluate import evaluate
from optbench.train.interrupts import StopSignals
from optbench.train.plan import RunPlan, plan_run
from optbench.train.setup import TrainingSetup, build_setup
from optbench.train.step import NonFiniteStep

log = logging.getLogger("optbench")


@dataclass
class TrainState:
    """Where training stands: checkpointed, and summarised in results.json."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch consumed (non-zero only mid-epoch)
    step: int = 0  # optimizer steps completed
    train_time_s: float = 0.0  # training only: evaluation is timed separately
    eval_time_s: float = 0.0
    images: int = 0  # training images processed
    best_test_acc: float | None = None
    best_epoch: int | None = None
    nonfinite_skips: int = 0
    time_to_target: dict[str, dict[str, float] | None] = field(default_factory=dict)
    lr_finder: dict[str, Any] | None = None  # the LR the range test found for `auto`, and how
    records: int = 0  # lines in metrics.jsonl
    last: dict[str, Any] = field(default_factory=dict)  # the last metrics.jsonl record


def objective(results: dict[str, Any]) -> float:
    """What a sweeper (Optuna, tuning) maximises: the best test accuracy; a run that diverged
    before its first evaluation scores 0.0, a finite worst value rather than a crash."""
    return results.get("best_test_acc") or 0.0


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
    """Train as `cfg` says, write everything into `run_dir`, return the results.

    With `trainer.resume` the run continues from a checkpoint, in the run directory that
    holds it, and ends exactly as the uninterrupted run would have.
    """
    wall_start = time.perf_counter()
    cfg = with_resolved_optimizer(cfg)
    plan = plan_run(cfg)
    t = cfg.trainer
    resume = _find_resume(t.resume, run_dir)
    if resume is not None:
        run_dir = resume[0].parent.parent
        cfg = _found_lrs_from(resume[1], cfg)
        _check_resumable(cfg, resume[1], run_dir)
    finding = lr_finder_needed(cfg)
    setup = build_setup(cfg, plan, lr=PLACEHOLDER_LR if "optimizer.lr" in auto_keys(cfg) else None)
    lr_finder = None
    if finding:
        cfg, lr_finder = _run_lr_finder(cfg, setup, run_dir)
    model, optimizer, step, device = setup.model, setup.optimizer, setup.step, plan.device
    schedule = build_schedule(
        optimizer, cfg.scheduler, steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total_steps,
        base_lr=cfg.optimizer.lr,
    )  # fmt: skip
    momentum = build_momentum_schedule(cfg, optimizer, plan.steps_per_epoch)
    state = TrainState(
        time_to_target={str(target): None for target in t.targets}, lr_finder=lr_finder
    )
    totals = EpochTotals.zeros(device)
    if resume is not None:
        _restore(resume[1], setup, schedule, state, totals)
        _truncate_metrics(run_dir / "metrics.jsonl", state.records)
        log.info(
            "resuming %s from %s (epoch %d, step %d)",
            run_dir,
            resume[0].name,
            state.epoch,
            state.step,
        )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write_json(run_dir / "run_info.json", run_info(device))
    writer = SummaryWriter(str(run_dir), purge_step=state.step if resume else None)
    group_names = [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]
    training_log = TrainingLog(run_dir, writer, group_names, t.log_interval)
    diagnostics = StepDiagnostics(optimizer, writer, t.diagnostics_interval)

    def save() -> None:
        payload = _checkpoint_payload(cfg, setup, schedule, state, totals, training_log)
        checkpoint.save_checkpoint(run_dir, state.step, payload, keep=t.keep_checkpoints)

    status, diagnosis = "completed", None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log.info(
        "training %s on %s with %s + %s: %d epochs x %d optimizer steps on %s; writing to %s",
        cfg.model.name, cfg.dataset.name, cfg.optimizer.name, cfg.scheduler.name,
        plan.epochs, plan.steps_per_epoch, device, run_dir,
    )  # fmt: skip

    with StopSignals() as stop, ProgressBar(plan.total_steps, enabled=t.progress) as bar:
        for epoch in range(state.epoch, plan.epochs):
            model.train()
            synchronize(device)
            epoch_start = time.perf_counter()
            if state.batch == 0:  # not when resuming mid-epoch: it ran before the checkpoint
                momentum.epoch_start(epoch)
            for micro_batches in optimizer_steps(
                setup.train_batches.epoch(epoch, state.batch), plan.accumulation
            ):
                momentum.apply(state.step)
                sample = diagnostics.due(state.step)
                before = diagnostics.capture() if sample else None
                try:
                    result = step(micro_batches, state.step)
                except NonFiniteStep as bad:
                    message = f"non-finite value at step {state.step} (epoch {epoch + 1}, lr {_lrs(optimizer)}): {bad}"
                    if t.on_nonfinite == "skip":
                        log.warning("%s; step skipped (trainer.on_nonfinite=skip)", message)
                        state.nonfinite_skips += 1
                        _advance(state, schedule, len(micro_batches))
                        continue
                    log.error("%s; stopping (trainer.on_nonfinite=stop)", message)
                    training_log.flush()
                    status, diagnosis = (
                        "diverged",
                        _diagnosis(state, epoch, optimizer, bad, training_log),
                    )
                    break
                if sample:
                    diagnostics.write(state.step, before)
                if training_log.step(state.step, result, optimizer):
                    description = f"epoch {epoch + 1}/{plan.epochs}"
                    bar.update(
                        state.step + 1,
                        description,
                        loss=training_log.latest_loss,
                        lr=optimizer.param_groups[0]["lr"],
                    )
                totals.add(result)
                _advance(state, schedule, len(micro_batches))
                if stop.requested:
                    status = "interrupted"
                    break
            synchronize(device)
            totals.time_s += time.perf_counter() - epoch_start
            if status != "completed":
                state.train_time_s += totals.time_s
                state.images += totals.samples
                totals.time_s = 0.0  # already counted; the resumed epoch adds only its own time
                training_log.flush()
                save()  # the state before the bad step, or where the signal stopped us
                break
            record = _end_epoch(epoch, cfg, plan, setup, state, totals, schedule, training_log)
            totals = EpochTotals.zeros(device)
            if stop.requested:
                status = "interrupted"
            if status != "completed" or (
                t.checkpoint_every and state.epoch % t.checkpoint_every == 0
            ):
                save()
            # Logged once the checkpoint is on disk: a signal after this line stops the next epoch.
            _log_epoch(record, plan.epochs)
            if status != "completed":
                break
        else:
            save()

    results = _results(
        cfg, plan, state, status, diagnosis, training_log, device, time.perf_counter() - wall_start
    )
    write_hparams(writer, cfg, results)
    writer.close()
    atomic_write_json(run_dir / "results.json", results)
    console.print(
        summary_table(f"run {status}", {"run_dir": str(run_dir), **_summary_rows(results)})
    )
    if status == "interrupted":
        log.warning("interrupted at step %d; continue with trainer.resume=%s", state.step, run_dir)
        stop.forward()
        raise SystemExit(stop.exit_code)
    return results


def build_momentum_schedule(
    cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> MomentumSchedule:
    return MomentumSchedule(
        optimizer,
        cfg.momentum,
        steps_per_epoch=steps_per_epoch,
        lr_range=lr_range(cfg) if cfg.momentum.schedule == "cyclic" else None,
        scheduler_cycles_momentum=bool(cfg.scheduler.get("cycle_momentum"))
        and has_momentum(optimizer),
    )


def _run_lr_finder(
    cfg: DictConfig, setup: TrainingSetup, run_dir: Path
) -> tuple[DictConfig, dict[str, Any]]:
    """Run the range test for `auto` LRs; return the config with the found LR, and a record.

    The test restores the model, optimizer, scaler and RNG afterwards, so training starts
    exactly as it would have with the found LR written in the config.
    """
    auto_lr = "optimizer.lr" in auto_keys(cfg)
    reference_lr = (
        PLACEHOLDER_LR if auto_lr else cfg.optimizer.lr
    )  # what the optimizer was built with
    result = find_lr(setup, cfg.lr_find, reference_lr=reference_lr)
    out_dir = run_dir / "lr_find"
    record = write_outputs(
        result, out_dir, f"{cfg.optimizer.name} on {cfg.model.name}/{cfg.dataset.name}"
    )
    lr = result.chosen.lr
    if lr is None:
        raise UserError(
            f"the LR range test for auto gave no '{result.rule}' suggestion: {result.chosen.reason} "
            f"(see {out_dir / 'lr_find.png'}); set the LR explicitly"
        )
    cfg, replaced = with_found_lr(cfg, lr)
    if "optimizer.lr" in replaced:
        scale_group_lrs(setup.optimizer, lr / PLACEHOLDER_LR)
    log.info(
        "lr-find: %s = %.3g (rule %s); curve in %s",
        " and ".join(replaced),
        lr,
        result.rule,
        out_dir,
    )
    return cfg, {"lr": lr, "rule": result.rule, "applied_to": replaced} | {
        k: record[k] for k in ("suggestions", "stop_reason", "diverged_at_lr")
    }


def _found_lrs_from(payload: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """On resume, `auto` LRs are the values the first run found, not a new range test."""
    saved = OmegaConf.create(payload["config"])
    return with_found_lr(cfg, {key: OmegaConf.select(saved, key) for key in AUTO_KEYS})[0]


def _advance(state: TrainState, schedule: Schedule, batches: int) -> None:
    state.step += 1
    state.batch += batches
    schedule.step()


def _lrs(optimizer: torch.optim.Optimizer) -> str:
    return ", ".join(f"{g['lr']:.3g}" for g in optimizer.param_groups)


def _end_epoch(epoch, cfg, plan, setup, state, totals, schedule, training_log) -> dict[str, Any]:
    """Evaluate if due, write the epoch's record, update best and time-to-target."""
    t = cfg.trainer
    state.train_time_s += totals.time_s
    state.images += totals.samples
    record: dict[str, Any] = {"epoch": epoch + 1, "step": state.step}
    if (epoch + 1) % t.eval_interval == 0 or epoch + 1 == plan.epochs:
        eval_start = time.perf_counter()
        metrics = evaluate(setup.step, setup.test_batches, setup.train_batches)
        state.eval_time_s += time.perf_counter() - eval_start
        record |= {"test_loss": metrics["loss"], "test_acc": metrics["acc"]}
    groups = setup.optimizer.param_groups
    record |= {
        "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(groups)},
        "epoch_time_s": totals.time_s,
        "images_per_s": totals.samples / totals.time_s if totals.time_s else None,
        "train_time_s": state.train_time_s,
    }
    if plan.device.type == "cuda":
        record["peak_memory_mb"] = torch.cuda.max_memory_allocated(plan.device) / 2**20
    record = training_log.epoch(record, totals)
    if "test_acc" in record:
        schedule.evaluated(
            {k: record[k] for k in ("test_loss", "test_acc", "train_loss", "train_acc")}
        )
        _note_progress(state, record, epoch + 1)
    state.epoch, state.batch, state.last = epoch + 1, 0, record
    state.records += 1
    return record


def _log_epoch(record: dict[str, Any], epochs: int) -> None:
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f  test loss %s acc %s  %.0f img/s",
        record["epoch"], epochs, record["train_loss"], record["train_acc"],
        _fmt(record.get("test_loss")), _fmt(record.get("test_acc")), record["images_per_s"] or 0,
    )  # fmt: skip


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


def _diagnosis(
    state, epoch, optimizer, bad: NonFiniteStep, training_log: TrainingLog
) -> dict[str, Any]:
    return {
        "step": state.step,
        "epoch": epoch + 1,
        "lr": [g["lr"] for g in optimizer.param_groups],
        "loss": bad.loss,
        "nonfinite_grads": bad.bad_params,
        "last_finite_loss": training_log.latest_loss,
    }


def _find_resume(setting: str | None, run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint `trainer.resume` points at: null (none), auto, a run directory or a file."""
    if setting is None:
        return None
    if setting == "auto":
        return checkpoint.load_latest(run_dir) if checkpoint.list_checkpoints(run_dir) else None
    path = Path(setting).expanduser()
    if path.is_file():
        return path, checkpoint.load_checkpoint(path)
    if not path.is_dir():
        raise UserError(f"trainer.resume={setting}: no such run directory or checkpoint file")
    return checkpoint.load_latest(path)


def _check_resumable(cfg: DictConfig, payload: dict[str, Any], run_dir: Path) -> None:
    """A resumed run must compute what the interrupted one did: same config, bar bookkeeping."""

    def settings(config: DictConfig) -> dict[str, Any]:
        flat = flatten(OmegaConf.to_container(config, resolve=True))
        return {k: v for k, v in flat.items() if not is_bookkeeping(k)}

    saved, now = settings(OmegaConf.create(payload["config"])), settings(cfg)
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        details = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:4])
        raise UserError(f"cannot resume {run_dir}: its config differs in {details}")


def _checkpoint_payload(
    cfg, setup: TrainingSetup, schedule, state, totals, training_log
) -> dict[str, Any]:
    return {
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": setup.step.scaler.state_dict(),
        "rng": checkpoint.rng_state(),
        "state": asdict(state),
        "totals": asdict(totals),
        "log": {"scaler_skips": training_log.scaler_skips, "latest_loss": training_log.latest_loss},
    }


def _restore(
    payload, setup: TrainingSetup, schedule, state: TrainState, totals: EpochTotals
) -> None:
    device = setup.plan.device
    setup.model.load_state_dict(payload["model"])
    setup.optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    setup.step.scaler.load_state_dict(payload["scaler"])
    checkpoint.set_rng_state(payload["rng"])
    for key, value in payload["state"].items():
        setattr(state, key, value)
    for key, value in payload["totals"].items():
        setattr(totals, key, value.to(device) if isinstance(value, torch.Tensor) else value)


def _truncate_metrics(path: Path, records: int) -> None:
    """Drop metrics.jsonl lines written after the checkpoint (they will be written again)."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        atomic_write_text(path, "".join(lines[:records]))


def _results(
    cfg, plan: RunPlan, state: TrainState, status, diagnosis, training_log, device, wall_time_s
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
        "lr_finder": state.lr_finder,
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
