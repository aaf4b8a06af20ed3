"""An Optuna study of training runs: its settings, storage, resume and the loop a worker runs.

Optuna does the search (samplers, pruners, storage that several processes share); this module
only names its parts for the config and asks for trials one at a time (ask-and-tell), so a
free worker starts the next trial at once instead of waiting for a batch.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from optbench.checks import require_int
from optbench.errors import UserError
from optbench.hydra_command import unwritable
from optbench.studies.search_space import SearchSpace, read_space

log = logging.getLogger("optbench")


@dataclass(frozen=True)
class SamplerInfo:
    """A sampler and the options optbench gives it, all stated: Optuna's defaults change between
    versions (Optuna 5 made TPE multivariate, with a constant liar, where 4 had neither), and a
    seed should give the same trials on either. make_sampler chooses the seed."""

    sampler: Callable[..., optuna.samplers.BaseSampler]
    options: dict[str, Any]

    def build(self, seed: int) -> optuna.samplers.BaseSampler:
        return self.sampler(**self.options, seed=seed)


SAMPLERS: dict[str, SamplerInfo] = {
    # Independent TPE: Optuna 5's multivariate TPE is not 4's (its kernel widths changed), the
    # independent one proposes the same trials on both (scripts/optuna_versions.py). Constant
    # liar: a worker's proposal keeps away from the trials other workers are running.
    "tpe": SamplerInfo(
        optuna.samplers.TPESampler,
        {
            "multivariate": False,
            "group": False,
            "constant_liar": True,
            "n_startup_trials": 10,
            "n_ei_candidates": 24,
        },
    ),
    "cmaes": SamplerInfo(
        optuna.samplers.CmaEsSampler, {"n_startup_trials": 1, "consider_pruned_trials": False}
    ),
    "qmc": SamplerInfo(optuna.samplers.QMCSampler, {"qmc_type": "sobol", "scramble": True}),
    "random": SamplerInfo(optuna.samplers.RandomSampler, {}),
    "gp": SamplerInfo(
        optuna.samplers.GPSampler, {"n_startup_trials": 10, "deterministic_objective": False}
    ),
}
# The study's user attribute (and search.json's key) that records its sampler.
SAMPLER_ATTR = "sampler"

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


def read_settings(block: Any, sweep_dir: Path | None = None) -> SearchSettings:
    """`search:` as plain data; a one-line UserError for anything unusable, before any file.
    `sweep_dir`: where the search will write (a storage may be in it before it exists)."""
    if not isinstance(block, dict):
        raise UserError("the config has no search: block; start from +experiment=lr_wd_search")
    known = set(SearchSettings.__dataclass_fields__) | {"per_optimizer", "optimizers"}
    unknown = sorted(set(block) - known)
    if unknown:
        raise UserError(f"unknown key search.{unknown[0]}; search takes {', '.join(sorted(known))}")
    sampler = block.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise UserError(f"search.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    name = block.get("study_name", "search")
    if not isinstance(name, str) or not name:
        raise UserError(f"search.study_name must be a name, got {name!r}")
    reclaim = block.get("reclaim", True)
    if not isinstance(reclaim, bool):
        raise UserError(f"search.reclaim must be true or false, got {reclaim!r}")
    optimizers = block.get("optimizers")
    if isinstance(optimizers, list) and len(set(map(str, optimizers))) != len(optimizers):
        raise UserError(f"search.optimizers must list distinct optimizers, got {optimizers!r}")
    space = read_space(block.get("space"), block.get("per_optimizer"), optimizers)
    n_trials = require_int(block.get("n_trials"), "search.n_trials", 1)
    seed = require_int(block.get("seed", 0), "search.seed", 0)
    workers = require_int(block.get("workers", 1), "search.workers", 1)
    worker = require_int(block.get("worker", 0), "search.worker", 0)
    # Last: the storage check may wait for a database server.
    pruner, options, storage = read_pruner_and_storage(block, "search", sweep_dir)
    return SearchSettings(
        space=space,
        n_trials=n_trials,
        sampler=sampler,
        seed=seed,
        pruner=pruner,
        pruner_options=options,
        storage=storage,
        study_name=name,
        workers=workers,
        worker=worker,
        reclaim=reclaim,
    )


def read_pruner_and_storage(
    block: dict[str, Any], section: str, sweep_dir: Path | None = None
) -> tuple[str, dict, str | None]:
    """`<section>.pruner`, `.pruner_options` and `.storage`, checked; the storage can be opened
    (see check_storage). `sweep_dir`: the folder the command will create, where a storage may be."""
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
        check_storage(storage, f"{section}.storage", sweep_dir)
    return pruner, dict(options), storage


STORAGE_HINT = "give a database URL (sqlite:///<path>, postgresql://...) or journal:<path>"
SQLITE_HEADER = b"SQLite format 3\x00"
# How long to wait for a database server: enough for one that is up, short for a typo.
CONNECT_TIMEOUT_S = 10
# The connect argument that bounds that wait, per driver (the others keep their own).
TIMEOUT_ARGUMENTS = {
    "psycopg": "connect_timeout",
    "psycopg2": "connect_timeout",
    "pg8000": "timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
    "mysqlconnector": "connection_timeout",
}


def check_storage(url: Any, key: str, sweep_dir: Path | None = None) -> None:
    """The storage opens, checked before any file is written: an SQLite or journal file's
    folder exists (or is `sweep_dir`, which the command creates) and is writable, and the file,
    if there, is a database or a journal; a server database's driver is installed and the
    server answers. A one-line UserError naming `key` otherwise."""
    if not isinstance(url, str):
        raise UserError(f"{key} must be a string; {STORAGE_HINT}, got {url!r}")
    if url.startswith(JOURNAL_PREFIX):
        if not url[len(JOURNAL_PREFIX) :]:
            raise UserError(f"{key} '{url}' names no file; {STORAGE_HINT}")
        _check_journal(Path(url[len(JOURNAL_PREFIX) :]), key, sweep_dir)
        return
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise UserError(f"{key} '{url}' is not a storage URL; {STORAGE_HINT}") from None
    shown = parsed.render_as_string(hide_password=True)
    try:  # SQLAlchemy 2 names it import_dbapi, 1.4 dbapi
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except ImportError as err:
        other = f"{parsed.get_backend_name()}+<driver>://..."
        raise UserError(
            f"{key} '{shown}' needs the database driver {parsed.get_driver_name()}, which is not "
            f"installed ({err}); install it, or name an installed one ({other})"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(parsed.database, key, shown, sweep_dir)
    else:
        _check_server(parsed, key, shown)


def _check_journal(path: Path, key: str, sweep_dir: Path | None) -> None:
    if path.is_dir():
        raise UserError(
            f"{key}: {path} is a folder; name a file, e.g. journal:{path / 'journal.log'}"
        )
    _check_folder(path, key, sweep_dir)
    if not path.exists():
        return
    try:
        with path.open("rb") as f:
            first = f.readline()
    except OSError as err:
        raise UserError(f"{key}: cannot read {path} ({err.strerror or err})") from None
    try:
        record = json.loads(first) if first.strip() else {}
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise UserError(
            f"{key}: {path} is not an Optuna journal (its first line is no JSON record)"
        )


def _check_sqlite(database: str | None, key: str, shown: str, sweep_dir: Path | None) -> None:
    if database in (None, "", ":memory:") or database.startswith("file::memory:"):
        raise UserError(
            f"{key} '{shown}' is an in-memory database, which the workers and a resumed study "
            "cannot reach; give a file, sqlite:///<path>"
        )
    path = Path(database)
    if path.is_dir():
        raise UserError(
            f"{key}: {path} is a folder; name a file, e.g. sqlite:///{path / 'optuna.db'}"
        )
    _check_folder(path, key, sweep_dir)
    if not path.exists():
        return
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as err:
        raise UserError(f"{key}: cannot read {path} ({err.strerror or err})") from None
    if header not in (b"", SQLITE_HEADER):  # SQLite takes an empty file as an empty database
        raise UserError(f"{key}: {path} is not an SQLite database")


def _check_folder(path: Path, key: str, sweep_dir: Path | None) -> None:
    """`path`'s folder exists and takes a new file; the sweep dir may be yet to be made (the
    command checks where it goes and creates it before it opens the storage)."""
    folder = path.absolute().parent
    if sweep_dir is not None and folder == sweep_dir.absolute() and not folder.exists():
        return
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{key}: cannot write {path}: {ancestor} is a file, not a folder")
    if ancestor != folder:
        raise UserError(f"{key}: the folder of {path} does not exist ({folder}); create it first")
    if (why := unwritable(folder)) is not None:
        raise UserError(f"{key}: cannot write {path}: {folder} is not writable ({why})")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise UserError(f"{key}: cannot write {path}: permission denied")


def _check_server(url: URL, key: str, shown: str) -> None:
    """Connect once, with a short timeout: a server that is down or a wrong password is one
    line now, not a traceback after the sweep dir is made."""
    argument = TIMEOUT_ARGUMENTS.get(url.get_driver_name())
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={argument: CONNECT_TIMEOUT_S} if argument else {},
    )
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        raise UserError(f"{key}: cannot connect to {shown}: {_first_line(err)}") from None
    finally:
        engine.dispose()


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The study storage at `url` (checked by check_storage). What can still go wrong (a file
    changed since, a server gone, a database of another Optuna version) is one line."""
    try:
        if url.startswith(JOURNAL_PREFIX):
            backend = optuna.storages.journal.JournalFileBackend(url[len(JOURNAL_PREFIX) :])
            return optuna.storages.JournalStorage(backend)
        # Workers writing one SQLite file wait for each other's locks instead of failing at once.
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except (OSError, ValueError, ImportError, SQLAlchemyError, RuntimeError) as err:
        # RuntimeError: Optuna's "no longer compatible with the table schema"
        raise UserError(
            f"cannot open the study storage {_shown(url)}: {_first_line(err)}"
        ) from None


