"""The equal-budget tuning protocol as Optuna studies (AlgoPerf's external tuning ruleset).

Every optimizer in `tuning.optimizers` gets `tuning.studies` independent studies of
`tuning.trials` trials. Study s of every optimizer trains the same quasi-random points (one
scrambled Sobol sequence per study, seeded `sobol_seed + s`) mapped onto that optimizer's own
space (the same unit-cube points for spaces of as many dimensions), so the budgets differ only
in where the spaces lie. Every trial is judged on the validation split.

With `tuning.target` (AlgoPerf's rules, v0.6) a trial's score is its time to that validation
target (`tuning.time`: optimizer steps or training seconds; a miss is infinite), a study's
best trial is its fastest, and an optimizer's score is the median over its studies. Without
one, a trial's score is the best value of the main validation metric, and the optimizer's
the median of its studies' bests. Either way the best trial of the median study is then
trained again on `eval_seeds`, seeds no trial used. A self-tuning optimizer (Prodigy,
D-Adaptation) searches nothing: its one trial and its reruns train with its defaults for
`self_tuning_budget` x the epochs (AlgoPerf's self-tuning track).

The trials are enqueued into the studies with their values fixed, so Optuna's storage, pruners,
resume and workers serve here exactly as they serve `optbench search`.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from optbench.checks import is_number, require_int
from optbench.errors import UserError
from optbench.optim.registry import optimizer_info
from optbench.studies.optuna_study import read_pruner_and_storage
from optbench.studies.search_space import Dimension, SearchSpace, read_sections
from optbench.studies.search_trial import (
    PLANNED_STEPS,
    RUN_NAME,
    TIME_TO_TARGET,
    TRAIN_TIME,
    dirname,
)

SEED_KEY = "trainer.seed"
EPOCHS_KEY = "trainer.epochs"
TARGETS_KEY = "trainer.targets"
TUNING, EVAL = "tuning", "eval"
TIME_UNITS = {"steps": "step", "seconds": "train_time_s"}  # tuning.time -> the Reached field


@dataclass(frozen=True)
class TuningSettings:
    """The `tuning:` block of the config, checked."""

    optimizers: tuple[str, ...]
    trials: int  # per study
    studies: int  # per optimizer
    seed: int  # trainer.seed of every tuning trial
    eval_seeds: tuple[int, ...]
    sobol_seed: int
    self_tuning_budget: float
    space: SearchSpace  # per_optimizer: each searched optimizer's own dimensions
    pruner: str
    pruner_options: dict[str, Any]
    storage: str | None
    workers: int
    target: float | None  # of the main validation metric; None: score by the best value
    time: str  # a key of TIME_UNITS: what time to target is measured in
    baseline: str  # the optimizer the speedups are relative to

    def self_tuning(self, optimizer: str) -> bool:
        return optimizer_info(optimizer).self_tuning

    def dimensions(self, optimizer: str) -> tuple[Dimension, ...]:
        return self.space.per_optimizer.get(optimizer, ())

    def trials_of(self, optimizer: str) -> int:
        """Trials per study: a self-tuning optimizer has one point to train, its defaults."""
        return 1 if self.self_tuning(optimizer) else self.trials

    def studies_of(self, optimizer: str) -> int:
        """Independent studies: with nothing to search, every study would train the same run."""
        return 1 if self.self_tuning(optimizer) else self.studies

    def epochs(self, optimizer: str, epochs: int) -> int:
        """The optimizer's training budget in epochs: self-tuning ones get the larger one."""
        if not self.self_tuning(optimizer):
            return epochs
        return math.ceil(epochs * self.self_tuning_budget)


