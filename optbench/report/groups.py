"""Which settings a sweep varied, one group of runs per setting, and statistics over seeds."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optbench.config import is_bookkeeping
from optbench.report.headline import Headline
from optbench.report.runs import (
    COMPLETED,
    DIVERGED,
    FAILED,
    INTERRUPTED,
    MALFORMED,
    PRUNED,
    Run,
    known_headline,
)

SEED_KEY = "trainer.seed"
# Settings that change where or how a run logs, not what it trains; never a group of their own
# (the trainer lets a resumed run change the same ones).
# Which accuracies a run's results.json times: the report times its own targets.
REPORT_BOOKKEEPING = ("trainer.targets",)
# Keys of these sections describe the problem being solved; the other swept keys, the method.
WORKLOAD_SECTIONS = ("dataset", "model")


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) of the finite values; None where undefined.
    The values stay for the intervals and tests over seeds (seed_statistics.py)."""

    mean: float | None
    std: float | None
    n: int
    values: tuple[float, ...] = ()


def stat(values: Iterable[Any]) -> Stat:
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return Stat(None, None, 0)
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Stat(statistics.fmean(finite), std, len(finite), tuple(finite))


@dataclass(frozen=True)
class Group:
    """The runs (seeds) of one setting of the swept keys."""

    values: dict[str, Any]  # every swept key -> its value here
    runs: list[Run]
    workload: str  # "synthetic/mlp"
    method: str  # "optimizer=sgd, scheduler=cosine"
    # The metric of the group's workload, for a group none of whose runs tells its own (all
    # failed): it is shown beside the workload's other groups.
    workload_headline: Headline | None = None

    @property
    def headline(self) -> Headline:
        """The metric the group is ranked by: its runs' (one workload, one task)."""
        return known_headline(self.runs) or self.workload_headline or Headline()

    def with_status(self, *statuses: str) -> list[Run]:
        return [r for r in self.runs if r.status in statuses]

    @property
    def completed(self) -> list[Run]:
        return self.with_status(COMPLETED)

    def status_counts(self) -> dict[str, int]:
        """Runs that are not in the means, by status."""
        left_out = (FAILED, DIVERGED, INTERRUPTED, PRUNED, MALFORMED)
        counts = {s: len(self.with_status(s)) for s in left_out}
        other = len(self.runs) - len(self.completed) - sum(counts.values())
        return {s: n for s, n in (counts | {"other status": other}).items() if n}


def swept_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values differ across runs, except the seed and bookkeeping, in config order.

    A key some runs lack differs only within a sweep (a `+key=value` override, a dict entry):
    across sweeps it most likely means the config gained the key between them.
    """
    configured = [r for r in runs if r.has_config] or runs
    sweeps: dict[Path, list[Run]] = {}
    for run in configured:
        sweeps.setdefault(run.sweep, []).append(run)

    def differs(key: str) -> bool:
        if len({r.config[key] for r in configured if key in r.config}) > 1:
            return True
        return any(len({key in r.config for r in members}) > 1 for members in sweeps.values())

    keys = dict.fromkeys(k for r in configured for k in r.config)
    return [
        k
        for k in keys
        if k != SEED_KEY and not is_bookkeeping(k) and k not in REPORT_BOOKKEEPING and differs(k)
    ]


def shown_keys(runs: list[Run], swept: list[str]) -> list[str]:
    """The swept keys worth a column: not those that follow from their section's choice.

    `optimizer=sgd,adamw` changes optimizer.lr and optimizer.betas too; those are columns only
    if the sweep also varied them within one optimizer.
    """

    def implied(key: str) -> bool:
        name = f"{key.split('.')[0]}.name"
        if key == name or name not in swept:
            return False
        pairs = {(r.config.get(name), r.config.get(key)) for r in runs}
        return len(pairs) == len({choice for choice, _ in pairs})

    return [k for k in swept if not implied(k)]


def short_key(key: str) -> str:
    """`optimizer.name` -> `optimizer`, as on the command line."""
    return key.removesuffix(".name")


def show_value(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def describe(values: dict[str, Any], keys: list[str]) -> str:
    """`optimizer=sgd, optimizer.lr=0.1`"""
    return ", ".join(f"{short_key(k)}={show_value(values[k])}" for k in keys)


def _place(run: Run, swept: list[str], keys: list[tuple]) -> tuple:
    """The group of a run without its config: the only one whose swept values agree with every
    setting the run knows; its own values (None where unknown) if none or several do."""
    known = [(i, run.config[k]) for i, k in enumerate(swept) if k in run.config]
    matches = [key for key in keys if all(key[i] == value for i, value in known)]
    return matches[0] if len(matches) == 1 else tuple(run.config.get(k) for k in swept)


def _sort_key(values: tuple[Any, ...]) -> tuple:
    return tuple((0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in values)


def group_runs(runs: list[Run], swept: list[str], shown: list[str]) -> list[Group]:
    """One group per combination of swept values, sorted by those values. A run whose config
    could not be read knows only results.json's few settings: it joins the one group they
    match, else a group of its own."""
    by_values: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.has_config:
            by_values.setdefault(tuple(run.config.get(k) for k in swept), []).append(run)
    for run in runs:
        if not run.has_config:
            by_values.setdefault(_place(run, swept, list(by_values)), []).append(run)
    workload_keys = [k for k in shown if k.split(".")[0] in WORKLOAD_SECTIONS]
    method_keys = [k for k in shown if k not in workload_keys]
    groups = []
    for key in sorted(by_values, key=_sort_key):
        values = dict(zip(swept, key, strict=True))
        first = by_values[key][0].config
        workload = "/".join(show_value(first.get(f"{s}.name")) for s in WORKLOAD_SECTIONS)
        extra = [k for k in workload_keys if not k.endswith(".name")]
        if extra:
            workload += f" ({describe(values, extra)})"
        groups.append(
            Group(values, by_values[key], workload, describe(values, method_keys) or "all runs")
        )
    # A workload's metric: its first group's that tells one; else the first any group tells.
    known = [(g.workload, h) for g in groups if (h := known_headline(g.runs)) is not None]
    workloads = dict(reversed(known))
    fallback = known[0][1] if known else None
    return [
        dataclasses.replace(g, workload_headline=workloads.get(g.workload, fallback))
        for g in groups
    ]
