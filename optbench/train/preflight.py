"""Check a training config completely without loading data, touching the device or writing.

The run is built on the meta device (shapes only, no memory, no data) by the same
`build_run` training uses, so every value the model, optimizer or schedule rejects is
reported before a run starts; a checkpoint to resume from is read and compared here too.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from optbench.lr_finder.finder import FinderSettings
from optbench.run import build_run
from optbench.run.plan import RunPlan
from optbench.run.schema import typed
from optbench.tracking.loggers import check_loggers
from optbench.train.resume import check_resumable, find_resume, with_saved_lrs


def check_train_config(cfg: DictConfig) -> RunPlan:
    """Raise a one-line UserError for anything in `cfg` that would fail or mislead a run."""
    cfg = typed(cfg)
    check_loggers(cfg)
    FinderSettings.from_config(cfg.lr_find)  # read by lr-find and any `auto` LR
    # `auto` resumes from the job's own new directory, which only Hydra knows: checked at start.
    setting = cfg.trainer.resume
    resume = None if setting in (None, "auto") else find_resume(setting, Path("."))
    if resume is not None:
        cfg = with_saved_lrs(cfg, resume[1])
    run = build_run(cfg, meta=True)
    if resume is not None:
        check_resumable(run.cfg, resume[1], resume[0].parent.parent)
    return run.plan
