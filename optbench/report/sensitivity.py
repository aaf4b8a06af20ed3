"""Hyperparameter sensitivity: how a method's final validation metric depends on one numeric
setting a sweep varied (optimizer.lr, optimizer.weight_decay, scheduler.warmup, ...).

A swept key is numeric when every group's value is a number and it takes 3 or more values; a
list-valued key (optimizer.betas) is read component by component, `optimizer.betas[1]`. For
each numeric key and workload, the other swept method keys that are not numeric (optimizer,
scheduler) make the curves; other numeric keys are optimised out: at each value of the key,
the setting of the others with the best mean. A point is the mean over the completed seeds
of the final value of the main metric, with a 95% t-interval; a diverged seed is left out of
the mean and marked, and a value where no seed completed has no mean and is outside the good
region. The good region is the contiguous run of values around the best whose mean is within
`tolerance` of the best (an accuracy >= (1 - tolerance) x best, a loss <= best / (1 -
tolerance): DEFAULT_TARGET_FRACTION's convention), its width in decades on a log axis.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from dataclasses import dataclass
from typing import Any

from optbench.report.groups import WORKLOAD_SECTIONS, Group, show_value
from optbench.report.headline import Headline
from optbench.report.runs import DIVERGED
from optbench.report.seed_statistics import t_interval
from optbench.report.targets import DEFAULT_TARGET_FRACTION

# The good region's default tolerance: the target's (within 5% of the best).
DEFAULT_TOLERANCE = round(1 - DEFAULT_TARGET_FRACTION, 10)
# Fewer values make a comparison, not a curve.
MIN_VALUES = 3
# Keys searched on a log scale by convention, whatever their range.
LOG_SUFFIXES = ("lr", "weight_decay")
# Other positive keys whose values span this ratio (2 decades) get a log axis too.
LOG_SPAN = 100.0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Axis:
    """A swept setting: a config key, or one component of a list-valued key."""

    key: str  # flattened config key, e.g. "optimizer.betas"
    index: int | None = None  # the component of a list value; None: the value itself

    @property
    def name(self) -> str:
        return self.key if self.index is None else f"{self.key}[{self.index}]"

    def value(self, values: dict[str, Any]) -> Any:
        value = values.get(self.key)
        if self.index is None:
            return value
        components = _components(value)
        return None if components is None else components[self.index]


def _components(value: Any) -> list[Any] | None:
    """The numbers of a list-valued setting (flattened to JSON text, see config.flatten)."""
    if not isinstance(value, str) or not value.startswith("["):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) and all(_is_number(v) for v in parsed) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def swept_axes(groups: list[Group], keys: list[str]) -> list[Axis]:
    """The settings that vary between `groups`: each key, or each varying component of a key
    whose values are all number lists of one length."""
    axes = []
    for key in keys:
        lists = [_components(g.values.get(key)) for g in groups]
        if all(c is not None for c in lists) and len({len(c) for c in lists}) == 1:
            axes += [Axis(key, i) for i in range(len(lists[0])) if len({c[i] for c in lists}) > 1]
        elif len({g.values.get(key) for g in groups}) > 1:
            axes.append(Axis(key))
    return axes


def is_numeric(axis: Axis, groups: list[Group]) -> bool:
    values = [axis.value(g.values) for g in groups]
    return all(_is_number(v) for v in values) and len(set(values)) >= MIN_VALUES


def is_log(axis: Axis, values: list[float]) -> bool:
    """A log axis for LRs and weight decays, and for any key spanning 2 decades; only for
    positive values (a weight decay of 0 keeps the axis linear)."""
    if not values or min(values) <= 0:
        return False
    return axis.key.endswith(LOG_SUFFIXES) or max(values) / min(values) >= LOG_SPAN


@dataclass(frozen=True)
class Point:
    """One value of the key on one curve: the seeds of the best setting of the other numeric
    keys there (all settings pooled when none has a completed seed)."""

    value: float
    finals: tuple[float, ...]  # the final main metric of each completed seed
    diverged: int  # seeds that diverged: not in the mean
    runs: int  # every seed, whatever its status
    at: str  # the other numeric keys' values the point was taken at; "" when there are none

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.finals) if self.finals else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return t_interval(self.finals, CONFIDENCE)


@dataclass(frozen=True)
class Curve:
    workload: str
    label: str  # the non-numeric method keys' values, e.g. "optimizer=adamw"; "all runs"
    points: list[Point]  # by increasing value
    best: Point | None  # None: no value has a completed seed
    region: tuple[float, float] | None  # the good region's lowest and highest value
    width: float | None  # log10(high / low) on a log axis, high - low otherwise


@dataclass(frozen=True)
class Sensitivity:
    key: str  # the axis' name, e.g. "optimizer.lr"
    log: bool
    others: list[str]  # other numeric keys, optimised out at each value
    headline: Headline  # the metric of every curve: a report over two tasks has one per task
    tolerance: float
    curves: list[Curve]
    of_several: bool = False  # one of several metrics' analyses of the key: named after it too

    @property
    def width_unit(self) -> str:
        return "decades" if self.log else "units of the key"

    @property
    def title(self) -> str:
        """`optimizer.lr`; `optimizer.lr, val loss` beside another metric's analysis."""
        return self.key + (f", {self.headline.metric.replace('_', ' ')}" if self.of_several else "")

    @property
    def figure(self) -> str:
        """Its plot's file name: sensitivity_optimizer.lr.png, sensitivity_optimizer.betas_1.png;
        sensitivity_optimizer.lr_val_loss.png beside another metric's analysis."""
        name = self.key + (f"_{self.headline.metric}" if self.of_several else "")
        return "sensitivity_" + re.sub(r"[^\w.-]+", "_", name).strip("_") + ".png"


