"""An equal tuning budget for every optimizer, then each one's best trial on fresh seeds.

    optbench tune +experiment=tuning [overrides ...]

The protocol (AlgoPerf's quasi-random search, DeepOBS's rerun of the best setting):

1. Tuning: every optimizer in `tuning.optimizers` trains `tuning.trials` points of its own search
   space (`tuning.spaces.<optimizer>`: log-uniform ranges of optimizer keys), all with the seed
   `tuning.seed`. The points are one scrambled Sobol sequence of the unit cube (`tuning.sobol_seed`)
   mapped onto each space, so the budgets differ only in where the spaces lie.
2. Evaluation: per optimizer, the trial with the highest objective (what `optbench train` returns
   to a sweeper: the best test accuracy, 0.0 for a run that diverged before its first evaluation;
   ties go to the earlier trial) is trained again with each of `tuning.eval_seeds`, seeds no trial
   used; their mean and spread are the optimizer's result.

A Hydra sweeper would be the natural home for this, but Hydra 1.3 instantiates sweepers only from
the `hydra_plugins` namespace package. So each phase is one ordinary `optbench train -m` sweep,
and the launcher, the preflight and `optbench report` work as for any other: the trials and the
picks are written as configs (`<root>/configs/trial/<optimizer>_<k>.yaml`,
`<root>/configs/best/<optimizer>.yaml`) and swept as `+trial=...` and `+best=... trainer.seed=...`.
The runs land in `<root>/tuning/` and `<root>/eval/`; `<root>/tuning.json` records every trial,
the picks and the reruns. `<root>` is the sweep directory the config names (hydra.sweep.dir);
running the command again with hydra.sweep.dir=<root> continues an interrupted study, since
trainer.resume=auto (set by the presets) resumes or skips each run found there.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optbench.checks import is_number, require_int
from optbench.errors import UserError
from optbench.hydra_command import CONFIG_MODULE, VERSION_BASE, one_line
from optbench.tracking.files import atomic_write_json, atomic_write_text, json_safe
from optbench.tracking.results import objective
from optbench.train.preflight import check_train_config

PROG = "optbench tune"
CONFIG_NAME = "train"
TRIAL_GROUP = "trial"
BEST_GROUP = "best"
SEED_KEY = "trainer.seed"


@dataclass(frozen=True)
class Settings:
    """The `tuning:` block of the config, checked."""

    optimizers: tuple[str, ...]
    trials: int
    seed: int
    eval_seeds: tuple[int, ...]
    sobol_seed: int
    spaces: dict[str, dict[str, tuple[float, float]]]  # optimizer -> key -> (low, high)


@dataclass
class Trial:
    name: str  # "adamw_03": the config name in <root>/configs/trial/
    optimizer: str
    index: int  # which point of the Sobol sequence
    params: dict[str, float]  # optimizer key -> value
    objective: float | None = None  # None: the run left no results.json
    status: str | None = None
    run_dir: str | None = None


@dataclass
class Rerun:
    seed: int
    objective: float | None = None
    status: str | None = None
    run_dir: str | None = None


@dataclass
class Study:
    settings: Settings
    root: Path
    overrides: list[str]
    trials: list[Trial]
    best: dict[str, Trial] = field(default_factory=dict)
    reruns: dict[str, list[Rerun]] = field(default_factory=dict)


def read_settings(cfg: DictConfig) -> Settings:
    """The tuning settings of a composed config; a one-line UserError for anything unusable."""
    block = OmegaConf.select(cfg, "tuning", default=None)
    if block is None:
        raise UserError(f"the config has no tuning: block; start from {PROG} +experiment=tuning")
    t = OmegaConf.to_container(block, resolve=True)
    optimizers = tuple(t.get("optimizers") or ())
    if not optimizers or len(set(optimizers)) != len(optimizers):
        raise UserError(f"tuning.optimizers must list distinct optimizers, got {list(optimizers)}")
    trials = require_int(t.get("trials"), "tuning.trials", 1)
    seed = require_int(t.get("seed"), "tuning.seed", 0)
    eval_seeds = tuple(t.get("eval_seeds") or ())
    for s in eval_seeds:
        require_int(s, "each of tuning.eval_seeds", 0)
    if not eval_seeds or len(set(eval_seeds)) != len(eval_seeds):
        raise UserError(f"tuning.eval_seeds must list distinct seeds, got {list(eval_seeds)}")
    if seed in eval_seeds:
        raise UserError(
            f"tuning.eval_seeds must be fresh seeds, but {seed} is tuning.seed, the trials' seed"
        )
    spaces_cfg = t.get("spaces") or {}
    spaces = {}
    for name in optimizers:
        if name not in spaces_cfg:
            raise UserError(
                f"tuning.spaces has no search space for '{name}'; "
                f"add e.g. '+tuning.spaces.{name}={{lr: [1.0e-4, 1.0e-1]}}'"
            )
        spaces[name] = _space(spaces_cfg[name], f"tuning.spaces.{name}")
    sobol_seed = require_int(t.get("sobol_seed"), "tuning.sobol_seed", 0)
    return Settings(optimizers, trials, seed, eval_seeds, sobol_seed, spaces)


def _space(space: Any, key: str) -> dict[str, tuple[float, float]]:
    if not isinstance(space, dict) or "lr" not in space:
        raise UserError(f"{key} must map optimizer keys to [low, high] ranges, lr among them")
    ranges = {}
    for name, bounds in space.items():
        ok = (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(is_number(b) for b in bounds)
            and 0 < bounds[0] < bounds[1]
        )
        if not ok:
            raise UserError(
                f"{key}.{name} must be [low, high] with 0 < low < high (log scale), got {bounds!r}"
            )
        ranges[name] = (float(bounds[0]), float(bounds[1]))
    return ranges


def plan_trials(settings: Settings) -> list[Trial]:
    """`trials` points of each optimizer's space: the same Sobol points, mapped log-uniformly."""
    trials = []
    for name in settings.optimizers:
        space = settings.spaces[name]
        engine = torch.quasirandom.SobolEngine(len(space), scramble=True, seed=settings.sobol_seed)
        for k, point in enumerate(engine.draw(settings.trials, dtype=torch.float64).tolist()):
            params = {
                key: _round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
                for (key, (low, high)), u in zip(space.items(), point, strict=True)
            }
            trials.append(Trial(f"{name}_{k:02d}", name, k, params))
    return trials


