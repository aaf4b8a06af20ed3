"""What a search leaves beside its runs: search.json, and Optuna's history and importance plots.

Importances are fANOVA's (Optuna's `FanovaImportanceEvaluator`): the share of the objective's
variance over the finished trials that each hyperparameter explains on its own.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import TrialState

from optbench.studies.optuna_study import FINISHED, SAMPLER_ATTR
from optbench.studies.search_outputs import HISTORY_PNG, IMPORTANCE_PNG, SUMMARY_NAME
from optbench.tracking.figures import save_png
from optbench.tracking.files import atomic_write_json, json_safe


def importances(study: optuna.Study) -> dict[str, float] | None:
    """fANOVA importance of each parameter; None until two completed trials vary something."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params for t in complete):
        return None
    try:
        return dict(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)))
    except (RuntimeError, ValueError):  # e.g. every trial has the same value
        return None


def write_summary(study: optuna.Study, sweep_dir: Path, storage_url: str) -> Path:
    """<sweep dir>/search.json: the sampler, the best trial, every trial, the importances; and
    the PNGs."""
    found = importances(study)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    summary = {
        "study_name": study.study_name,
        "storage": storage_url,
        "direction": study.direction.name.lower(),
        "sampler": study.user_attrs.get(SAMPLER_ATTR),  # its class, options and seed
        "n_finished": sum(t.state in FINISHED for t in trials),
        "best": None if best is None else trial_row(best),
        "importances": found,
        "trials": [trial_row(t) for t in trials],
    }
    path = sweep_dir / SUMMARY_NAME
    atomic_write_json(path, json_safe(summary))
    _plots(study, sweep_dir, found is not None, bool(complete))
    return path


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    value = trial.value
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": value if value is None or math.isfinite(value) else str(value),
        "params": trial.params,
        "run_status": trial.user_attrs.get("status"),
        "run_dir": trial.user_attrs.get("run_dir"),
        "retry_of": trial.user_attrs.get("retry_of"),
        "last_epoch": trial.last_step,
    }


def _plots(
    study: optuna.Study, sweep_dir: Path, with_importances: bool, any_complete: bool
) -> None:
    from optuna.visualization import matplotlib as plots  # once figures has chosen Agg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if any_complete:
            _save(plots.plot_optimization_history(study), sweep_dir / HISTORY_PNG)
        if with_importances:
            evaluator = FanovaImportanceEvaluator(seed=0)
            _save(
                plots.plot_param_importances(study, evaluator=evaluator), sweep_dir / IMPORTANCE_PNG
            )


def _save(axes: Any, path: Path) -> None:
    save_png(axes.figure, path)