def _shown(url: str) -> str:
    """`url` without its password."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


def _first_line(err: BaseException) -> str:
    """The first line of the driver's own message (SQLAlchemy adds a traceback-like tail)."""
    lines = str(getattr(err, "orig", None) or err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


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
    study.set_user_attr(SAMPLER_ATTR, sampler_record(settings))
    return study


def sampler_record(settings: SearchSettings) -> dict[str, Any]:
    """What proposes the trials, as the study keeps it: enough to build the sampler again."""
    return {
        "name": settings.sampler,
        "class": SAMPLERS[settings.sampler].sampler.__name__,
        "options": SAMPLERS[settings.sampler].options,
        "seed": settings.seed,
        "optuna": optuna.__version__,
    }


def make_sampler(settings: SearchSettings, earlier: int) -> optuna.samplers.BaseSampler:
    """The sampler, seeded from search.seed, the worker and the trials the study already has:
    reproducible, yet a second worker or a resumed study does not repeat the first's proposals.
    QMC keeps search.seed: its points are one Sobol sequence, indexed by the study."""
    seed = settings.seed
    if settings.sampler != "qmc":
        seed = int(np.random.SeedSequence([seed, settings.worker, earlier]).generate_state(1)[0])
    with warnings.catch_warnings():  # QMC, and on Optuna 4 TPE's options, are experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[settings.sampler].build(seed)


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