def _round(value: float) -> float:
    """Three significant digits: readable in configs and directory names, finer than any trend."""
    return float(f"{value:.3g}")


def pick_best(trials: Sequence[Trial]) -> dict[str, Trial]:
    """Per optimizer, the trial with the highest objective; the earlier one on a tie."""
    best: dict[str, Trial] = {}
    for trial in trials:
        if trial.objective is None or not math.isfinite(trial.objective):
            continue
        current = best.get(trial.optimizer)
        if current is None or trial.objective > current.objective:
            best[trial.optimizer] = trial
    return best


def parse_overrides(overrides: list[str]) -> list[Override]:
    """The overrides, which pass through to both phases: none may sweep."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise UserError(one_line(err)) from None
    for o in parsed:
        if o.is_sweep_override():
            raise UserError(
                f"'{o.input_line}' lists several values; the tuning protocol sweeps by itself "
                "(set tuning.optimizers, tuning.trials, tuning.eval_seeds instead)"
            )
    return parsed


def check_owned_keys(parsed: list[Override], settings: Settings) -> None:
    """No override may set what the protocol sets per run."""
    tuned = {f"optimizer.{key}" for space in settings.spaces.values() for key in space}
    owned = {"optimizer", SEED_KEY, TRIAL_GROUP, BEST_GROUP, "hydra.searchpath", *tuned}
    for o in parsed:
        if o.key_or_group in owned:
            raise UserError(
                f"'{o.input_line}' sets what the tuning protocol sets per run; choose optimizers "
                "with tuning.optimizers, ranges with tuning.spaces, seeds with tuning.seed and "
                "tuning.eval_seeds"
            )


def compose_study(overrides: list[str], parsed: list[Override]) -> tuple[Settings, Path]:
    """Compose the config, read its settings and its sweep directory; check the runs to come."""
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base=VERSION_BASE):
            cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
            settings = read_settings(cfg)
            check_owned_keys(parsed, settings)
            sweeper = OmegaConf.select(cfg, "hydra.sweeper._target_", default="")
            if not sweeper.endswith("BasicSweeper") or cfg.hydra.sweeper.get("params"):
                raise UserError(
                    "the tuning protocol runs its phases with the basic sweeper and no declared "
                    "hydra.sweeper.params; drop the other sweeper or preset"
                )
            root = Path(str(cfg.hydra.sweep.dir)).resolve()
            # The first trial of each optimizer: the others differ from it only in numbers inside
            # the checked ranges, the reruns only in the seed. Each phase's preflight checks all.
            first: dict[str, Trial] = {}
            for trial in plan_trials(settings):
                first.setdefault(trial.optimizer, trial)
            for trial in first.values():
                check_train_config(compose(CONFIG_NAME, overrides=_explicit(trial, overrides)))
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(one_line(err)) from None
    return settings, root


def _explicit(trial: Trial, overrides: list[str]) -> list[str]:
    """A trial as plain overrides (its config file may not exist yet)."""
    values = [f"optimizer.{key}={value!r}" for key, value in trial.params.items()]
    return [*overrides, f"optimizer={trial.optimizer}", *values]


def _quoted(text: str) -> str:
    if "'" in text or "\\" in text:
        raise UserError(
            f"the tuning protocol cannot pass a path with quotes or backslashes: {text}"
        )
    return f"'{text}'"


def config_text(optimizer: str, params: dict[str, float], comment: str) -> str:
    """A `# @package _global_` config that selects the optimizer and sets its tuned values."""
    body = OmegaConf.to_yaml(OmegaConf.create({"optimizer": params}))
    head = [
        "# @package _global_",
        f"# {comment}",
        "defaults:",
        f"  - override /optimizer: {optimizer}",
    ]
    return "\n".join(head) + "\n\n" + body


def run_phase(study: Study, phase: str, sweep: list[str]) -> int:
    """One `optbench train -m` sweep into <root>/<phase>, configs found on <root>/configs."""
    search = _quoted(f"file://{study.root / 'configs'}")
    args = [
        *study.overrides,
        f"hydra.searchpath=[{search}]",
        *sweep,
        f"hydra.sweep.dir={_quoted(str(study.root / phase))}",
    ]
    print(f"{PROG}: {phase}: optbench train -m {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "optbench", "train", "-m", *args]).returncode


def _check_phase(study: Study, phase: str, returncode: int) -> None:
    """Summarise what exists, then stop if the phase failed."""
    write_summary(study)
    if returncode != 0:
        raise PhaseFailed(
            f"the {phase} sweep exited with code {returncode}; its runs are in {study.root / phase}",
            returncode,
        )


class PhaseFailed(Exception):
    """A phase's `optbench train -m` failed; it has said why, and its exit code is ours."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def read_runs(sweep_dir: Path, group: str) -> list[tuple[str, int | None, Path, dict | None]]:
    """(config name, seed, run dir, results or None) of each run a phase's sweep started."""
    runs = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        values = dict(line.split("=", 1) for line in OmegaConf.load(overrides_file) if "=" in line)
        name = values.get(f"+{group}")
        if name is None:
            continue
        run_dir = overrides_file.parent.parent
        results_file = run_dir / "results.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else None
        seed = values.get(SEED_KEY)
        runs.append((name, int(seed) if seed is not None else None, run_dir, results))
    return runs


