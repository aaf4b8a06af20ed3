"""Which TensorBoard scalars a run writes, and the Custom Scalars layout that shows them in the
order a reader wants: the validation and test metrics, the training loss, the LR per group,
then the diagnostics and the speed.

TensorBoard's Time Series tab sorts cards by tag name; the Custom Scalars tab follows this
layout, which every run writes once (TensorBoard merges the runs' layouts by category).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.tensorboard import SummaryWriter

from optbench.optim.momentum import momentum_in_use
from optbench.run import Run


@dataclass(frozen=True)
class ScalarTags:
    """What decides a run's tags: its metrics, splits and groups, and the optional families."""

    metrics: list[str]  # the task's, the main one first: acc, loss
    splits: list[str]  # the evaluated splits, the deciding one first: val, test
    groups: list[str]  # parameter groups: lr/<group>, ...
    momentum: bool  # momentum is on: momentum/<group> (and momentum_norm/<group>)
    clipping: bool  # trainer.clip.mode is not none: grad_norm/after_clip
    scaler: bool  # fp16's GradScaler: train/scaler_skipped_steps
    diagnostics: bool  # trainer.diagnostics_interval > 0: weight_norm/<group>, ...
    cuda: bool  # epoch/peak_memory_mb

    @classmethod
    def of(cls, run: Run) -> ScalarTags:
        main = run.task.main_metric
        t = run.cfg.trainer
        return cls(
            metrics=[main, *(m for m in run.task.directions if m != main)],
            splits=["val", "test"] if run.has_val else ["test"],
            groups=run.group_names,
            momentum=momentum_in_use(run.optimizer),
            clipping=t.clip.mode != "none",
            scaler=run.step.scaler.is_enabled(),
            diagnostics=t.diagnostics_interval > 0,
            cuda=run.plan.device.type == "cuda",
        )


Layout = dict[str, dict[str, list]]  # SummaryWriter.add_custom_scalars': {category: {chart: spec}}


def _charts(tags: list[str]) -> dict[str, list]:
    """One chart per tag, each with a line per run."""
    return {tag: ["Multiline", [f"^{tag}$"]] for tag in dict.fromkeys(tags)}


def scalars_layout(tags: ScalarTags) -> Layout:
    evaluated = [f"{split}/{m}" for m in tags.metrics for split in tags.splits]
    training = ["train/loss", "train/loss_step", *(f"train/{m}" for m in tags.metrics)]
    schedule = [f"lr/{g}" for g in tags.groups]
    schedule += [f"momentum/{g}" for g in tags.groups] if tags.momentum else []
    gradients = ["grad_norm/before_clip", *(["grad_norm/after_clip"] * tags.clipping)]
    gradients += ["epoch/grad_norm", *(["train/scaler_skipped_steps"] * tags.scaler)]
    speed = ["epoch/images_per_s", "epoch/epoch_time_s", "epoch/train_time_s"]
    speed += ["epoch/peak_memory_mb"] * tags.cuda
    layout = {
        "validation and test" if "val" in tags.splits else "test": _charts(evaluated),
        "training": _charts(training),
        "learning rate and momentum" if tags.momentum else "learning rate": _charts(schedule),
        "gradients": _charts(gradients),
    }
    if tags.diagnostics:  # every group in one chart per family: a line per run and group
        layout["weights and updates"] = {
            f"{family}/<group>": ["Multiline", [f"^{family}/"]]
            for family in ("weight_norm", "update_ratio", *["momentum_norm"] * tags.momentum)
        }
    return layout | {"speed": _charts(speed)}


def write_layout(writer: SummaryWriter, tags: ScalarTags) -> None:
    """Write the run's Custom Scalars layout (once, at its start)."""
    writer.add_custom_scalars(scalars_layout(tags))
