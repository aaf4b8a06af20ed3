"""`optbench train`: check every job of the run or sweep, then train each."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from optbench.commands.launch import ranks_to_start, start_ranks
from optbench.distributed import launched
from optbench.run.plan import device_for_job
from optbench.tracking.results import DIVERGED, Results, objective
from optbench.train.preflight import check_train_config
from optbench.train.trainer import train

# A single run that diverged exits with this code, so a script notices; in a sweep (-m) the
# other jobs must go on, so there the status is only in results.json.
DIVERGED_EXIT_CODE = 3


def run_train(cfg: DictConfig, run_dir: Path) -> float:
    """One job: train, and return what a sweeper optimises."""
    hydra = HydraConfig.get()
    sweeping = hydra.mode == RunMode.MULTIRUN
    job_num = hydra.job.num if sweeping else None
    if (ranks := ranks_to_start(cfg)) > 1:
        results = _train_over_ranks(run_dir, ranks)
    else:
        if not launched().distributed:
            cfg.trainer.device = device_for_job(
                cfg.trainer.device, job_num, torch.cuda.device_count()
            )
        results = train(cfg, run_dir)
    if results["status"] == DIVERGED and not sweeping:
        logging.getLogger("optbench").error("the run diverged (results.json has the diagnosis)")
        raise SystemExit(DIVERGED_EXIT_CODE)
    return objective(results)


__all__ = ["check_train_config", "run_train"]


def _train_over_ranks(run_dir: Path, ranks: int) -> Results:
    """`trainer.devices=N`: the job's N ranks train; their results are rank 0's file."""
    code = start_ranks("train", run_dir, ranks)
    if code:  # the ranks have said why (or were interrupted and said how to resume)
        raise SystemExit(code)
    return json.loads((run_dir / "results.json").read_text())