def record(item: Trial | Rerun, run_dir: Path, results: dict | None) -> None:
    item.run_dir = str(run_dir)
    item.status = None if results is None else results.get("status")
    item.objective = None if results is None else objective(results)


def tune(overrides: list[str]) -> Study:
    """Run both phases; the study, with every run's objective."""
    parsed = parse_overrides(overrides)
    settings, root = compose_study(overrides, parsed)
    # Each phase gets its own sweep directory below the root.
    passthrough = [o.input_line for o in parsed if o.key_or_group != "hydra.sweep.dir"]
    study = Study(settings, root, passthrough, plan_trials(settings))
    configs = root / "configs"
    for trial in study.trials:
        comment = (
            f"tuning trial {trial.name}: point {trial.index} of {trial.optimizer}'s search space"
        )
        atomic_write_text(
            configs / TRIAL_GROUP / f"{trial.name}.yaml",
            config_text(trial.optimizer, trial.params, comment),
        )
    names = ",".join(t.name for t in study.trials)
    code = run_phase(study, "tuning", [f"+{TRIAL_GROUP}={names}", f"{SEED_KEY}={settings.seed}"])
    by_name = {t.name: t for t in study.trials}
    for name, _, run_dir, results in read_runs(root / "tuning", TRIAL_GROUP):
        if name in by_name:
            record(by_name[name], run_dir, results)
    study.best = pick_best(study.trials)
    _check_phase(study, "tuning", code)
    if not study.best:
        raise UserError(f"no tuning run left results; see {root / 'tuning'}")
    for name, trial in study.best.items():
        comment = f"the best tuning trial of {name}: {trial.name}, objective {trial.objective:.4g}"
        atomic_write_text(
            configs / BEST_GROUP / f"{name}.yaml", config_text(name, trial.params, comment)
        )
    seeds = ",".join(str(s) for s in settings.eval_seeds)
    code = run_phase(
        study, "eval", [f"+{BEST_GROUP}={','.join(study.best)}", f"{SEED_KEY}={seeds}"]
    )
    for name, seed, run_dir, results in read_runs(root / "eval", BEST_GROUP):
        rerun = Rerun(seed)
        record(rerun, run_dir, results)
        study.reruns.setdefault(name, []).append(rerun)
    _check_phase(study, "eval", code)
    return study


