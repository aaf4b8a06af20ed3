"""The equal-budget tuning protocol as Optuna studies (AlgoPerf's external tuning ruleset).

Every optimizer in `tuning.optimizers` gets `tuning.studies` independent studies of
`tuning.trials` trials. Study s of every optimizer trains the same quasi-random points (one
scrambled Sobol sequence per study, seeded `sobol_seed + s`) mapped onto that optimizer's own
space (the same unit-cube points for spaces of as many dimensions), so the budgets differ only
in where the spaces lie. An optimizer's score is the median
over its studies of each study's best trial; the best trial of the median study is then
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
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from optbench.checks import is_number, require_int
from optbench.errors import UserError
from optbench.optim.registry import optimizer_info
from optbench.studies.optuna_study import read_pruner_and_storage
from optbench.studies.search_space import Dimension, SearchSpace, read_sections
from optbench.studies.search_trial import RUN_NAME, dirname

SEED_KEY = "trainer.seed"
EPOCHS_KEY = "trainer.epochs"
TUNING, EVAL = "tuning", "eval"


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


def read_settings(block: Any) -> TuningSettings:
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
    pruner, options, storage = read_pruner_and_storage(block, "tuning")
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
    return SearchSpace((), read_sections(searched, "tuning.spaces"))


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


def study_best(study: optuna.Study) -> FrozenTrial | None:
    """The study's best completed trial (pruned ones never count); the earlier on a tie."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: (-t.value if maximize else t.value, t.number))
    return ranked[0]


@dataclass(frozen=True)
class Pick:
    """An optimizer's tuned result: the median over studies of each study's best."""

    median: float
    bests: list[float | None]  # per study; None where no trial completed
    study: int  # the median study, whose best trial is rerun
    trial: FrozenTrial


def pick(bests: list[FrozenTrial | None], maximize: bool) -> Pick | None:
    """The median of the studies' best values, and the study at the median whose best is
    rerun (of an even count, the better of the two middle ones); None if no study completed."""
    found = [(t.value, s, t) for s, t in enumerate(bests) if t is not None]
    if not found:
        return None
    found.sort(key=lambda f: (-f[0] if maximize else f[0], f[1]))
    _, study, trial = found[(len(found) - 1) // 2]
    median = statistics.median(f[0] for f in found)
    return Pick(median, [None if t is None else t.value for t in bests], study, trial)
