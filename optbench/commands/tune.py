"""`optbench tune`: an equal tuning budget for every optimizer, then each one's pick on fresh seeds.

    optbench tune +experiment=tuning [overrides ...]

The protocol (optbench/studies/tuning.py) runs on the same Optuna machinery as `optbench search`:
every (optimizer, study) is one Optuna study in `<sweep dir>/optuna.db` whose trials are
enqueued with their quasi-random values fixed, and `tuning.workers` processes work through them,
each taking the next trial when it is free. Phase 1 trains the tuning studies
(`<sweep dir>/tuning/<optimizer>/<study>/<trial>/`); then each optimizer's pick, the best trial of
its median study, is trained on every eval seed (`<sweep dir>/eval/<optimizer>/seed=<s>/`). A
pruner (`tuning.pruner`) may stop poor tuning trials; the reruns are never pruned.
`<sweep dir>/tuning.json` records every trial, each study's best, the medians, the picks and the
reruns; with `tuning.target`, AlgoPerf's score too: each optimizer's median time to the target,
its performance-profile score and its speedup over `tuning.baseline` (also in `profile.png`). Running the same command with `hydra.sweep.dir=<sweep dir>` goes on where it stopped:
finished trials are kept, and a trial left running by a killed command trains again in its own
folder (resuming its checkpoint where trainer.resume=auto, as the preset sets).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
import multiprocessing
import os
import signal
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.table import Table

from optbench.checks import require_int
from optbench.errors import UserError
from optbench.hydra_command import check_output_location, initialize_configs, one_line
from optbench.report.profiles import geometric_mean_speedup, profile_scores
from optbench.studies.optuna_study import (
    PRUNERS,
    check_storage,
    open_storage,
    reclaim_running,
    work,
)
from optbench.studies.search_outputs import TUNING_NAME
from optbench.studies.search_space import SearchSpace
from optbench.studies.search_summary import trial_row
from optbench.studies.search_trial import CONFIG_NAME, TrialRunner, check_trials, overrides_of
from optbench.studies.tuning import (
    EPOCHS_KEY,
    EVAL,
    SEED_KEY,
    TARGETS_KEY,
    TUNING,
    Cell,
    Pick,
    Scoring,
    TuningSettings,
    budget,
    enqueue,
    eval_cell,
    eval_space,
    pick,
    read_settings,
    study_best,
    time_to_target,
    tuning_cells,
)
from optbench.tracking.console import console, log_through_console
from optbench.tracking.files import atomic_write_json, json_safe

PROG = "optbench tune"
LOCK_NAME = ".tune.lock"  # held by a worker between counting trials and asking for one
COMMAND_LOCK = ".tune.command.lock"  # held by the command: one at a time per sweep dir
log = logging.getLogger("optbench")


@dataclass(frozen=True)
class Tuning:
    """Everything the protocol's processes share, checked."""

    settings: TuningSettings
    overrides: list[str]  # the command's, with the sweep dir pinned
    root: Path
    storage_url: str
    maximize: bool
    epochs: int  # the config's trainer.epochs: every searched optimizer's budget
    workload: str  # dataset/model, as the score's table names it

    @property
    def scoring(self) -> Scoring:
        s = self.settings
        return Scoring(self.maximize, s.target, s.time)

    def run_overrides(self, optimizer: str) -> list[str]:
        """What every run of `optimizer` adds to the command's overrides."""
        epochs = self.settings.epochs(optimizer, self.epochs)
        timed = (
            [] if self.settings.target is None else [f"{TARGETS_KEY}=[{self.settings.target!r}]"]
        )
        return [*self.overrides, f"optimizer={optimizer}", f"{EPOCHS_KEY}={epochs}", *timed]

    def space(self, optimizer: str) -> SearchSpace:
        return SearchSpace((), {optimizer: self.settings.dimensions(optimizer)})


