"""Finding the run directories under a folder and reading what each run left behind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optbench.config import flatten
from optbench.errors import UserError
from optbench.report.headline import Headline
from optbench.tracking.results import COMPLETED, DIVERGED, INTERRUPTED, PRUNED, malformed

__all__ = [
    "COMPLETED", "DIVERGED", "FAILED", "INTERRUPTED", "MALFORMED", "PRUNED", "Run", "headline_of",
    "load_runs",
]  # fmt: skip

# Hydra writes .hydra/ when it starts a job; the trainer writes results.json when it ends.
RUN_MARKERS = (".hydra/config.yaml", "results.json")
# No results.json: the run crashed, or it is still running; nothing on disk tells which.
FAILED = "failed/unfinished"
# A results.json that is not a complete result: listed, never averaged.
MALFORMED = "malformed results"
# results.json's `schema` from the validation split on: the best value and the time to target
# are chosen on validation data. Older results have no `schema` (1): chosen on the test split.
VALIDATION_SCHEMA = 2


@dataclass(frozen=True)
class Run:
    path: Path
    sweep: Path  # the multirun directory it belongs to; a single run is its own
    config: dict[str, Any]  # flattened: {"optimizer.lr": 0.05, "model.hidden": "[64]", ...}
    has_config: bool  # False: config rebuilt from results.json's few fields
    results: dict[str, Any] | None
    # metrics.jsonl: one record per completed epoch, and with step-level evaluation records
    # between them that hold only the evaluation (a fractional epoch, no train_* keys)
    metrics: list[dict[str, Any]]

    @property
    def status(self) -> str:
        if self.results is None:
            return FAILED
        return MALFORMED if malformed(self.results) else self.results["status"]

    @property
    def seed(self) -> Any:
        return self.config.get("trainer.seed")

    @property
    def headline(self) -> Headline:
        """The run's main metric; a result without one (older runs) is ranked by test accuracy."""
        results = self.results if isinstance(self.results, dict) else {}
        return Headline(results.get("metric", "test_acc"), results.get("higher_is_better", True))

    @property
    def chosen_on_test(self) -> bool:
        """A result written before the validation split: its best and targets are test values."""
        results = self.results if isinstance(self.results, dict) else {}
        schema = results.get("schema", 1)
        readable = bool(results) and self.status != MALFORMED
        return readable and isinstance(schema, int) and schema < VALIDATION_SCHEMA

    def result(self, key: str) -> Any:
        return None if self.results is None else self.results.get(key)


def headline_of(runs: list[Run]) -> Headline:
    """The metric a set of runs (a group's seeds) is ranked by: that of the first one whose
    results can be compared. A malformed results.json may lack `metric`, which would make it
    look like a result older than the validation split."""
    readable = [r for r in runs if r.results and r.status != MALFORMED]
    return next((r.headline for r in readable or [r for r in runs if r.results]), Headline())


def is_run_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories at or below `root`; a run's own subfolders are not searched."""
    if is_run_dir(root):
        return [root]
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:
        raise UserError(f"cannot read {root}: {err.strerror or err}") from None
    return [run for child in children for run in find_run_dirs(child)]


def load_runs(roots: list[Path]) -> list[Run]:
    """Every run under `roots`, each once, in path order."""
    for root in roots:
        if not root.is_dir():
            raise UserError(
                f"{root} is not a directory" if root.exists() else f"{root} does not exist"
            )
    paths = {p.resolve(): p for root in roots for p in find_run_dirs(root)}
    loaded = [load_run(paths[key]) for key in sorted(paths)]
    runs = [run for run in loaded if not is_resume_job(run)]
    if not runs:
        where = ", ".join(str(r) for r in roots)
        raise UserError(
            f"no runs found under {where} (a run directory holds .hydra/config.yaml or results.json)"
        )
    return runs


def is_resume_job(run: Run) -> bool:
    """A job started with `trainer.resume=<run dir>` trains in that directory, not its own,
    which only ever holds .hydra/ and a log: it is not a run of its own."""
    return run.results is None and run.config.get("trainer.resume") not in (None, "auto")


def load_run(path: Path) -> Run:
    results = _read_json(path / "results.json")
    config_file = next(
        (f for f in (path / "config.yaml", path / ".hydra" / "config.yaml") if f.is_file()), None
    )
    if config_file is not None:
        config = flatten(_read_yaml(config_file))
    else:
        config = {
            f"{section}.name": results.get(section)
            for section in ("dataset", "model", "optimizer", "scheduler")
        } | {"trainer.seed": results.get("seed")}
    sweep = path.parent if (path.parent / "multirun.yaml").is_file() else path
    metrics = _read_jsonl(path / "metrics.jsonl")
    return Run(path, sweep, config, config_file is not None, results, metrics)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        cfg = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        # .hydra/config.yaml may use resolvers only a running Hydra job has.
        return OmegaConf.to_container(cfg, resolve=False)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a run killed while appending can leave half a line
    return records
