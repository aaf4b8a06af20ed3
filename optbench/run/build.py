"""One build: everything a run needs, from a config, as one `Run`.

`optbench train`, `lr-find`, `schedule` and the pre-flight check all call `build_run`; the
pre-flight and the schedule preview build on the meta device (shapes only, no data), so
every value the model, optimizer or schedule rejects is reported before anything starts.
Nothing else constructs an optimizer or a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from optbench.checks import is_number
from optbench.data import DeviceBatches, ImageDataset, TextDataset, load_dataset
from optbench.data.text import TokenWindows
from optbench.errors import UserError
from optbench.models import build_model
from optbench.optim import build_optimizer, info_of, with_resolved_optimizer
from optbench.optim.hessian import HutchinsonHessian
from optbench.optim.momentum import has_momentum_coefficient, momentum_in_use
from optbench.run.auto_lr import auto_keys
from optbench.run.compilation import check_compile, compile_optimizer_step, compiled_model
from optbench.run.hyperparameters import set_lrs, set_step_hyperparameters, start_epoch
from optbench.run.lookahead import Lookahead
from optbench.run.nonfinite import DeferredGuard
from optbench.run.plan import RunPlan, plan_run
from optbench.run.rng import seed_everything
from optbench.run.schema import typed
from optbench.run.step import TrainStep
from optbench.schedules import MomentumControl, Schedule, build_schedule
from optbench.tasks import Task, build_task

# Training images a data-dependent initialisation sees (airbench94 uses 5,000).
INITIALIZATION_IMAGES = 5000


@dataclass
class RunData:
    dataset: ImageDataset | TextDataset
    train_batches: DeviceBatches | TokenWindows
    val_batches: DeviceBatches | TokenWindows | None  # None: no validation split
    test_batches: DeviceBatches | TokenWindows

    def evaluated_splits(self) -> dict[str, DeviceBatches | TokenWindows]:
        """What an evaluation reads: the validation split (for every decision) and the test
        split (only reported)."""
        held_out = {"val": self.val_batches, "test": self.test_batches}
        return {name: batches for name, batches in held_out.items() if batches is not None}


@dataclass
class Run:
    """A run, built: the config (optimizer resolved), its plan and every object training needs."""

    cfg: DictConfig
    plan: RunPlan
    task: Task
    model: nn.Module  # the module whose state is saved (not the compiled wrapper)
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    momentum: MomentumControl
    step: TrainStep
    data: RunData | None  # None when built on the meta device
    base_lr: float | None  # the LR the schedule's factor multiplies; None while `auto`
    lookahead: Lookahead  # airbench's EMA of the weights, applied after each step (or off)

    @property
    def group_names(self) -> list[str]:
        return [g.get("name", str(i)) for i, g in enumerate(self.optimizer.param_groups)]

    def set_base_lr(self, lr: float) -> None:
        """Set the base LR (an `auto` LR once found, or a range-test point) at factor 1."""
        self.base_lr = lr
        set_lrs(self.optimizer, lr)

    def prepare_step(self, step: int) -> None:
        """Set the LR and momentum of optimizer step `step`, and what trains in its epoch."""
        set_step_hyperparameters(self.optimizer, self.base_lr, self.schedule, self.momentum, step)
        if hasattr(self.model, "set_epoch"):  # a function of the step, so a resume agrees
            self.model.set_epoch(step // self.plan.steps_per_epoch)

    def start_epoch(self, epoch: int) -> None:
        start_epoch(self.optimizer, self.momentum, epoch)

    @property
    def has_val(self) -> bool:
        return self.plan.dataset.val_size > 0

    @property
    def data_split(self) -> dict[str, int]:
        """Samples (text: windows) in each split: recorded in run_info.json and results.json."""
        info = self.plan.dataset
        return {"train": info.train_size, "val": info.val_size, "test": info.test_size}

    def metric_name(self, split: str = "val") -> str:
        """The task's main metric on `split`, as records and results name it: `val_acc`."""
        return f"{split}_{self.task.main_metric}"

    def higher_is_better(self, metric: str) -> bool:
        return self.task.directions[metric.partition("_")[2]] == "max"

    def reaches(self, metric: str, value: float, target: float) -> bool:
        """Whether `value` of `metric` is at least as good as `target`."""
        return value >= target if self.higher_is_better(metric) else value <= target

    def target_metric(self) -> str:
        """The validation metric `trainer.targets` are values of: the main one by default."""
        return self.cfg.trainer.target_metric or self.metric_name()


def uses_channels_last(setting: str | bool, device: torch.device, model: nn.Module) -> bool:
    """`auto`: channels-last on CUDA for convolutional models, where it is faster with AMP."""
    if setting == "auto":
        return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    return bool(setting)


def base_lr(cfg: DictConfig) -> float | None:
    """What the schedule's factor multiplies: the schedule's peak (`max_lr`) where it has one,
    else the optimizer's LR; None while it is `auto`."""
    if "scheduler.max_lr" in auto_keys(cfg):
        return None
    peak = cfg.scheduler.get("max_lr")
    if peak is not None:
        return float(peak)
    return None if cfg.optimizer.lr == "auto" else float(cfg.optimizer.lr)


