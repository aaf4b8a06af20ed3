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
from hydra import compose
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from optbench.errors import UserError
from optbench.hydra_command import initialize_configs
from optbench.run import build_run
from optbench.run.plan import device_for_job, require_validation
from optbench.studies.search_space import GROUP_KEY, SearchSpace
from optbench.tracking.results import PRUNED, objective
from optbench.train.preflight import check_train_config
from optbench.train.trainer import train

CONFIG_NAME = "train"
# A trial's user attribute naming its run directory (below the runner's folder); without it,
# `<trial number>_<values>`. Set where trials are planned, so that a re-asked trial trains (and
# with trainer.resume=auto, resumes) in the same folder.
RUN_NAME = "run_name"
# Results kept as user attributes of each trial.
SCORED_RESULTS = TIME_TO_TARGET, PLANNED_STEPS, TRAIN_TIME = (
    "time_to_target", "planned_steps", "train_time_s",
)  # fmt: skip
_ABSENT = object()


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
        name = trial.user_attrs.get(RUN_NAME) or f"{trial.number}_{dirname(values)}"
        run_dir = self.sweep_dir / name
        trial.set_user_attr("run_dir", str(run_dir))
        cfg = compose_trial(self.overrides, values)
        cfg.trainer.device = device_for_job(
            cfg.trainer.device, self.worker, torch.cuda.device_count()
        )

        def on_evaluation(step: int, value: float) -> bool:
            trial.report(value, step)  # the validation metric, at the optimizer step
            return trial.should_prune()

        # A signal ends the process inside train (results "interrupted"): the trial stays
        # RUNNING in the study, and the next command to start reclaims it.
        results = train(cfg, run_dir, on_evaluation=on_evaluation)
        trial.set_user_attr("status", results["status"])
        for key in SCORED_RESULTS:  # what scoring by time to target reads (studies/tuning.py)
            trial.set_user_attr(key, results[key])
        if results["status"] == PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:  # a diverged run scores the worst value, so the study goes on
            self.study.tell(trial, objective(results))


def check_trials(space: SearchSpace, overrides: list[str], default: str) -> bool:
    """Every key of the space exists, and both ends of every range train; returns whether the
    task's metric is maximised."""
    maximize = None
    for optimizer in space.optimizers(default):
        dims = space.dimensions(optimizer)
        choice = {GROUP_KEY: optimizer} if optimizer != default else {}
        base = compose_trial(overrides, choice)
        for d in dims:
            if d.key != GROUP_KEY and OmegaConf.select(base, d.key, default=_ABSENT) is _ABSENT:
                raise UserError(f"unknown key {d.key} in the search space of {optimizer}")
        for end in (0, 1):
            values = choice | {d.key: d.corners()[end] for d in dims if d.key != GROUP_KEY}
            cfg = compose_trial(overrides, values)
            check_train_config(cfg)
        if maximize is None:
            run = build_run(cfg, meta=True)
            require_validation(cfg.dataset, run.plan.dataset, "a search or tuning study")
            maximize = run.higher_is_better(run.metric_name())
    return bool(maximize)


def check_sampled_keys(parsed: list[Override], space: SearchSpace, default: str) -> None:
    """No override may set a key the trials sample: each trial's value would silently win."""
    sampled = {d.key for o in space.optimizers(default) for d in space.dimensions(o)}
    for o in parsed:
        if o.key_or_group in sampled:
            raise UserError(
                f"'{o.input_line}' sets {o.key_or_group}, which the search samples; "
                "change its range in the search space instead"
            )


def overrides_of(values: dict[str, Any]) -> list[str]:
    """Sampled values as Hydra overrides; the optimizer group first, as its keys depend on it."""
    return [f"{key}={_text(value)}" for key, value in values.items()]


def compose_trial(overrides: list[str], values: dict[str, Any]) -> DictConfig:
    with initialize_configs():
        return compose(CONFIG_NAME, overrides=[*overrides, *overrides_of(values)])


def dirname(values: dict[str, Any]) -> str:
    """Hydra's override_dirname style, values to 3 digits: `optimizer.lr=0.00123,...`."""
    short = {k: f"{v:.3g}" if isinstance(v, float) else _text(v) for k, v in values.items()}
    return ",".join(f"{k}={v}" for k, v in sorted(short.items()))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)
