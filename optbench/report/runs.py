"""Finding the run directories under a folder and reading what each run left behind."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optbench.config import flatten
from optbench.errors import UserError
from optbench.report.headline import Headline
from optbench.tracking.results import (
    COMPLETED,
    DIVERGED,
    INTERRUPTED,
    JOB_FAILED,
    PRUNED,
    RESULTS_SCHEMA,
    malformed,
)

__all__ = [
    "COMPLETED", "DIVERGED", "FAILED", "INTERRUPTED", "MALFORMED", "PRUNED", "Run",
    "known_headline", "load_runs",
]  # fmt: skip

# Hydra writes .hydra/ when it starts a job; the trainer writes results.json when it ends.
RUN_MARKERS = (".hydra/config.yaml", "results.json")
# No results.json: the run crashed, or it is still running; nothing on disk tells which. Also
# a sweep job whose results.json says it failed (JOB_FAILED).
FAILED = "failed/unfinished"
# A run a file of which cannot be read (config.yaml, results.json, metrics.jsonl), or whose
# results.json is not a complete result: listed with the reason, never averaged.
MALFORMED = "malformed results"


@dataclass(frozen=True)
class Run:
    path: Path
    sweep: Path  # the multirun directory it belongs to; a single run is its own
    config: dict[str, Any]  # flattened: {"optimizer.lr": 0.05, "model.hidden": "[64]", ...}
    has_config: bool  # False: config rebuilt from results.json's few fields
    results: Any  # results.json as read: a dict, unless malformed; None without the file
    # metrics.jsonl: one record per completed epoch, and with step-level evaluation records
    # between them that hold only the evaluation (a fractional epoch, no train_* keys)
    metrics: list[dict[str, Any]]
    unreadable: str | None = None  # a file that could not be read: "config.yaml (why)"

    @property
    def problem(self) -> str | None:
        """Why the run cannot be compared, naming the file; None when it can."""
        if self.unreadable is not None:
            return self.unreadable
        if self.results is None or self.job_failed:
            return None
        why = _odd_field(self.results) or malformed(self.results)
        return None if why is None else f"results.json ({why})"

    @property
    def job_failed(self) -> bool:
        """A results.json a crashed sweep job left: no result, its error."""
        return isinstance(self.results, dict) and self.results.get("status") == JOB_FAILED

    @property
    def status(self) -> str:
        if self.problem is not None:
            return MALFORMED
        if self.results is None or self.job_failed:
            return FAILED
        return self.results["status"]

    @property
    def readable(self) -> bool:
        """A result to compare: results.json read, neither malformed nor a failed job's."""
        return self.results is not None and self.status not in (MALFORMED, FAILED)

    @property
    def seed(self) -> Any:
        return self.config.get("trainer.seed")

    @property
    def headline(self) -> Headline:
        """The run's main metric; a result without one (older runs) is ranked by test accuracy."""
        results = self.results if isinstance(self.results, dict) else {}
        metric, higher = results.get("metric"), results.get("higher_is_better")
        return Headline(
            metric if isinstance(metric, str) else "test_acc",
            higher if isinstance(higher, bool) else True,
        )

    @property
    def chosen_on_test(self) -> bool:
        """A result written before the validation split: its best and targets are test values."""
        results = self.results if isinstance(self.results, dict) else {}
        schema = results.get("schema", 1)
        return self.readable and isinstance(schema, int) and schema < RESULTS_SCHEMA

    def result(self, key: str) -> Any:
        return self.results.get(key) if isinstance(self.results, dict) else None


def _odd_field(results: Any) -> str | None:
    """A field the report reads that holds the wrong kind of value, or None (malformed() says
    what else is wrong: not an object, an unknown status, no final value)."""
    if not isinstance(results, dict):
        return None
    kinds = {
        "metric": (str, "a metric name"),
        "higher_is_better": (bool, "true or false"),
        "schema": (int, "an integer"),
        "diagnosis": (dict, "a mapping"),
    }
    for key, (kind, words) in kinds.items():
        value = results.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key} is not {words}: {value!r}"
    return None


