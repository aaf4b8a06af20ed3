"""The one training loop every optbench run goes through.

`train` builds the run (optbench/run/build.py), starts or resumes a `Training`, and runs
`_train_epochs`: epochs, steps, logging, evaluation, checkpoints and stop conditions, on
one screen. Everything the loop keeps is in `Training`; what it checkpoints is `TrainState`.
Each evaluation reads the validation split, which every decision (the best point, targets,
plateau, a pruner) is made on, and the test split, which is only reported.
Split over several processes (DDP), every rank runs this loop in lockstep on its share of
each batch; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from optbench.data import Batch
from optbench.distributed import any_rank
from optbench.errors import UserError
from optbench.lr_finder.finder import find_lr
from optbench.lr_finder.outputs import summary, write_outputs
from optbench.run import Run, build_run
from optbench.run.auto_lr import with_found_lr
from optbench.run.evaluate import evaluate
from optbench.run.plan import synchronize
from optbench.run.rng import rng_state, set_rng_state
from optbench.run.step import NonFiniteStep
from optbench.tracking.console import ProgressBar, console, print_path, summary_table
from optbench.tracking.diagnostics import StepDiagnostics
from optbench.tracking.files import atomic_write_json, atomic_write_text
from optbench.tracking.hparams import write_hparams
from optbench.tracking.loggers import RunLoggers, build_loggers
from optbench.tracking.results import (
    COMPLETED,
    DIVERGED,
    INTERRUPTED,
    PRUNED,
    RESULTS_SCHEMA,
    Results,
    best_key,
)
from optbench.tracking.run_info import run_info
from optbench.tracking.scalar_layout import ScalarTags, write_layout
from optbench.tracking.training_log import DiscardingWriter, EpochTotals, TrainingLog
from optbench.train import checkpoint
from optbench.train.interrupts import StopSignals
from optbench.train.resume import check_resumable, find_resume, with_saved_lrs
from optbench.train.run_lock import RunDirLock

log = logging.getLogger("optbench")


@dataclass
class TrainState:
    """Where training stands: checkpointed, and summarised in results.json."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch consumed (non-zero only mid-epoch)
    step: int = 0  # optimizer steps completed
    train_time_s: float = 0.0  # training only: evaluation is timed separately
    eval_time_s: float = 0.0
    images: int = 0  # training samples processed
    best: float | None = None  # of the task's main validation metric
    best_epoch: float | None = None  # an epoch count; fractional for a mid-epoch evaluation
    best_step: int | None = None
    test_at_best: dict[str, float] | None = None  # the test metrics at the best validation point
    nonfinite_skips: int = 0
    time_to_target: dict[str, dict[str, float] | None] = field(default_factory=dict)
    lr_finder: dict[str, Any] | None = None  # the LR the range test found for `auto`, and how
    records: int = 0  # lines in metrics.jsonl
    last: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics.jsonl record
    last_eval: dict[str, float] = field(default_factory=dict)  # the last evaluation's metrics


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


def train(
    cfg: DictConfig, run_dir: Path, on_evaluation: Callable[[int, float], bool] | None = None
) -> Results:
    """Train as `cfg` says, write everything into `run_dir`, return the results.

    With `trainer.resume` the run continues from a checkpoint, in the run directory that
    holds it, and ends exactly as the uninterrupted run would have. `on_evaluation(step,
    value of the main validation metric)` hears every evaluation; True stops the run as
    "pruned".
    """
    wall_start = time.perf_counter()
    resume = find_resume(cfg.trainer.resume, run_dir)
    if resume is not None:
        run_dir = resume[0].parent.parent
        cfg = with_saved_lrs(cfg, resume[1])
    else:
        refuse_overwrite(run_dir)
    run = build_run(cfg)
    if resume is not None:
        check_resumable(run.cfg, resume[1], run_dir)
    main = run.plan.world.main
    with RunDirLock(run_dir) if main else nullcontext():  # one run per run directory
        if main:
            checkpoint.remove_partial_writes(run_dir)  # of a write killed before its rename
        lr_finder = _find_auto_lr(run, run_dir) if run.base_lr is None else None
        training = Training.start(run, run_dir, lr_finder, resume)
        training.on_evaluation = on_evaluation
        bar = ProgressBar(run.plan.total_steps, enabled=run.cfg.trainer.progress and main)
        with training.trackers:  # a tracker's run is closed as failed if training raises
            with StopSignals() as stop, bar:
                status, diagnosis = _train_epochs(training, stop, bar)
            results = training.finish(status, diagnosis, time.perf_counter() - wall_start)
    if status == INTERRUPTED:
        log.warning(
            "interrupted at step %d; continue with trainer.resume=%s", training.state.step, run_dir
        )
        stop.forward()
        raise SystemExit(stop.exit_code)
    return results