def prepare(overrides: list[str]) -> Tuning:
    """Compose and check every run the protocol will train; writes nothing."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        for o in parsed:
            if o.is_sweep_override():
                raise UserError(
                    f"'{o.input_line}' lists several values; the tuning protocol sweeps by "
                    "itself (set tuning.optimizers, tuning.trials, tuning.eval_seeds instead)"
                )
        with initialize_configs():
            cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
            block = OmegaConf.to_container(cfg.tuning, resolve=True) if "tuning" in cfg else None
            root = Path(str(cfg.hydra.sweep.dir)).resolve()
            epochs = require_int(cfg.trainer.epochs, "trainer.epochs", 1)
            workload = f"{cfg.dataset.name}/{cfg.model.name}"
        settings = read_settings(block, root)
        check_owned_keys(parsed, settings)
        if "'" in str(root) or "\\" in str(root):
            raise UserError(f"the sweep dir must not hold quotes or backslashes: {root}")
        # Every run pins the sweep dir: a ${now:...} in it is resolved here, once.
        pinned = [o.input_line for o in parsed if o.key_or_group != "hydra.sweep.dir"]
        url = settings.storage or f"sqlite:///{root / 'optuna.db'}"
        if settings.storage is None:  # a resumed sweep dir's own database
            check_storage(url, "hydra.sweep.dir", root)
        t = Tuning(
            settings, [*pinned, f"hydra.sweep.dir='{root}'"], root, url, True, epochs, workload
        )
        directions = [
            check_trials(t.space(name), t.run_overrides(name), name) for name in settings.optimizers
        ]
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(one_line(err)) from None
    check_output_location(root)
    return dataclasses.replace(t, maximize=directions[0])


def check_owned_keys(parsed: list[Override], settings: TuningSettings) -> None:
    """No override may set what the protocol sets per run."""
    tuned = {d.key for dims in settings.space.per_optimizer.values() for d in dims}
    owned = {"optimizer", SEED_KEY, *tuned} | (
        {TARGETS_KEY} if settings.target is not None else set()
    )
    for o in parsed:
        if o.key_or_group in owned:
            raise UserError(
                f"'{o.input_line}' sets what the tuning protocol sets per run; choose optimizers "
                "with tuning.optimizers, ranges with tuning.spaces, seeds with tuning.seed and "
                "tuning.eval_seeds, the target with tuning.target"
            )


def open_cell(t: Tuning, cell: Cell, extra: list[str]) -> optuna.Study:
    """The cell's study, created with its planned trials the first time; `extra`: the
    overrides its runs add (a rerun's pick)."""
    pruner = (
        PRUNERS[t.settings.pruner](**t.settings.pruner_options) if cell.phase == TUNING else None
    )
    study = optuna.create_study(
        storage=open_storage(t.storage_url),
        study_name=cell.name,
        sampler=optuna.samplers.RandomSampler(seed=0),  # unused: every value is enqueued
        pruner=pruner or optuna.pruners.NopPruner(),
        direction="maximize" if t.maximize else "minimize",
        load_if_exists=True,
    )
    enqueue(study, cell, extra)
    return study


def run_cells(t: Tuning, cells: list[Cell], extra: dict[str, list[str]], worker: int) -> None:
    """One worker: every cell's trials, each asked for when this worker is free. `extra`:
    overrides per optimizer (for the reruns, its pick's values)."""
    for cell in cells:
        study = open_cell(t, cell, extra.get(cell.optimizer, []))
        if cell.phase == TUNING:
            space, overrides = (
                t.space(cell.optimizer),
                [*t.run_overrides(cell.optimizer), f"{SEED_KEY}={t.settings.seed}"],
            )
        else:
            space, overrides = eval_space(t.settings), t.run_overrides(cell.optimizer)
        runner = TrialRunner(
            study, space, overrides + extra.get(cell.optimizer, []), cell.optimizer,
            t.root / cell.name, worker,
        )  # fmt: skip
        work(study, len(cell.trials), t.root / LOCK_NAME, runner)


def run_phase(t: Tuning, cells: list[Cell], extra: dict[str, list[str]]) -> None:
    """Reclaim what a killed command left running, then work through the cells."""
    for cell in cells:
        if again := reclaim_running(open_cell(t, cell, extra.get(cell.optimizer, []))):
            log.warning("%s: trials %s were left running by a stopped command: asked again",
                        cell.name, again)  # fmt: skip
    if t.settings.workers == 1:
        run_cells(t, cells, extra, 0)
        return
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=_worker, args=(t, cells, extra, i)) for i in range(t.settings.workers)
    ]
    for w in workers:
        w.start()

    def forward(signum: int, frame: Any) -> None:  # each worker checkpoints and stops
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, signum)

    handlers = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for w in workers:
            w.join()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    # A worker ended by signal N has exitcode -N: the shell's 128 + N.
    if codes := [128 - c if c < 0 else c for c in (w.exitcode for w in workers) if c]:
        raise WorkerFailed(f"tuning workers exited with codes {codes}", max(codes))


