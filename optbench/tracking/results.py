"""The results schema: what results.json holds, defined once.

The trainer writes it; the report, the TensorBoard HParams entry, tuning and the tests read
it through these names. Metric keys follow the task: `final_<split>_<metric>` for every
metric of the run's last training record and last evaluation, and `best_<metric>` for the
task's main validation metric (named in `metric`, `val_acc`; `higher_is_better` says which
way is better), with `test_at_best` the test metrics at that point. Schema 1 (no `schema`
key) predates the validation split: its `metric` is a test metric, chosen on test.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypedDict

# "failed": a sweep job that crashed (optbench/hydra_command.py records it and goes on).
Status = Literal["completed", "diverged", "interrupted", "pruned", "failed"]
STATUSES: tuple[Status, ...] = ("completed", "diverged", "interrupted", "pruned", "failed")
COMPLETED, DIVERGED, INTERRUPTED = "completed", "diverged", "interrupted"
RESULTS_SCHEMA = 2  # 2: decisions on a validation split (`val_*`); 1 chose on test
# Stopped early by a search's pruner: its value so far was not promising enough to go on.
PRUNED = "pruned"
JOB_FAILED = "failed"  # a sweep job that crashed (optbench/hydra_command.py writes it)


class Reached(TypedDict):
    epoch: float  # epochs completed; fractional for an evaluation between epoch ends
    step: int
    examples: int  # training samples seen
    train_time_s: float


class Results(TypedDict):
    schema: int  # RESULTS_SCHEMA
    status: Status
    model: str
    dataset: str
    optimizer: str
    scheduler: str
    seed: int
    task: str
    metric: str  # the main validation metric, val_acc (test_acc without a validation split)
    higher_is_better: bool
    data_split: dict[str, int]  # samples (text: windows) in train, val and test
    epochs: int  # completed
    steps: int  # optimizer steps completed
    planned_epochs: int
    planned_steps: int
    best_epoch: float | None  # where the main validation metric was best
    best_step: int | None
    test_at_best: dict[str, float] | None  # test metrics there, reported, never chosen on
    target_metric: str  # the validation metric trainer.targets are values of
    time_to_target: dict[str, Reached | None]  # per trainer.targets value; None: a miss
    wall_time_s: float
    train_time_s: float  # training only: evaluation is timed separately
    eval_time_s: float
    images_per_s: float | None  # training samples per second
    peak_memory_mb: float | None  # CUDA only
    scaler_skipped_steps: int
    nonfinite_skipped_steps: int
    diagnosis: dict[str, Any] | None  # of a divergence
    lr_finder: dict[str, Any] | None  # the LR an `auto` found, and by which rule


REQUIRED = tuple(Results.__annotations__)


def best_key(metric: str) -> str:
    return f"best_{metric}"


def final_key(metric: str) -> str:
    return f"final_{metric}"


def headline_keys(results: dict[str, Any]) -> tuple[str, str]:
    """The final and best value keys of the run's main metric: final_test_acc, best_test_acc."""
    metric = results.get("metric", "test_acc")
    return final_key(metric), best_key(metric)


def malformed(results: Any) -> str | None:
    """Why a results.json cannot be compared, or None: not an object, an unknown status, or a
    completed run without a final value of its main metric."""
    if not isinstance(results, dict):
        return "not a JSON object"
    if results.get("status") not in STATUSES:
        return f"unknown status {results.get('status')!r}"
    final = results.get(final_key(results.get("metric", "test_acc")))
    if results["status"] == COMPLETED and not (
        isinstance(final, int | float) and not isinstance(final, bool) and math.isfinite(final)
    ):
        return f"completed without a number for {final_key(results.get('metric', 'test_acc'))}"
    return None


def objective(results: dict[str, Any]) -> float:
    """What a sweeper optimises: the best value of the main metric. A run that diverged
    before its first evaluation scores the worst value (0 for an accuracy, +inf for a
    loss) rather than crashing the sweep."""
    best = results.get(best_key(results.get("metric", "test_acc")))
    if best is not None:
        return float(best)
    return 0.0 if results.get("higher_is_better", True) else math.inf