def refuse_overwrite(run_dir: Path) -> None:
    """A new run never replaces an earlier run's results, metrics or checkpoints."""
    records = run_dir / "metrics.jsonl"
    earlier = [run_dir / "results.json", run_dir / checkpoint.FOLDER]
    if any(p.exists() for p in earlier) or (records.is_file() and records.stat().st_size):
        raise UserError(
            f"{run_dir} holds an earlier run; continue it with trainer.resume=auto, or write "
            "to a new folder"
        )


def _train_epochs(tr: Training, stop: StopSignals, bar: ProgressBar) -> tuple[str, dict | None]:
    """The loop. Returns the run's status and, for a divergence, its diagnosis."""
    run, state, plan, t = tr.run, tr.state, tr.run.plan, tr.run.cfg.trainer
    for epoch in range(state.epoch, plan.epochs):
        run.model.train()
        if state.batch == 0:  # not when resuming mid-epoch: it ran before the checkpoint
            run.start_epoch(epoch)
        tr.start_clock()
        status, diagnosis = COMPLETED, None
        for micro_batches in optimizer_steps(
            run.data.train_batches.epoch(epoch, state.batch), plan.accumulation
        ):
            run.prepare_step(state.step)
            before = tr.diagnostics.capture() if tr.diagnostics.due(state.step) else None
            try:
                result = run.step(micro_batches, state.step)
            except NonFiniteStep as bad:
                message = f"non-finite value at step {state.step} (epoch {epoch + 1}, lr {_lrs(run)}): {bad}"
                if t.on_nonfinite == "skip":
                    log.warning("%s; step skipped (trainer.on_nonfinite=skip)", message)
                    state.nonfinite_skips += 1
                    tr.advance(len(micro_batches))
                    continue
                log.error("%s; stopping (trainer.on_nonfinite=stop)", message)
                status, diagnosis = DIVERGED, tr.diagnosis(epoch, bad)
                break
            if before is not None:
                tr.diagnostics.write(state.step, before)
            tr.totals.add(result)
            tr.advance(len(micro_batches))
            run.lookahead.after_step(state.step)
            logged = tr.log.step(state.step - 1, result, run.optimizer)
            if logged:
                tr.track_step()
                bar.update(state.step, f"epoch {epoch + 1}/{plan.epochs}",
                           loss=tr.log.latest_loss, lr=run.optimizer.param_groups[0]["lr"])  # fmt: skip
                if (diagnosis := tr.check_guard(epoch)) is not None:
                    status = DIVERGED
                    break
            if tr.evaluation_due(state.step):
                if (diagnosis := tr.check_guard(epoch)) is not None:
                    status = DIVERGED
                    break
                tr.evaluate_mid_epoch(epoch)
                if tr.prune:
                    status = PRUNED
                    break
            if tr.stop_requested(stop, logged):
                status = INTERRUPTED
                break
        if status == COMPLETED and (diagnosis := tr.check_guard(epoch)) is not None:
            status = DIVERGED
        tr.stop_clock()
        if status != COMPLETED:  # stopped mid-epoch: keep the state before the bad step
            tr.stop_mid_epoch()
            return status, diagnosis
        record = tr.end_epoch(epoch)
        bar.update(state.step, f"epoch {epoch + 1}/{plan.epochs}", redraw=True,
                   loss=tr.log.latest_loss, lr=run.optimizer.param_groups[0]["lr"])  # fmt: skip
        if tr.stop_requested(stop, True):
            status = INTERRUPTED
        elif tr.prune and state.epoch < plan.epochs:
            status = PRUNED
        if status != COMPLETED or (t.checkpoint_every and state.epoch % t.checkpoint_every == 0):
            tr.save()
        # Logged once the checkpoint is on disk: a signal after this line stops the next epoch.
        _log_epoch(record, plan.epochs)
        if status != COMPLETED:
            return status, None
    tr.save()
    return COMPLETED, None


