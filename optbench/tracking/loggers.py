"""Experiment trackers beside TensorBoard: MLflow and Weights & Biases, both off by default.

The trainer talks to one `RunLoggers` and never to a tracker: it hands over the run's config
once, the values it writes at each log interval and each metrics.jsonl record, and at the end
results.json's values and the run's files. So a tracker holds what the run folder holds. A
tracker's package is imported only when its `loggers.<name>.enabled` is set, and a missing one
is refused by the pre-flight check (`check_loggers`), before anything is written.
"""

from __future__ import annotations

import importlib
import logging
import math
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from optbench.errors import UserError
from optbench.tracking.results import COMPLETED, INTERRUPTED, JOB_FAILED, PRUNED

log = logging.getLogger("optbench")

Scalar = str | int | float | bool | None


class RunLogger(Protocol):
    """One experiment tracker's view of one run."""

    def start(self, params: dict[str, Scalar], run_dir: Path) -> None:
        """Open the tracker's run, named after `run_dir`, with the flattened config."""

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Finite values at optimizer step `step` (TensorBoard's step axis)."""

    def finish(self, results: Mapping[str, Any], artifacts: list[Path]) -> None:
        """Record results.json's values and upload `artifacts`; close the run."""


# Name in `loggers` -> the module it needs (`optbench[<name>]` installs it).
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}
WANDB_MODES = ("offline", "online", "disabled")


def enabled_loggers(cfg: DictConfig) -> list[str]:
    block = cfg.get("loggers") or {}
    return [name for name in PACKAGES if OmegaConf.select(block, f"{name}.enabled", default=False)]


def check_loggers(cfg: DictConfig) -> None:
    """Refuse an enabled tracker whose package is not installed, in one line."""
    for name in enabled_loggers(cfg):
        try:
            importlib.import_module(PACKAGES[name])
        except ImportError:
            raise UserError(
                f"loggers.{name}.enabled=true needs the {name} package, which is not installed: "
                f"pip install 'optbench[{name}]'"
            ) from None
    if "wandb" in enabled_loggers(cfg) and cfg.loggers.wandb.mode not in WANDB_MODES:
        raise UserError(
            f"loggers.wandb.mode must be {', '.join(WANDB_MODES)}, got {cfg.loggers.wandb.mode!r}"
        )


@dataclass
class RunLoggers:
    """The enabled trackers as one (none: every call does nothing); values are cleaned once,
    here, so that each tracker gets what the run's files hold: no NaN (JSON's null), no text."""

    loggers: list[RunLogger] = field(default_factory=list)
    finished: bool = False

    def start(self, config: Mapping[str, Any], run_dir: Path) -> None:
        params = dict(_flatten(config, "."))
        for logger in self.loggers:
            logger.start(params, run_dir)

    def log_metrics(self, values: Mapping[str, Any], step: int) -> None:
        numbers = _numbers(values) if self.loggers else {}
        for logger in self.loggers if numbers else []:
            logger.log_metrics(numbers, step)

    def log_record(self, record: Mapping[str, Any]) -> None:
        """A metrics.jsonl record, at its own `step`."""
        self.log_metrics({k: v for k, v in record.items() if k != "step"}, record["step"])

    def finish(self, results: Mapping[str, Any], run_dir: Path) -> None:
        """results.json's values, and the run's config, results and plots as artifacts."""
        if self.loggers:  # no run folder to walk when no tracker is on
            artifacts = [run_dir / "config.yaml", run_dir / "results.json"]
            artifacts += sorted(run_dir.rglob("*.png"))
            for logger in self.loggers:
                logger.finish(results, [p for p in artifacts if p.is_file()])
        self.finished = True

    def __enter__(self) -> RunLoggers:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """Training raised before `finish`: close each tracker's run as failed (a sweep's next
        job must not log into it), without hiding the error."""
        if kind is None or self.finished:
            return
        self.finished = True
        for logger in self.loggers:
            try:
                logger.finish({"status": JOB_FAILED}, [])
            except Exception as err:
                log.warning("could not close the %s run: %s", type(logger).__name__, err)


def build_loggers(cfg: DictConfig, main: bool) -> RunLoggers:
    """The trackers `cfg.loggers` enables, on the main rank only (the others log nothing)."""
    if not main:
        return RunLoggers()
    check_loggers(cfg)
    makers = {"mlflow": MlflowLogger, "wandb": WandbLogger}
    output_dir = Path(cfg.paths.output_dir)
    return RunLoggers(
        [makers[name](cfg.loggers[name], output_dir) for name in enabled_loggers(cfg)]
    )


