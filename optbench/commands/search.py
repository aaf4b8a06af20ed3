"""`optbench search`: a hyperparameter search driven by Optuna, each trial an optbench training run.

    optbench search +experiment=lr_wd_search [overrides ...]

The `search:` block of the config (configs/experiment/lr_wd_search.yaml documents every key) names
the space, the sampler, the pruner and the storage. Everything is checked before anything is
written: the settings, the keys of the space, and the training configs at both ends of every
range. Then `search.workers` processes ask the shared study for trials until `search.n_trials`
are finished, each training `<sweep dir>/<trial number>_<values>/` in-process; the command
writes `<sweep dir>/search.json` and the plots at the end. Running the same command again with
`hydra.sweep.dir=<sweep dir>` goes on with the study.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optbench.errors import UserError
from optbench.hydra_command import check_output_location, initialize_configs, one_line
from optbench.studies.optuna_study import (
    FINISHED,
    SearchSettings,
    check_storage,
    count,
    open_study,
    read_settings,
    reclaim_running,
    work,
)
from optbench.studies.search_space import GROUP_KEY, SearchSpace
from optbench.studies.search_summary import write_summary
from optbench.studies.search_trial import (
    CONFIG_NAME,
    TrialRunner,
    check_sampled_keys,
    check_trials,
)
from optbench.tracking.console import log_through_console

PROG = "optbench search"
LOCK_NAME = ".search.lock"
# What the command sets for the worker processes it starts.
_WORKER_KEYS = ("hydra.sweep.dir", "search.workers", "search.worker", "search.reclaim")
log = logging.getLogger("optbench")


@dataclass(frozen=True)
class Search:
    settings: SearchSettings
    overrides: list[str]
    sweep_dir: Path
    storage_url: str
    maximize: bool
    default_optimizer: str


def prepare(overrides: list[str]) -> Search:
    """Compose and check everything the search will run; writes nothing."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        for o in parsed:
            if o.is_sweep_override():
                raise UserError(
                    f"'{o.input_line}' lists several values; put what to search in search.space"
                )
        with initialize_configs():
            cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
            block = OmegaConf.to_container(cfg.search, resolve=True) if "search" in cfg else None
            sweep_dir = Path(str(cfg.hydra.sweep.dir)).resolve()
        settings = read_settings(block, sweep_dir)
        default_optimizer = str(cfg.optimizer.name)
        check_samples_something(settings.space, default_optimizer)
        check_sampled_keys(parsed, settings.space, default_optimizer)
        maximize = check_trials(settings.space, overrides, default_optimizer)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(one_line(err)) from None
    check_output_location(sweep_dir)
    url = settings.storage_url(sweep_dir)
    if settings.storage is None:  # a sweep dir to resume: its optuna.db must be a database
        check_storage(url, "hydra.sweep.dir", sweep_dir)
    # The workers must share one folder: a ${now:...} in it is resolved here, once.
    pinned = [o for o in overrides if o.split("=")[0].lstrip("+~") not in _WORKER_KEYS]
    if "'" in str(sweep_dir) or "\\" in str(sweep_dir):
        raise UserError(f"the sweep dir must not hold quotes or backslashes: {sweep_dir}")
    pinned.append(f"hydra.sweep.dir='{sweep_dir}'")
    return Search(settings, pinned, sweep_dir, url, maximize, default_optimizer)


def check_samples_something(space: SearchSpace, default_optimizer: str) -> None:
    """A search that samples nothing would train one setting n_trials times."""
    optimizers = space.optimizers(default_optimizer)
    sampled = {d.key for name in optimizers for d in space.dimensions(name)} - {GROUP_KEY}
    if not sampled and len(set(optimizers)) < 2:
        raise UserError(
            "search.space holds nothing to sample; give a dimension, e.g. "
            "'search.space.optimizer.lr={type: float, low: 1.0e-5, high: 1.0e-1, log: true}'"
        )


def search(s: Search) -> optuna.Study:
    """Open or resume the study, run the workers, write the summary."""
    s.sweep_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(s.settings, s.storage_url, s.maximize)
    if s.settings.reclaim and (again := reclaim_running(study)):
        log.warning("trials %s were left running by a stopped worker: asked again", again)
    done = count(study, FINISHED)
    log.info("study '%s' in %s: %d of %d trials finished", study.study_name, s.storage_url,
             done, s.settings.n_trials)  # fmt: skip
    if s.settings.workers == 1:
        runner = TrialRunner(
            study, s.settings.space, s.overrides, s.default_optimizer, s.sweep_dir,
            s.settings.worker,
        )  # fmt: skip
        work(study, s.settings.n_trials, s.sweep_dir / LOCK_NAME, runner)
    else:
        _run_workers(s)
    write_summary(study, s.sweep_dir, s.storage_url)
    return study


def _run_workers(s: Search) -> None:
    """`search.workers` processes of this command, one study: each asks when it is free."""
    workers = [subprocess.Popen(worker_command(s, i)) for i in range(s.settings.workers)]
    codes = [w.wait() for w in workers]
    if any(codes):
        raise WorkerFailed(f"search workers exited with codes {codes}", max(codes))


def worker_command(s: Search, worker: int) -> list[str]:
    """Worker `worker`'s command line: this one's overrides, one worker, no bar (the workers
    share this terminal, and their bars would overwrite each other's lines; the bar is
    bookkeeping, so a resumed trial's config still matches)."""
    return [
        sys.executable, "-m", "optbench", "search", *s.overrides,
        "search.workers=1", f"search.worker={worker}", "search.reclaim=false",
        "trainer.progress=false",
    ]  # fmt: skip


class WorkerFailed(Exception):
    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


USAGE = f"""usage: {PROG} [OVERRIDE ...]

Search hyperparameters with Optuna: each trial is an optbench train run with the sampled values
as overrides. The search: block of the config sets the space, sampler, pruner, storage and
workers; start from +experiment=lr_wd_search, e.g.
  {PROG} +experiment=lr_wd_search search.n_trials=16 search.pruner=median
  {PROG} +experiment=lr_wd_search search.workers=2 hydra.sweep.dir=outputs/search/lr_wd
Writes <sweep dir>/<trial>_<values>/ per trial, <sweep dir>/optuna.db, search.json and plots;
the same command with the same hydra.sweep.dir resumes the study."""


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    if flags := [a for a in argv if a.startswith("-")]:
        raise UserError(f"unknown option {flags[0]}; pass optbench train overrides only")
    plan = prepare(argv)
    log_through_console()
    log.setLevel(logging.INFO)
    try:
        study = search(plan)
    except WorkerFailed as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.returncode
    finished = count(study, FINISHED)
    best = (
        f"best trial {study.best_trial.number}: {study.best_value:.4g} with {study.best_params}"
        if count(study, (optuna.trial.TrialState.COMPLETE,))
        else "no completed trial yet"
    )
    print(f"{PROG}: {finished} trials finished; {best}; wrote {plan.sweep_dir / 'search.json'}")
    return 0