def check_targets(t: DictConfig, task: Task) -> None:
    """`trainer.targets` are finite values of a validation metric the task has."""
    metric = t.target_metric
    known = [f"val_{m}" for m in task.directions]
    if metric is not None and metric not in known:
        raise UserError(
            f"trainer.target_metric must be a validation metric of the {task.name} task "
            f"({', '.join(known)}), got {metric!r}"
        )
    targets = list(t.targets) if OmegaConf.is_list(t.targets) else t.targets
    if not isinstance(targets, list) or not all(is_number(x) for x in targets):
        raise UserError(
            f"trainer.targets must be a list of numbers, e.g. [0.9, 0.93], got {targets!r}"
        )


def build_run(cfg: DictConfig, *, meta: bool = False) -> Run:
    """Build the run `cfg` describes; with `meta`, on the meta device and without data."""
    cfg = with_resolved_optimizer(typed(cfg))
    plan = plan_run(cfg)
    task = build_task(cfg)
    t = cfg.trainer
    check_targets(t, task)
    if meta:
        with torch.device("meta"):
            model = build_model(cfg.model, plan.dataset)
        # Built for the CPU: fused CUDA kernels refuse meta tensors, and only shapes matter here.
        device, data, channels_last = torch.device("cpu"), None, False
    else:
        seed_everything(t.seed, t.deterministic)
        device = plan.device
        dataset = load_dataset(cfg.dataset)
        model = build_model(cfg.model, dataset.info).to(device)
        channels_last = uses_channels_last(t.channels_last, device, model)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        data = _device_batches(cfg, plan, dataset, channels_last)
        if hasattr(model, "initialize"):  # a data-dependent initialisation (airbench's whitening)
            model.initialize(data.train_batches.first_images(INITIALIZATION_IMAGES))
        if plan.world.distributed and t.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"model={cfg.model.name} as configured has no trainable parameters")
    optimizer = build_optimizer(model, cfg.optimizer, cfg.param_groups, device)
    modes = {f"val_{m}": d for m, d in task.directions.items()}  # plateau reads validation
    schedule = build_schedule(
        cfg.scheduler, steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total_steps,
        metric_modes=modes, cycles_momentum=momentum_in_use(optimizer),
    )  # fmt: skip
    momentum = MomentumControl(
        cfg.momentum,
        steps_per_epoch=plan.steps_per_epoch,
        lr_range=schedule.lr_range() if cfg.momentum.schedule == "cyclic" else (0.0, 1.0),
        scheduler_cycles_momentum=schedule.cycles_momentum,
    )
    if momentum.active and not has_momentum_coefficient(optimizer):
        raise UserError(
            f"momentum control needs an optimizer with momentum; {type(optimizer).__name__} keeps none"
        )
    cycling = momentum.kind == "cyclic" or schedule.cycles_momentum
    compile_to = check_compile(t, momentum_changes=cycling, device=plan.device)
    if compile_to == "step" and not meta:
        compile_optimizer_step(optimizer, t.compile_mode)
    info = info_of(cfg.optimizer)
    hessian = None
    if info.hessian:
        hessian = HutchinsonHessian(cfg.optimizer.update_period, cfg.optimizer.num_samples)
    ddp = _data_parallel(model, device) if plan.world.distributed and not meta else None
    trained = ddp or model
    step = TrainStep(
        compiled_model(trained, "false" if meta else compile_to, t.compile_mode),
        optimizer,
        task,
        device=device,
        ddp=ddp,
        eval_model=compiled_model(model, compile_to, t.compile_mode) if ddp else None,
        amp=plan.amp,
        clip_mode=t.clip.mode,
        clip_max=t.clip.max,
        hessian=hessian,
        schedule_free=info.schedule_free,
        guard=DeferredGuard(model, optimizer, device, stop_on_first=t.on_nonfinite == "stop")
        if plan.deferred_check and not meta
        else None,
    )
    lookahead = Lookahead(model, t.lookahead, plan.total_steps)
    run = Run(cfg, plan, task, model, optimizer, schedule, momentum, step, data, base_lr(cfg),
              lookahead)  # fmt: skip
    if run.base_lr is not None:
        run.prepare_step(0)
    return run


def _device_batches(
    cfg: DictConfig, plan: RunPlan, dataset: ImageDataset | TextDataset, channels_last: bool
) -> RunData:
    t = cfg.trainer
    train, val, test = dataset.device_batches(
        cfg.dataset, device=plan.device, batch_size=plan.batch_size,
        eval_batch_size=t.eval_batch_size, drop_last=t.drop_last, seed=t.seed,
        channels_last=channels_last, shard=(plan.world.rank, plan.world.size),
    )  # fmt: skip
    return RunData(dataset, train, val, test)


def _data_parallel(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP over the ranks; it starts every rank from rank 0's weights and buffers."""
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
