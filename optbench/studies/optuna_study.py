"""An Optuna study of training runs: its settings, storage, resume and the loop a worker runs.

Optuna does the search (samplers, pruners, storage that several processes share); this module
only names its parts for the config and asks for trials one at a time (ask-and-tell), so a
free worker starts the next trial at once instead of waiting for a batch.
"""

from __future__ import annotations

import fcntl
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from optbench.checks import require_int
from optbench.errors import UserError
from optbench.studies.search_space import SearchSpace, read_space

log = logging.getLogger("optbench")

# seed -> sampler (make_sampler chooses the seed).
SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed),
    "qmc": lambda seed: optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
}
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}
JOURNAL_PREFIX = "journal:"
# Trials that count towards n_trials; a failed one (a killed worker's) is asked again.
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class SearchSettings:
    """The `search:` block of the config, checked."""

    space: SearchSpace
    n_trials: int
    sampler: str
    seed: int
    pruner: str
    pruner_options: dict[str, Any]
    storage: str | None  # None: SQLite in the sweep dir
    study_name: str
    workers: int
    worker: int  # which local worker this process is: its GPU and its sampler seed
    reclaim: bool

    def storage_url(self, sweep_dir: Path) -> str:
        return self.storage or f"sqlite:///{sweep_dir / 'optuna.db'}"


def read_settings(block: Any) -> SearchSettings:
    """`search:` as plain data; a one-line UserError for anything unusable, before any file."""
    if not isinstance(block, dict):
        raise UserError("the config has no search: block; start from +experiment=lr_wd_search")
    known = set(SearchSettings.__dataclass_fields__) | {"per_optimizer", "optimizers"}
    unknown = sorted(set(block) - known)
    if unknown:
        raise UserError(f"unknown key search.{unknown[0]}; search takes {', '.join(sorted(known))}")
    sampler = block.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise UserError(f"search.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    pruner, options, storage = read_pruner_and_storage(block, "search")
    name = block.get("study_name", "search")
    if not isinstance(name, str) or not name:
        raise UserError(f"search.study_name must be a name, got {name!r}")
    reclaim = block.get("reclaim", True)
    if not isinstance(reclaim, bool):
        raise UserError(f"search.reclaim must be true or false, got {reclaim!r}")
    return SearchSettings(
        space=read_space(block.get("space"), block.get("per_optimizer"), block.get("optimizers")),
        n_trials=require_int(block.get("n_trials"), "search.n_trials", 1),
        sampler=sampler,
        seed=require_int(block.get("seed", 0), "search.seed", 0),
        pruner=pruner,
        pruner_options=options,
        storage=storage,
        study_name=name,
        workers=require_int(block.get("workers", 1), "search.workers", 1),
        worker=require_int(block.get("worker", 0), "search.worker", 0),
        reclaim=reclaim,
    )


def read_pruner_and_storage(block: dict[str, Any], section: str) -> tuple[str, dict, str | None]:
    """`<section>.pruner`, `.pruner_options` and `.storage`, checked."""
    pruner = block.get("pruner", "none")
    if pruner not in PRUNERS:
        raise UserError(f"{section}.pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    options = block.get("pruner_options") or {}
    try:
        PRUNERS[pruner](**options)
    except (TypeError, ValueError) as err:
        raise UserError(f"{section}.pruner_options for {pruner}: {err}") from None
    storage = block.get("storage")
    if storage is not None:
        check_storage_url(storage, f"{section}.storage")
    return pruner, dict(options), storage


def check_storage_url(url: Any, key: str) -> None:
    """An Optuna storage URL or journal:<path>, checked without connecting or writing."""
    hint = "give a database URL (sqlite:///<path>, postgresql://...) or journal:<path>"
    if not isinstance(url, str):
        raise UserError(f"{key} must be a string; {hint}, got {url!r}")
    if url.startswith(JOURNAL_PREFIX):
        if not url[len(JOURNAL_PREFIX) :]:
            raise UserError(f"{key} '{url}' names no file; {hint}")
        return
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise UserError(f"{key} '{url}' is not a storage URL; {hint}") from None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith(JOURNAL_PREFIX):
        backend = optuna.storages.journal.JournalFileBackend(url[len(JOURNAL_PREFIX) :])
        return optuna.storages.JournalStorage(backend)
    # Workers writing one SQLite file wait for each other's locks instead of failing at once.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def open_study(settings: SearchSettings, url: str, maximize: bool) -> optuna.Study:
    """Create the study, or load it to go on: the same storage and name resume a search."""
    direction = "maximize" if maximize else "minimize"
    storage = open_storage(url)
    try:
        study_id = storage.get_study_id_from_name(settings.study_name)
        earlier = len(storage.get_all_trials(study_id, deepcopy=False))
    except KeyError:
        earlier = 0
    study = optuna.create_study(
        storage=storage,
        study_name=settings.study_name,
        sampler=make_sampler(settings, earlier),
        pruner=PRUNERS[settings.pruner](**settings.pruner_options),
        direction=direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise UserError(
            f"the study '{settings.study_name}' in {url} was made to "
            f"{study.direction.name.lower()}, but this task's metric wants {direction}"
        )
    return study


def make_sampler(settings: SearchSettings, earlier: int) -> optuna.samplers.BaseSampler:
    """The sampler, seeded from search.seed, the worker and the trials the study already has:
    reproducible, yet a second worker or a resumed study does not repeat the first's proposals.
    QMC keeps search.seed: its points are one Sobol sequence, indexed by the study."""
    seed = settings.seed
    if settings.sampler != "qmc":
        seed = int(np.random.SeedSequence([seed, settings.worker, earlier]).generate_state(1)[0])
    with warnings.catch_warnings():  # "QMCSampler is experimental": chosen knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[settings.sampler](seed)


def reclaim_running(study: optuna.Study) -> list[int]:
    """Fail the trials a killed worker left running and ask for their values again.

    Only right when no other worker of the study is alive: the command does it as it starts,
    unless search.reclaim=false (Slurm array tasks, which start while others run).
    """
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("status", "run_dir")}
        study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": trial.number})
        numbers.append(trial.number)
    return numbers


def count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """One worker at a time between counting the trials and asking for one (on a shared
    folder, this holds across machines as far as its file locks do)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def work(
    study: optuna.Study, n_trials: int, lock_file: Path, run: Callable[[optuna.Trial], None]
) -> int:
    """Ask for a trial whenever free and run it, until n_trials are finished or running;
    returns how many this worker ran. `run` tells the study the trial's outcome."""
    ran = 0
    while True:
        with exclusive(lock_file):
            if count(study, TAKEN) >= n_trials:
                return ran
            trial = study.ask()
        run(trial)
        ran += 1