def _finals(group: Group) -> tuple[float, ...]:
    values = (r.result(group.headline.final) for r in group.completed)
    return tuple(float(v) for v in values if _is_number(v))


def _point(value: float, groups: list[Group], others: list[Axis], headline: Headline) -> Point:
    def point(members: list[Group], at: str) -> Point:
        return Point(
            value,
            tuple(f for g in members for f in _finals(g)),
            sum(len(g.with_status(DIVERGED)) for g in members),
            sum(len(g.runs) for g in members),
            at,
        )

    candidates = [point([g], _describe(others, g.values)) for g in groups]
    best = headline.best_of([p.mean for p in candidates if p.mean is not None])
    if best is None:
        return point(groups, "")
    return next(p for p in candidates if p.mean == best)


def _describe(axes: list[Axis], values: dict[str, Any]) -> str:
    return ", ".join(f"{a.name.removesuffix('.name')}={show_value(a.value(values))}" for a in axes)


def good_region(
    points: list[Point], headline: Headline, tolerance: float
) -> tuple[Point, float, float] | None:
    """The best point, and the lowest and highest value of the contiguous run of points around
    it whose mean is within `tolerance` of the best; None when no point has a mean."""
    means = [p.mean for p in points]
    best_mean = headline.best_of([m for m in means if m is not None])
    if best_mean is None:
        return None
    if headline.higher_is_better:
        bound, inside = (1 - tolerance) * best_mean, (lambda m: m >= bound)
    else:
        bound, inside = best_mean / (1 - tolerance), (lambda m: m <= bound)
    i = means.index(best_mean)
    low = high = i
    while low > 0 and means[low - 1] is not None and inside(means[low - 1]):
        low -= 1
    while high < len(points) - 1 and means[high + 1] is not None and inside(means[high + 1]):
        high += 1
    return points[i], points[low].value, points[high].value


def region_width(low: float, high: float, log: bool) -> float:
    return math.log10(high / low) if log else high - low


def sensitivity(
    groups: list[Group], axis: Axis, axes: list[Axis], numeric: list[Axis], tolerance: float
) -> Sensitivity:
    """`axis` against the final main metric, one curve per setting of the non-numeric `axes`
    within each workload; the other `numeric` axes optimised out. `groups` share one metric."""
    others = [a for a in numeric if a != axis]
    labels = [a for a in axes if a not in numeric]
    values = sorted({float(axis.value(g.values)) for g in groups})
    log = is_log(axis, values)
    headline = groups[0].headline
    curves = []
    by_curve: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_curve.setdefault((g.workload, _describe(labels, g.values) or "all runs"), []).append(g)
    for (workload, label), members in by_curve.items():
        at_value: dict[float, list[Group]] = {}
        for g in members:
            at_value.setdefault(float(axis.value(g.values)), []).append(g)
        points = [_point(v, at_value[v], others, headline) for v in sorted(at_value)]
        found = good_region(points, headline, tolerance)
        best, region = (None, None) if found is None else (found[0], found[1:])
        width = None if region is None else region_width(*region, log)
        curves.append(Curve(workload, label, points, best, region, width))
    return Sensitivity(axis.name, log, [a.name for a in others], headline, tolerance, curves)


def sensitivities(groups: list[Group], shown: list[str], tolerance: float) -> list[Sensitivity]:
    """One analysis per numeric method key the runs were swept over, and per metric the groups
    are ranked by (a classifier's accuracy, a language model's loss); none if there is none.
    Workload keys (dataset.*, model.*) make workloads, not curves; keys implied by another
    choice (`shown`'s rule: an optimizer's own default LR) are not swept within a method."""
    method_keys = [k for k in shown if k.split(".")[0] not in WORKLOAD_SECTIONS]
    by_metric: dict[Headline, list[Group]] = {}
    for g in groups:
        by_metric.setdefault(g.headline, []).append(g)
    found = []
    for members in by_metric.values():
        axes = swept_axes(members, method_keys)
        numeric = [a for a in axes if is_numeric(a, members)]
        found += [sensitivity(members, a, axes, numeric, tolerance) for a in numeric]
    if len(by_metric) > 1:
        found = [dataclasses.replace(s, of_several=True) for s in found]
    return found