@dataclass
class Training:
    """A run in progress: the built run, its state, the epoch's totals and its outputs."""

    run: Run
    run_dir: Path
    state: TrainState
    totals: EpochTotals
    writer: SummaryWriter
    log: TrainingLog
    diagnostics: StepDiagnostics
    trackers: RunLoggers  # MLflow, W&B: what TensorBoard and metrics.jsonl get, if enabled
    on_evaluation: Callable[[int, float], bool] | None = None  # a search's pruner listening
    prune: bool = False  # what on_evaluation answered last
    clock_start: float = 0.0  # when the current stretch of training time began

    @classmethod
    def start(
        cls, run: Run, run_dir: Path, lr_finder: dict[str, Any] | None,
        resume: tuple[Path, dict[str, Any]] | None,
    ) -> Training:  # fmt: skip
        t, main = run.cfg.trainer, run.plan.world.main
        state = TrainState(time_to_target={str(x): None for x in t.targets}, lr_finder=lr_finder)
        totals = EpochTotals()
        if resume is not None:
            _restore(resume[1], run, state, totals)
            if main:
                _truncate_metrics(run_dir / "metrics.jsonl", state.records)
            log.info(
                "resuming %s from %s (epoch %d, step %d)",
                run_dir,
                resume[0].name,
                state.epoch,
                state.step,
            )
        elif main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(run.cfg, resolve=True))
            atomic_write_json(
                run_dir / "run_info.json",
                run_info(run.plan.device, run.plan.world.size) | {"data_split": run.data_split},
            )
        purge = state.step if resume else None
        writer = SummaryWriter(str(run_dir), purge_step=purge) if main else DiscardingWriter()
        tags = ScalarTags.of(run)
        if main and resume is None:
            write_layout(writer, tags)
        training_log = TrainingLog(run_dir if main else None, writer, tags, t.log_interval)
        if resume is not None:
            training_log.scaler_skips = resume[1]["log"]["scaler_skips"]
            training_log.latest_loss = resume[1]["log"]["latest_loss"]
        # Weight and momentum norms are the same on every rank: measured once, on rank 0.
        diagnostics = StepDiagnostics(run.optimizer, writer, t.diagnostics_interval if main else 0)
        trackers = build_loggers(run.cfg, main)
        trackers.start(OmegaConf.to_container(run.cfg, resolve=True), run_dir)
        if run.plan.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.plan.device)
        cfg, plan = run.cfg, run.plan
        log.info(
            "training %s on %s with %s + %s: %d epoch%s x %d optimizer steps on %s; writing to %s",
            cfg.model.name, cfg.dataset.name, cfg.optimizer.name, cfg.scheduler.name,
            plan.epochs, "s" * (plan.epochs != 1), plan.steps_per_epoch, plan.device, run_dir,
        )  # fmt: skip
        return cls(run, run_dir, state, totals, writer, training_log, diagnostics, trackers)

    def track_step(self) -> None:
        """At a log write: the latest step's loss and LRs, on TensorBoard's step axis."""
        lrs = (g["lr"] for g in self.run.optimizer.param_groups)
        values = {f"lr/{name}": lr for name, lr in zip(self.run.group_names, lrs, strict=True)}
        self.trackers.log_metrics(
            {"train/loss_step": self.log.latest_loss} | values, self.state.step - 1
        )

    def advance(self, batches: int) -> None:
        self.state.step += 1
        self.state.batch += batches

    def start_clock(self) -> None:
        synchronize(self.run.plan.device)
        self.clock_start = time.perf_counter()

    def stop_clock(self) -> None:
        """Add the training time since `start_clock` (queued GPU work included) to the epoch."""
        synchronize(self.run.plan.device)
        self.totals.time_s += time.perf_counter() - self.clock_start

    def stop_requested(self, stop: StopSignals, at_sync_point: bool) -> bool:
        """Whether to stop here for a signal. Ranks agree only where the loop already waits
        (log points, epoch ends), so that all of them stop at the same step."""
        if not self.run.plan.world.distributed:
            return stop.requested
        return at_sync_point and any_rank(stop.requested)

    def save(self) -> None:
        if not self.run.plan.world.main:
            return  # every rank holds the same state: rank 0 writes it
        payload = {
            "config": OmegaConf.to_yaml(self.run.cfg, resolve=True),
            "model": self.run.model.state_dict(),
            "optimizer": self.run.optimizer.state_dict(),
            "schedule": self.run.schedule.state_dict(),
            "scaler": self.run.step.scaler.state_dict(),
            "lookahead": self.run.lookahead.state_dict(),
            "rng": rng_state(),
            "state": asdict(self.state),
            "totals": asdict(self.totals),
            "log": {"scaler_skips": self.log.scaler_skips, "latest_loss": self.log.latest_loss},
        }
        keep = self.run.cfg.trainer.keep_checkpoints
        checkpoint.save_checkpoint(self.run_dir, self.state.step, payload, keep=keep)

    def stop_mid_epoch(self) -> None:
        """Count the epoch's partial time and samples, and checkpoint where training stopped."""
        self.state.train_time_s += self.totals.time_s
        self.state.images += self.totals.samples
        # Already counted: the resumed epoch adds only its own time and samples.
        self.totals.time_s, self.totals.samples = 0.0, 0
        self.log.flush()
        self.save()

    def evaluation_due(self, step: int) -> bool:
        """With `trainer.eval_every` steps, whether to evaluate after `step` within the run
        (its last step is evaluated at the end of the last epoch)."""
        every = self.run.cfg.trainer.eval_every
        return bool(every) and step % every == 0 and step < self.run.plan.total_steps

    def evaluate(self) -> dict[str, float]:
        """The task's metrics on every held-out split: `val_acc`, `test_acc`, ..."""
        start = time.perf_counter()
        data, t = self.run.data, self.run.cfg.trainer
        metrics = evaluate(self.run.step, data.evaluated_splits(), data.train_batches, t.tta)
        self.state.eval_time_s += time.perf_counter() - start
        return metrics

    def evaluate_mid_epoch(self, epoch: int) -> None:
        """An evaluation between epoch ends (`trainer.eval_every`): its own metrics.jsonl line."""
        self.stop_clock()
        state, totals, plan = self.state, self.totals, self.run.plan
        record = {
            "epoch": round(epoch + state.batch / plan.batches_per_epoch, 4), "step": state.step,
            "examples": state.images + totals.samples,
            "train_time_s": state.train_time_s + totals.time_s,
        } | self.evaluate()  # fmt: skip
        self.log.evaluation(record)
        self.trackers.log_record(record)
        state.records += 1
        self.after_evaluation(record)
        self.start_clock()

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Evaluate if due, write the epoch's record, update best and time-to-target."""
        run, state, totals, t = self.run, self.state, self.totals, self.run.cfg.trainer
        state.train_time_s += totals.time_s
        state.images += totals.samples
        record: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "examples": state.images}
        by_epochs = not t.eval_every and (epoch + 1) % t.eval_interval == 0
        evaluated = by_epochs or epoch + 1 == run.plan.epochs
        if evaluated:
            record |= self.evaluate()
        record |= {
            "lr": dict(
                zip(run.group_names, (g["lr"] for g in run.optimizer.param_groups), strict=True)
            ),
            "epoch_time_s": totals.time_s,
            "images_per_s": totals.samples / totals.time_s if totals.time_s else None,
            "train_time_s": state.train_time_s,
        }
        if run.plan.device.type == "cuda":
            record["peak_memory_mb"] = torch.cuda.max_memory_allocated(run.plan.device) / 2**20
        record |= totals.means(run.task)
        record = self.log.epoch(record)
        self.trackers.log_record(record)
        state.records += 1
        if evaluated:
            self.after_evaluation(record)
        state.epoch, state.batch, state.last = epoch + 1, 0, record
        self.totals = EpochTotals()
        return record

    def after_evaluation(self, record: dict[str, Any]) -> None:
        """What an evaluation decides, on the validation split alone: the plateau schedule,
        the best point, the targets reached and a pruner's verdict."""
        run, state = self.run, self.state
        state.last_eval = {k: v for k, v in record.items() if k.startswith(("val_", "test_"))}
        if not run.has_val:
            return
        run.schedule.evaluated(record, state.step)
        metric = run.metric_name()
        value = record[metric]
        if state.best is None or (value != state.best and run.reaches(metric, value, state.best)):
            state.best, state.best_epoch, state.best_step = value, record["epoch"], state.step
            state.test_at_best = {k: v for k, v in record.items() if k.startswith("test_")}
            if run.cfg.trainer.keep_best and run.plan.world.main:
                checkpoint.save_best(self.run_dir, run.model.state_dict(), state.step)
        target_metric = run.target_metric()
        for target, reached in state.time_to_target.items():
            if reached is None and run.reaches(target_metric, record[target_metric], float(target)):
                state.time_to_target[target] = {
                    k: record[k] for k in ("epoch", "step", "examples", "train_time_s")
                }
        if self.on_evaluation is not None:
            self.prune = self.on_evaluation(state.step, value)

    def check_guard(self, epoch: int) -> dict[str, Any] | None:
        """Read the deferred NaN/Inf guard: count skipped steps, or diagnose the first bad one."""
        guard = self.run.step.guard
        if guard is None:
            return None
        report = guard.report()
        if report.first_bad_step is None:
            return None
        if self.run.cfg.trainer.on_nonfinite == "skip":
            self.state.nonfinite_skips += report.skipped
            log.warning("%d non-finite steps skipped by step %d (the first: step %d)",
                        report.skipped, self.state.step, report.first_bad_step)  # fmt: skip
            return None
        log.error("non-finite value at step %d (found at step %d); stopping with the weights "
                  "before it", report.first_bad_step, self.state.step)  # fmt: skip
        self.log.flush()
        return {
            "step": report.first_bad_step,
            "epoch": epoch + 1,
            "lr": [g["lr"] for g in self.run.optimizer.param_groups],
            "loss": report.first_bad_loss,
            "nonfinite_grads": [],  # not known: the deferred check reads flags, not gradients
            "checked_steps": [report.first_bad_step, self.state.step - 1],
            "last_finite_loss": self.log.latest_loss,
        }

    def diagnosis(self, epoch: int, bad: NonFiniteStep) -> dict[str, Any]:
        self.log.flush()
        return {
            "step": self.state.step,
            "epoch": epoch + 1,
            "lr": [g["lr"] for g in self.run.optimizer.param_groups],
            "loss": bad.loss,
            "nonfinite_grads": bad.bad_params,
            "last_finite_loss": self.log.latest_loss,
        }

    def finish(self, status: str, diagnosis: dict | None, wall_time_s: float) -> Results:
        results = self.results(status, diagnosis, wall_time_s)
        if not self.run.plan.world.main:
            return results
        write_hparams(self.writer, self.run_dir, self.run.cfg, self.log.tags, results)
        self.writer.close()
        atomic_write_json(self.run_dir / "results.json", results)
        self.trackers.finish(results, self.run_dir)
        console.print(summary_table(f"run {status}", _summary_rows(results)))
        print_path("run folder", self.run_dir)
        return results

    def results(self, status: str, diagnosis: dict | None, wall_time_s: float) -> Results:
        cfg, plan, state, run = self.run.cfg, self.run.plan, self.state, self.run
        device = plan.device
        metric = run.metric_name("val" if run.has_val else "test")
        last = {k: v for k, v in state.last.items() if k.startswith("train_")} | state.last_eval
        finals = {f"final_{k}": v for k, v in last.items() if not k.endswith("_time_s")}
        results: Results = {
            "schema": RESULTS_SCHEMA, "status": status, "model": cfg.model.name,
            "dataset": cfg.dataset.name, "optimizer": cfg.optimizer.name,
            "scheduler": cfg.scheduler.name, "seed": cfg.trainer.seed, "task": run.task.name,
            "metric": metric, "higher_is_better": run.higher_is_better(metric),
            "data_split": run.data_split,
            "epochs": state.epoch, "steps": state.step,
            "planned_epochs": plan.epochs, "planned_steps": plan.total_steps,
            "best_epoch": state.best_epoch, "best_step": state.best_step,
            "test_at_best": state.test_at_best, "target_metric": run.target_metric(),
            "time_to_target": state.time_to_target,
            "wall_time_s": wall_time_s, "train_time_s": state.train_time_s,
            "eval_time_s": state.eval_time_s,
            "images_per_s": state.images / state.train_time_s if state.train_time_s else None,
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20
            if device.type == "cuda" else None,
            "scaler_skipped_steps": self.log.scaler_skips,
            "nonfinite_skipped_steps": state.nonfinite_skips,
            "diagnosis": diagnosis, "lr_finder": state.lr_finder,
        }  # fmt: skip
        return results | finals | {best_key(metric): state.best}