def _worker(t: Tuning, cells: list[Cell], extra: dict[str, list[str]], worker: int) -> None:
    # Its own process group: a Ctrl-C at the terminal reaches the command alone, which
    # forwards it once (a second signal would stop a run without its checkpoint).
    os.setpgrp()
    _log_to_stderr()
    try:
        run_cells(t, cells, extra, worker)
    except UserError as err:
        print(f"{PROG}: worker {worker}: error: {err}", file=sys.stderr)
        sys.exit(2)


def _log_to_stderr() -> None:
    log_through_console()
    log.setLevel(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study opened


class WorkerFailed(Exception):
    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def picks(t: Tuning) -> dict[str, Pick]:
    """Per optimizer, the median of its studies' bests and the trial to rerun."""
    found = {}
    for name in t.settings.optimizers:
        cells = [c for c in tuning_cells(t.settings) if c.optimizer == name]
        bests = [study_best(open_cell(t, c, []), t.scoring) for c in cells]
        if (chosen := pick(bests, t.scoring)) is not None:
            found[name] = chosen
    return found


def pick_overrides(chosen: Pick) -> list[str]:
    """The picked trial's values as overrides (its parameters are named `<optimizer>/<key>`)."""
    return overrides_of({k.split("/", 1)[1]: v for k, v in chosen.trial.params.items()})


def tune(t: Tuning) -> dict[str, Any]:
    """Both phases, one command at a time per sweep dir; the summary written to tuning.json."""
    t.root.mkdir(parents=True, exist_ok=True)
    with (t.root / COMMAND_LOCK).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another optbench tune is running in {t.root}") from None
        try:
            run_phase(t, tuning_cells(t.settings), {})
        finally:
            write_summary(t, picks(t), evaluated=False)
        chosen = picks(t)
        if not chosen:
            raise UserError(f"no tuning trial completed; see {t.root / TUNING}")
        extra = {name: pick_overrides(p) for name, p in chosen.items()}
        try:
            run_phase(t, [eval_cell(t.settings, name) for name in chosen], extra)
        finally:
            summary = write_summary(t, chosen, evaluated=True)
    return summary


def write_summary(t: Tuning, chosen: dict[str, Pick], evaluated: bool) -> dict[str, Any]:
    """<root>/tuning.json: the settings, every trial, each study's best, medians, picks, reruns."""
    s = t.settings
    optimizers = {}
    for name in s.optimizers:
        studies = []
        for cell in (c for c in tuning_cells(s) if c.optimizer == name):
            study = open_cell(t, cell, [])
            best = study_best(study, t.scoring)
            studies.append({
                "study": cell.index,
                "best": None if best is None else _row(best),
                "trials": [_row(tr) for tr in study.get_trials(deepcopy=False)],
            })  # fmt: skip
        entry: dict[str, Any] = {
            "self_tuning": s.self_tuning(name),
            "epochs": s.epochs(name, t.epochs),
            "space": {d.key: repr(d.distribution) for d in s.dimensions(name)},
            "studies": studies,
        }
        p = chosen.get(name)
        if p is not None:
            entry |= {
                "median_of_bests": p.median,
                "study_bests": p.bests,
                "pick": {"study": p.study} | _row(p.trial),
            }
        if p is not None and evaluated:
            rerun_cell = eval_cell(s, name)
            reruns = open_cell(t, rerun_cell, pick_overrides(p)).get_trials(deepcopy=False)
            scores = [r.value for r in reruns if r.state == optuna.trial.TrialState.COMPLETE]
            entry |= {
                "eval": [{"seed": r.params.get(SEED_KEY)} | _row(r) for r in reruns],
                "eval_objective": {
                    "mean": statistics.fmean(scores) if scores else None,
                    "std": statistics.stdev(scores) if len(scores) > 1 else None,
                    "n": len(scores),
                },
            }
            if s.target is not None:
                times = [time_to_target(r, s.time) for r in reruns]
                entry["eval_time_to_target"] = {
                    "median": statistics.median(times) if times else None,
                    "reached": sum(map(math.isfinite, times)),
                    "n": len(times),
                }
        optimizers[name] = entry
    summary = {
        "rule": RULES[s.target is not None],
        "direction": "maximize" if t.maximize else "minimize",
        "target": s.target,
        "time": s.time,
        "trials_per_study": s.trials,
        "studies": s.studies,
        "tuning_seed": s.seed,
        "eval_seeds": list(s.eval_seeds),
        "sobol_seed": s.sobol_seed,
        "self_tuning_budget": s.self_tuning_budget,
        "pruner": s.pruner,
        "storage": t.storage_url,
        "overrides": t.overrides,
        "optimizers": optimizers,
    }
    if s.target is not None and chosen:
        summary["score"] = algoperf_score(t, chosen)
    atomic_write_json(t.root / TUNING_NAME, json_safe(summary))
    return summary


RULES = {
    False: "per optimizer, the median over studies of each study's best value of the main "
    "validation metric; the best trial of the median study (of an even count, the better "
    "middle one) rerun on eval_seeds",
    True: "AlgoPerf v0.6: per study, the fastest trial to the validation target (a miss is "
    "infinite); per optimizer, the median over studies; the fastest trial of the median study "
    "(of an even count, the faster middle one) rerun on eval_seeds",
}


def algoperf_score(t: Tuning, chosen: dict[str, Pick]) -> dict[str, Any]:
    """AlgoPerf's score of the workload: each optimizer's median time to target, its
    performance profile integrated over tau in [1, 4], and its geometric-mean speedup over
    the baseline (a miss counted at the largest budget any trial had, in the time's unit)."""
    s = t.settings
    times = {t.workload: {name: chosen[name].median for name in s.optimizers if name in chosen}}
    trials = [tr for c in tuning_cells(s) for tr in open_cell(t, c, []).get_trials(deepcopy=False)]
    limit = max((b for tr in trials if (b := budget(tr, s.time)) is not None), default=math.inf)
    baseline = s.baseline if s.baseline in times[t.workload] else None
    return {
        "workload": t.workload,
        "times": times,
        "budget": limit,
        "profile_score": profile_scores(times),
        "baseline": s.baseline,
        "speedup": (
            geometric_mean_speedup(times, baseline, {t.workload: limit}) if baseline else None
        ),
    }


def _row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's row, its parameters named by config key."""
    row = trial_row(trial)
    row["params"] = {k.split("/", 1)[-1]: v for k, v in trial.params.items()}
    return row


USAGE = f"""usage: {PROG} [OVERRIDE ...]

Tune every optimizer in tuning.optimizers with the same quasi-random trials of its own search
space, in tuning.studies independent studies; score each by the median of its studies' bests;
rerun the best trial of its median study on fresh seeds. Self-tuning optimizers (Prodigy,
D-Adaptation) search nothing and train tuning.self_tuning_budget x the epochs. Overrides are
optbench train overrides; start from +experiment=tuning, e.g.
  {PROG} +experiment=tuning tuning.workers=2
  {PROG} +experiment=tuning 'tuning.optimizers=[adamw,lion,prodigy]' tuning.trials=8 tuning.studies=3
Writes <sweep dir>/tuning/, <sweep dir>/eval/, <sweep dir>/optuna.db and <sweep dir>/tuning.json;
the same command with the same hydra.sweep.dir goes on where it stopped."""


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    if flags := [a for a in argv if a.startswith("-")]:
        raise UserError(f"unknown option {flags[0]}; pass optbench train overrides only")
    t = prepare(argv)
    _log_to_stderr()
    try:
        summary = tune(t)
    except WorkerFailed as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.returncode
    console.print(score_table(summary))
    print(f"{PROG}: wrote {t.root / TUNING_NAME}; compare: optbench report {t.root / EVAL}")
    return 0


def score_table(summary: dict[str, Any]) -> Table:
    """Per optimizer: the median over studies of each study's best score, and AlgoPerf's score."""
    score, target = summary.get("score"), summary["target"]
    if target is None:
        title = "tune: per optimizer, the median over studies of each study's best value"
    else:
        title = f"tune (AlgoPerf v0.6): {summary['time']} to the validation target {target:g}"
    table = Table(title=title, title_justify="left")
    columns = ["optimizer", "median", "per study"]
    if score:
        columns += ["profile score", f"speedup vs {score['baseline']}"]
    for column in columns:
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for name, entry in summary["optimizers"].items():
        bests = entry.get("study_bests") or []
        row = [name, _number(entry.get("median_of_bests")), " ".join(map(_number, bests))]
        if score:
            speedup = (score["speedup"] or {}).get(name)
            row += [_number(score["profile_score"].get(name)), _number(speedup)]
        table.add_row(*row)
    return table


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return "miss" if value == math.inf else f"{value:.4g}"