def read_settings(block: Any, sweep_dir: Path | None = None) -> TuningSettings:
    """`tuning:` as plain data; a one-line UserError for anything unusable, before any file."""
    if not isinstance(block, dict):
        raise UserError("the config has no tuning: block; start from +experiment=tuning")
    known = set(TuningSettings.__dataclass_fields__) - {"space"} | {"spaces", "pruner_options"}
    unknown = sorted(set(block) - known)
    if unknown:
        raise UserError(f"unknown key tuning.{unknown[0]}; tuning takes {', '.join(sorted(known))}")
    optimizers = block.get("optimizers")
    if (
        not isinstance(optimizers, list)
        or not optimizers
        or not all(isinstance(o, str) for o in optimizers)
        or len(set(optimizers)) != len(optimizers)
    ):
        raise UserError(f"tuning.optimizers must list distinct optimizers, got {optimizers!r}")
    for name in optimizers:
        optimizer_info(name)  # an unknown name is a one-line error naming the known ones
    seed = require_int(block.get("seed"), "tuning.seed", 0)
    eval_seeds = block.get("eval_seeds")
    if not isinstance(eval_seeds, list) or not eval_seeds:
        raise UserError(f"tuning.eval_seeds must list distinct seeds, got {eval_seeds!r}")
    for s in eval_seeds:
        require_int(s, "each of tuning.eval_seeds", 0)
    if len(set(eval_seeds)) != len(eval_seeds):
        raise UserError(f"tuning.eval_seeds must list distinct seeds, got {eval_seeds!r}")
    if seed in eval_seeds:
        raise UserError(
            f"tuning.eval_seeds must be fresh seeds, but {seed} is tuning.seed, the trials' seed"
        )
    budget = block.get("self_tuning_budget", 1.5)
    if not is_number(budget) or budget < 1:
        raise UserError(f"tuning.self_tuning_budget must be a number >= 1, got {budget!r}")
    pruner, options, storage = read_pruner_and_storage(block, "tuning", sweep_dir)
    target = block.get("target")
    if target is not None and not is_number(target):
        raise UserError(
            f"tuning.target must be a number (a validation target) or null, got {target!r}"
        )
    time = block.get("time", "steps")
    if time not in TIME_UNITS:
        raise UserError(f"tuning.time must be one of {', '.join(TIME_UNITS)}, got {time!r}")
    baseline = block.get("baseline") or optimizers[0]
    if baseline not in optimizers:
        raise UserError(
            f"tuning.baseline must be one of tuning.optimizers ({', '.join(optimizers)}), "
            f"got {baseline!r}"
        )
    return TuningSettings(
        optimizers=tuple(optimizers),
        trials=require_int(block.get("trials"), "tuning.trials", 1),
        studies=require_int(block.get("studies", 1), "tuning.studies", 1),
        seed=seed,
        eval_seeds=tuple(eval_seeds),
        sobol_seed=require_int(block.get("sobol_seed", 0), "tuning.sobol_seed", 0),
        self_tuning_budget=float(budget),
        space=_spaces(block.get("spaces") or {}, optimizers),
        pruner=pruner,
        pruner_options=options,
        storage=storage,
        workers=require_int(block.get("workers", 1), "tuning.workers", 1),
        target=None if target is None else float(target),
        time=time,
        baseline=baseline,
    )


def _spaces(spaces: Any, optimizers: list[str]) -> SearchSpace:
    """`tuning.spaces`, written like `search.per_optimizer`: one space per searched optimizer."""
    if not isinstance(spaces, dict):
        raise UserError(f"tuning.spaces must map optimizers to search spaces, got {spaces!r}")
    for name in optimizers:
        example = "{optimizer: {lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}}}"
        if optimizer_info(name).self_tuning:
            if name in spaces:
                raise UserError(
                    f"tuning.spaces.{name}: {name} is self-tuning, so the protocol searches "
                    "nothing for it (it trains its defaults for tuning.self_tuning_budget x the "
                    "epochs); remove its space"
                )
        elif name not in spaces:
            raise UserError(
                f"tuning.spaces has no search space for '{name}'; add e.g. "
                f"'+tuning.spaces.{name}={example}'"
            )
    # The preset keeps spaces for more optimizers than it runs: only those run are read.
    searched = {k: v for k, v in spaces.items() if k in optimizers}
    space = SearchSpace((), read_sections(searched, "tuning.spaces"))
    for name in searched:
        if not space.per_optimizer.get(name):
            raise UserError(
                f"tuning.spaces.{name} holds no dimension to search; give it one, e.g. "
                "{optimizer: {lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}}}"
            )
    return space


def unit_points(settings: TuningSettings, study: int, dims: int) -> list[list[float]]:
    """Study `study`'s points of the unit cube: the first `trials` of one scrambled Sobol
    sequence, the same for every optimizer whose space has `dims` dimensions."""
    engine = torch.quasirandom.SobolEngine(dims, scramble=True, seed=settings.sobol_seed + study)
    return engine.draw(settings.trials, dtype=torch.float64).tolist()


@dataclass(frozen=True)
class PlannedTrial:
    run_name: str
    params: dict[str, Any]  # Optuna parameter name -> value (fixed: the trial is enqueued)


@dataclass(frozen=True)
class Cell:
    """One Optuna study: an optimizer's tuning study s, or its reruns on the eval seeds."""

    phase: str
    optimizer: str
    index: int  # the study's number; 0 for the reruns
    trials: tuple[PlannedTrial, ...]

    @property
    def name(self) -> str:
        return f"{self.phase}/{self.optimizer}" + (f"/{self.index}" if self.phase == TUNING else "")