def known_headline(runs: list[Run]) -> Headline | None:
    """The metric a set of runs (a group's seeds) is ranked by: that of the first one whose
    results can be compared, else of the first results.json that names its metric (a
    malformed one may lack `metric`, which would make it look like a result older than the
    validation split); None when no run tells (all failed)."""
    for run in runs:
        if run.readable:
            return run.headline
    for run in runs:
        if isinstance(run.results, dict) and isinstance(run.results.get("metric"), str):
            return run.headline
    return None


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
    """Every run under `roots`, each once, in path order; a run a file of which cannot be read
    is listed as malformed, but a report with no readable run at all is refused."""
    for root in roots:
        if not root.is_dir():
            raise UserError(
                f"{root} is not a directory" if root.exists() else f"{root} does not exist"
            )
    paths = {p.resolve(): p for root in roots for p in find_run_dirs(root)}
    loaded = [load_run(paths[key]) for key in sorted(paths)]
    runs = [run for run in loaded if not is_resume_job(run)]
    where = ", ".join(str(r) for r in roots)
    if not runs:
        raise UserError(
            f"no runs found under {where} (a run directory holds .hydra/config.yaml or results.json)"
        )
    if all(run.status == MALFORMED for run in runs):
        first = runs[0]
        each = "it is" if len(runs) == 1 else f"all {len(runs)} are"
        raise UserError(
            f"no readable run under {where}: {each} malformed, e.g. {first.path}: {first.problem}"
        )
    return runs


def is_resume_job(run: Run) -> bool:
    """A job started with `trainer.resume=<run dir>` trains in that directory, not its own,
    which only ever holds .hydra/ and a log: it is not a run of its own."""
    return (
        run.results is None
        and run.unreadable is None
        and run.config.get("trainer.resume") not in (None, "auto")
    )


def load_run(path: Path) -> Run:
    results, results_problem = _read_json(path / "results.json")
    config_file = next(
        (f for f in (path / "config.yaml", path / ".hydra" / "config.yaml") if f.is_file()), None
    )
    config, config_problem = None, None
    if config_file is not None:
        config, config_problem = _read_config(config_file, path)
    has_config = config is not None
    if config is None:
        known = results if isinstance(results, dict) else {}
        config = {
            f"{section}.name": known.get(section)
            for section in ("dataset", "model", "optimizer", "scheduler")
        } | {"trainer.seed": known.get("seed")}
    sweep = path.parent if (path.parent / "multirun.yaml").is_file() else path
    metrics, metrics_problem = _read_jsonl(path / "metrics.jsonl")
    unreadable = config_problem or results_problem or metrics_problem
    return Run(path, sweep, config, has_config, results, metrics, unreadable)


def _read_config(path: Path, run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The flattened config, or None and why not ("config.yaml (not valid YAML: ...)")."""
    name = path.relative_to(run_dir).as_posix()
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as err:
        return None, f"{name} (not valid YAML: {_yaml_reason(err)})"
    except (OSError, OmegaConfBaseException, ValueError) as err:
        return None, f"{name} ({_first_line(err)})"
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        # .hydra/config.yaml may use resolvers only a running Hydra job has.
        container = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(container, dict) or not container:
        return None, f"{name} (not a mapping of settings)"
    return flatten(container), None


def _yaml_reason(err: yaml.YAMLError) -> str:
    """PyYAML's problem and where, on one line: `expected ',' or ']', but got '}' (line 2)`."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem is None:
        return _first_line(err)
    return problem + ("" if mark is None else f" (line {mark.line + 1})")


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _read_json(path: Path) -> tuple[Any, str | None]:
    """results.json as read (None without one), or None and why it cannot be read."""
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except OSError as err:
        return None, f"{path.name} (cannot read: {err.strerror or err})"
    except ValueError as err:  # also a file that is not UTF-8
        return None, f"{path.name} (not valid JSON: {_first_line(err)})"


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """metrics.jsonl's records, or none and why the file cannot be read. A run killed while
    appending can leave half a last line (no newline after it): that line is left out."""
    if not path.is_file():
        return [], None
    try:
        text = path.read_text()
    except OSError as err:
        return [], f"{path.name} (cannot read: {err.strerror or err})"
    except ValueError as err:
        return [], f"{path.name} (not UTF-8 text: {_first_line(err)})"
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines) and not text.endswith("\n"):
                break
            return [], f"{path.name} (line {number} is not valid JSON)"
        why = _odd_record(record)
        if why is not None:
            return [], f"{path.name} (line {number}: {why})"
        records.append(record)
    return records, None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _odd_record(record: Any) -> str | None:
    """What is wrong with a metrics.jsonl record, for the fields the report reads; None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for key in ("epoch", "train_time_s"):
        if not (_is_number(record.get(key)) and math.isfinite(record[key])):
            return f"{key} is not a number: {record.get(key)!r}"
    for key, value in record.items():
        metric = key.startswith(("train_", "val_", "test_")) or key in ("step", "examples")
        if metric and value is not None and not _is_number(value):
            return f"{key} is not a number: {value!r}"
    if not isinstance(record.get("lr", {}), dict):
        return f"lr is not a mapping of parameter groups: {record['lr']!r}"
    return None