def _flatten(values: Mapping[str, Any], sep: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """`{"optimizer": {"lr": 0.1}}` -> `("optimizer.lr", 0.1)`; lists stay whole, as text."""
    for key, value in values.items():
        if prefix == "" and key in ("hydra", "loggers"):
            continue
        if isinstance(value, Mapping):
            yield from _flatten(value, sep, f"{prefix}{key}{sep}")
        elif isinstance(value, list | tuple):
            yield f"{prefix}{key}", str(list(value))
        else:
            yield f"{prefix}{key}", value


def _final_numbers(results: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in _numbers(results).items() if k not in NOT_METRICS}


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among `values`, nested keys joined by `/` (`lr/decay`)."""
    return {
        key: float(value)
        for key, value in _flatten(values, "/")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _finished(results: Mapping[str, Any]) -> bool:
    return results.get("status") in (COMPLETED, PRUNED)


# results.json keys that are no measurement (the seed is a parameter already).
NOT_METRICS = ("schema", "seed")


class MlflowLogger:
    """An MLflow run per optbench run, in one experiment (a sweep's jobs side by side).

    Metrics are queued and written by MLflow's background thread, so a slow store never
    holds up the training loop; `finish` waits for them.
    """

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        from mlflow.tracking import MlflowClient

        uri = cfg.tracking_uri
        # The default store: one SQLite file for every run under output_dir. Its artifacts go
        # to a hidden folder beside it: their results.json copies must not look like runs
        # to `optbench report outputs`.
        self.artifact_location = None
        if uri is None:
            output_dir = output_dir.absolute()
            output_dir.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{output_dir / 'mlflow.db'}"
            self.artifact_location = (output_dir / ".mlflow-artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment = cfg.experiment
        self.run_id = ""
        self.pending: list[Any] = []

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment, artifact_location=self.artifact_location
            )
        except MlflowException:  # a parallel sweep job may have created it first
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def start(self, params: dict[str, Scalar], run_dir: Path) -> None:
        from mlflow.entities import Param

        run = self.client.create_run(
            self._experiment_id(),
            run_name=run_dir.name,
            tags={"optbench.run_dir": str(run_dir.absolute())},
        )
        self.run_id, self.run_dir = run.info.run_id, run_dir
        items = [Param(key, str(value)) for key, value in params.items()]
        for first in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[first : first + 100])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self.pending.append(
            self.client.log_batch(
                self.run_id, metrics=self._metrics(values, step), synchronous=False
            )
        )

    def _metrics(self, values: dict[str, float], step: int) -> list[Any]:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(key, value, now, step) for key, value in values.items()]

    def finish(self, results: Mapping[str, Any], artifacts: list[Path]) -> None:
        from mlflow.entities import RunTag

        for operation in self.pending:
            operation.wait()
        self.pending.clear()
        self.client.log_batch(
            self.run_id,
            metrics=self._metrics(_final_numbers(results), int(results.get("steps") or 0)),
            tags=[RunTag("optbench.status", str(results.get("status")))],
        )
        for path in artifacts:
            folder = path.parent.relative_to(self.run_dir).as_posix()
            self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        status = "KILLED" if results.get("status") == INTERRUPTED else "FAILED"
        self.client.set_terminated(self.run_id, "FINISHED" if _finished(results) else status)


class WandbLogger:
    """A W&B run per optbench run, its files in `<run dir>/wandb/`. Offline by default:
    `wandb sync <run dir>/wandb/offline-run-*` uploads it later."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.project, self.mode = cfg.project, cfg.mode
        self.run: Any = None

    def start(self, params: dict[str, Scalar], run_dir: Path) -> None:
        import wandb

        self.run_dir = run_dir
        self.run = wandb.init(
            project=self.project, name=run_dir.name, config=params, dir=str(run_dir),
            mode=self.mode, settings=wandb.Settings(quiet=True),  # no summary table on exit
        )  # fmt: skip

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, results: Mapping[str, Any], artifacts: list[Path]) -> None:
        self.run.summary.update(dict(_flatten(results, "/")))
        # Copies, not wandb.save's symlinks: what is in the W&B run's files folder at the end
        # is uploaded, also by a later `wandb sync`, wherever the run folder has gone.
        for path in artifacts:
            copy = Path(self.run.dir) / path.relative_to(self.run_dir)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        self.run.finish(exit_code=0 if _finished(results) else 1)