def _find_auto_lr(run: Run, run_dir: Path) -> dict[str, Any]:
    """Run the range test for `auto` LRs, set the run's base LR to the one found, return a record.

    The test restores the model, optimizer, scaler and RNG afterwards, so training starts
    exactly as it would have with the found LR written in the config.
    """
    cfg = run.cfg
    result = find_lr(run, cfg.lr_find)
    out_dir = run_dir / "lr_find"
    label = f"{cfg.optimizer.name} on {cfg.model.name}/{cfg.dataset.name}"
    main = run.plan.world.main
    record = write_outputs(result, out_dir, label) if main else summary(result, label)
    lr = result.chosen.lr
    if lr is None:
        raise UserError(
            f"the LR range test for auto gave no '{result.rule}' suggestion: {result.chosen.reason} "
            f"(see {out_dir / 'lr_find.png'}); set the LR explicitly"
        )
    run.cfg, replaced = with_found_lr(cfg, lr)
    run.set_base_lr(lr)
    log.info(
        "lr-find: %s = %.3g (rule %s); curve in %s",
        " and ".join(replaced),
        lr,
        result.rule,
        out_dir,
    )
    return {"lr": lr, "rule": result.rule, "applied_to": replaced} | {
        k: record[k] for k in ("suggestions", "stop_reason", "diverged_at_lr")
    }