def tuning_cells(settings: TuningSettings) -> list[Cell]:
    """Every tuning study, study by study so that a partial run has whole studies to compare."""
    cells = []
    for s in range(settings.studies):
        for name in settings.optimizers:
            if s >= settings.studies_of(name):
                continue
            dims = settings.dimensions(name)
            points = unit_points(settings, s, len(dims)) if dims else [[]]
            planned = []
            for k, point in enumerate(points[: settings.trials_of(name)]):
                params = {d.name: d.from_unit(u) for d, u in zip(dims, point, strict=True)}
                values = {d.key: params[d.name] for d in dims}
                label = dirname(values) if values else "defaults"
                planned.append(PlannedTrial(f"{k:02d}_{label}", params))
            cells.append(Cell(TUNING, name, s, tuple(planned)))
    return cells


def eval_cell(settings: TuningSettings, optimizer: str) -> Cell:
    """The reruns of an optimizer's pick, one trial per eval seed."""
    planned = tuple(PlannedTrial(f"seed={s}", {SEED_KEY: s}) for s in settings.eval_seeds)
    return Cell(EVAL, optimizer, 0, planned)


def eval_space(settings: TuningSettings) -> SearchSpace:
    choice = optuna.distributions.CategoricalDistribution(list(settings.eval_seeds))
    return SearchSpace((Dimension(SEED_KEY, choice),), {})


PLAN_ATTR = "plan"


def enqueue(study: optuna.Study, cell: Cell, overrides: list[str]) -> None:
    """Put the cell's planned trials into a new study, recording the plan; a study made by an
    earlier command must have planned the same trials with the same `overrides` (a pick)."""
    plan = json.dumps(
        {"trials": [[p.run_name, p.params] for p in cell.trials], "overrides": overrides},
        sort_keys=True,
    )
    if study.get_trials(deepcopy=False):
        if study.user_attrs.get(PLAN_ATTR) != plan:
            raise UserError(
                f"the study '{cell.name}' in this sweep dir was planned with other trials or "
                "values (tuning.trials, its space, sobol_seed, eval_seeds or the pick changed); "
                "resume with the settings it started with, or use a new hydra.sweep.dir"
            )
        return
    study.set_user_attr(PLAN_ATTR, plan)
    for planned in cell.trials:
        study.enqueue_trial(planned.params, user_attrs={RUN_NAME: planned.run_name})


def time_to_target(trial: FrozenTrial, time: str) -> float:
    """When the trial first reached the target, in `time` units (a key of TIME_UNITS);
    infinite for a miss, a pruned or a diverged trial (which never reached it)."""
    reached = list((trial.user_attrs.get(TIME_TO_TARGET) or {}).values())
    if trial.state != TrialState.COMPLETE or not reached or reached[0] is None:
        return math.inf
    return float(reached[0][TIME_UNITS[time]])


def budget(trial: FrozenTrial, time: str) -> float | None:
    """What the trial was given to reach the target, in `time` units: its planned optimizer
    steps, or the training seconds it took in all (None: not known, it never finished)."""
    return trial.user_attrs.get(PLANNED_STEPS if time == "steps" else TRAIN_TIME)


@dataclass(frozen=True)
class Scoring:
    """How trials are ranked: by time to `target` (AlgoPerf), or by their best value."""

    maximize: bool
    target: float | None = None
    time: str = "steps"

    def score(self, trial: FrozenTrial) -> float:
        """The trial's score: its time to target, or the best value of its main metric."""
        return trial.value if self.target is None else time_to_target(trial, self.time)

    def rank(self, trial: FrozenTrial) -> tuple[float, ...]:
        """Lower is better: the time to target first (if scored so), then the best value
        (all misses are ranked by how close they came), then the earlier trial."""
        value = -trial.value if self.maximize else trial.value
        if self.target is None:
            return (value, trial.number)
        return (self.score(trial), value, trial.number)


def study_best(study: optuna.Study, scoring: Scoring) -> FrozenTrial | None:
    """The study's best completed trial (pruned ones never count); the earlier on a tie."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=scoring.rank, default=None)


@dataclass(frozen=True)
class Pick:
    """An optimizer's tuned result: the median over studies of each study's best score."""

    median: float  # a time to target (inf: more than half the studies missed) or a value
    bests: list[float | None]  # per study; None where no trial completed
    study: int  # the median study, whose best trial is rerun
    trial: FrozenTrial


def pick(bests: list[FrozenTrial | None], scoring: Scoring) -> Pick | None:
    """The median of the studies' best scores, and the study at the median whose best is
    rerun (of an even count, the better of the two middle ones); None if no study completed."""
    found = sorted(
        ((scoring.rank(t), s, t) for s, t in enumerate(bests) if t is not None),
        key=lambda f: (f[0], f[1]),
    )
    if not found:
        return None
    _, study, trial = found[(len(found) - 1) // 2]
    median = statistics.median(scoring.score(t) for _, _, t in found)
    return Pick(median, [None if t is None else scoring.score(t) for t in bests], study, trial)