def write_summary(study: Study) -> Path:
    """<root>/tuning.json: the settings, every trial, each optimizer's pick and its reruns."""
    s = study.settings
    optimizers = {}
    for name in s.optimizers:
        best = study.best.get(name)
        reruns = sorted(study.reruns.get(name, []), key=lambda r: r.seed)
        scores = [r.objective for r in reruns if r.objective is not None]
        optimizers[name] = {
            "space": {k: list(v) for k, v in s.spaces[name].items()},
            "trials": [_trial_json(t) for t in study.trials if t.optimizer == name],
            "best": None if best is None else _trial_json(best),
            "eval": [asdict(r) for r in reruns],
            "eval_objective": {
                "mean": statistics.fmean(scores) if scores else None,
                "std": statistics.stdev(scores) if len(scores) > 1 else None,
                "n": len(scores),
            },
        }
    summary = {
        "objective": "best_test_acc, 0.0 for a run that diverged before its first evaluation",
        "trials_per_optimizer": s.trials,
        "tuning_seed": s.seed,
        "eval_seeds": list(s.eval_seeds),
        "sobol_seed": s.sobol_seed,
        "overrides": study.overrides,
        "tuning_dir": str(study.root / "tuning"),
        "eval_dir": str(study.root / "eval"),
        "optimizers": optimizers,
    }
    path = study.root / "tuning.json"
    atomic_write_json(path, json_safe(summary))
    return path


def _trial_json(trial: Trial) -> dict[str, Any]:
    return {
        "trial": trial.name,
        "params": {f"optimizer.{k}": v for k, v in trial.params.items()},
        "objective": trial.objective,
        "status": trial.status,
        "run_dir": trial.run_dir,
    }


USAGE = f"""usage: {PROG} [OVERRIDE ...]

Tune every optimizer in tuning.optimizers with the same number of quasi-random trials from its
own search space, then rerun each one's best trial with fresh seeds. Overrides are optbench train
overrides, passed to both phases; start from +experiment=tuning, e.g.
  {PROG} +experiment=tuning hydra/launcher=parallel
  {PROG} +experiment=tuning 'tuning.optimizers=[adamw,lion]' tuning.trials=8 'tuning.eval_seeds=[1,2,3]'
Writes <sweep dir>/tuning/ and <sweep dir>/eval/ (two sweeps) and <sweep dir>/tuning.json."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    try:
        if flags := [a for a in args if a.startswith("-")]:
            raise UserError(f"unknown option {flags[0]}; pass optbench train overrides only")
        study = tune(args)
    except UserError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except PhaseFailed as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.returncode
    print(
        f"{PROG}: wrote {study.root / 'tuning.json'}; compare: optbench report {study.root / 'eval'}"
    )
    return 0
