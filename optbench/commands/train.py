"""`optbench train`: check every job of the run or sweep, then train each."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from optbench.run.plan import device_for_job
from optbench.tracking.results import DIVERGED, objective
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
    cfg.trainer.device = device_for_job(cfg.trainer.device, job_num, torch.cuda.device_count())
    results = train(cfg, run_dir)
    if results["status"] == DIVERGED and not sweeping:
        logging.getLogger("optbench").error("the run diverged (results.json has the diagnosis)")
        raise SystemExit(DIVERGED_EXIT_CODE)
    return objective(results)


__all__ = ["check_train_config", "run_train"]