def _lrs(run: Run) -> str:
    return ", ".join(f"{g['lr']:.3g}" for g in run.optimizer.param_groups)


def _log_epoch(record: dict[str, Any], epochs: int) -> None:
    split_metrics = "  ".join(
        f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in record.items()
        if k.startswith(("train_", "val_", "test_")) and not k.endswith("_time_s")
    )  # fmt: skip
    log.info(
        "epoch %d/%d  %s  %.0f img/s",
        record["epoch"],
        epochs,
        split_metrics,
        record["images_per_s"] or 0,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _restore(payload: dict[str, Any], run: Run, state: TrainState, totals: EpochTotals) -> None:
    device = run.plan.device
    run.model.load_state_dict(payload["model"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.schedule.load_state_dict(payload["schedule"])
    run.step.scaler.load_state_dict(payload["scaler"])
    run.lookahead.load_state_dict(payload.get("lookahead"))  # absent: written before lookahead
    set_rng_state(payload["rng"])
    for key, value in payload["state"].items():
        setattr(state, key, value)
    for key, value in payload["totals"].items():
        if key == "sums":
            value = {k: v.to(device) for k, v in value.items()}
        elif isinstance(value, torch.Tensor):
            value = value.to(device)
        setattr(totals, key, value)


def _truncate_metrics(path: Path, records: int) -> None:
    """Drop metrics.jsonl lines written after the checkpoint (they will be written again)."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        atomic_write_text(path, "".join(lines[:records]))


def _summary_rows(results: Results) -> dict[str, Any]:
    """The run's headline: the validation metric it chose by, and the test metric reported
    at the best validation point and at the end."""
    metric = results["metric"]
    test = f"test_{metric.partition('_')[2]}"
    rows = {
        f"final_{metric}": results.get(f"final_{metric}"),
        best_key(metric): results.get(best_key(metric)),
        f"{test} at best {metric}": (results.get("test_at_best") or {}).get(test),
        f"final_{test}": results.get(f"final_{test}") if test != metric else None,
    }
    rows |= {
        k: results.get(k) for k in ("final_train_loss", "steps", "train_time_s", "images_per_s")
    }
    return {k: v for k, v in rows.items() if v is not None}
