"""One trial of a search: its sampled values as overrides, one training run, its value told.

The trial's config is composed by Hydra from the command's overrides and the sampled values,
exactly as `optbench train <overrides> <values>` would compose it, and trained in-process by
the same `train` that command calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from optuna.trial import TrialState

from optbench.hydra_command import CONFIG_MODULE, VERSION_BASE
from optbench.run.plan import device_for_job
from optbench.studies.search_space import SearchSpace
from optbench.tracking.results import PRUNED, objective
from optbench.train.trainer import train

CONFIG_NAME = "train"


@dataclass(frozen=True)
class TrialRunner:
    """What every trial of this worker shares."""

    study: optuna.Study
    space: SearchSpace
    overrides: list[str]  # the command's, minus the hydra.* and search.* keys
    default_optimizer: str  # the config's, for a space that does not choose one
    sweep_dir: Path
    worker: int

    def __call__(self, trial: optuna.Trial) -> None:
        values = self.space.sample(trial, self.default_optimizer)
        run_dir = self.sweep_dir / f"{trial.number}_{dirname(values)}"
        trial.set_user_attr("run_dir", str(run_dir))
        cfg = compose_trial(self.overrides, values)
        cfg.trainer.device = device_for_job(
            cfg.trainer.device, self.worker, torch.cuda.device_count()
        )

        def on_evaluation(epoch: int, value: float) -> bool:
            trial.report(value, epoch)
            return trial.should_prune()

        # A signal ends the process inside train (results "interrupted"): the trial stays
        # RUNNING in the study, and the next command to start reclaims it.
        results = train(cfg, run_dir, on_evaluation=on_evaluation)
        trial.set_user_attr("status", results["status"])
        if results["status"] == PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:  # a diverged run scores the worst value, so the study goes on
            self.study.tell(trial, objective(results))


def overrides_of(values: dict[str, Any]) -> list[str]:
    """Sampled values as Hydra overrides; the optimizer group first, as its keys depend on it."""
    return [f"{key}={_text(value)}" for key, value in values.items()]


def compose_trial(overrides: list[str], values: dict[str, Any]) -> DictConfig:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base=VERSION_BASE):
        return compose(CONFIG_NAME, overrides=[*overrides, *overrides_of(values)])


def dirname(values: dict[str, Any]) -> str:
    """Hydra's override_dirname style, values to 3 digits: `optimizer.lr=0.00123,...`."""
    short = {k: f"{v:.3g}" if isinstance(v, float) else _text(v) for k, v in values.items()}
    return ",".join(f"{k}={v}" for k, v in sorted(short.items()))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)
