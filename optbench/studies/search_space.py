"""A search space written in the config, checked once, sampled by an Optuna trial.

    search:
      optimizers: [adamw, lion]     # optional: the optimizer config group, a categorical choice
      space:                        # sampled in every trial, nested like the config
        optimizer:
          lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
      per_optimizer:                # sampled only in the trials of that optimizer
        lion: {optimizer: {lr: {type: float, low: 1.0e-6, high: 1.0e-3, log: true}}}

A mapping with a `type` is one dimension, named by its config key (`optimizer.lr`); nesting
keeps every field overridable (`search.space.optimizer.lr.high=0.5`). A key in a
`per_optimizer` section replaces the same key of `space` for that optimizer, so each optimizer
can have its own ranges. Optuna samples define-by-run, so the conditional part is an `if`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from optbench.checks import is_number
from optbench.errors import UserError

GROUP_KEY = "optimizer"
_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class Dimension:
    """One config key to sample: its Optuna distribution, checked, and its name in the study
    (`lion/optimizer.lr` in a per-optimizer section: a parameter of its own, not one
    `optimizer.lr` with two ranges)."""

    key: str
    distribution: optuna.distributions.BaseDistribution
    name: str = ""

    def suggest(self, trial: optuna.Trial) -> Any:
        d, name = self.distribution, self.name or self.key
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return trial.suggest_categorical(name, d.choices)
        if isinstance(d, optuna.distributions.IntDistribution):
            return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)

    def from_unit(self, u: float) -> Any:
        """The value at `u` in [0, 1): quasi-random points of the unit cube mapped onto the
        dimension, every value equally likely: log-uniformly on a log scale; an int or a step
        takes the grid point whose cell holds `u` (the top value included)."""
        d = self.distribution
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return d.choices[min(int(u * len(d.choices)), len(d.choices) - 1)]
        is_int = isinstance(d, optuna.distributions.IntDistribution)
        if d.log:
            top = d.high + 1 if is_int else d.high  # an int's cell [k, k + 1)
            value = math.exp(math.log(d.low) + u * (math.log(top) - math.log(d.low)))
            return min(math.floor(value), d.high) if is_int else min(max(value, d.low), d.high)
        step = d.step if d.step is not None else (1 if is_int else None)
        if step is None:
            return d.low + u * (d.high - d.low)
        points = math.floor((d.high - d.low) / step + 1e-9) + 1
        value = d.low + min(math.floor(u * points), points - 1) * step
        return value if is_int else min(float(value), d.high)  # 0.1 x 3 > 0.3 in floats

    def corners(self) -> tuple[Any, Any]:
        """The two extremes: what the preflight checks before any trial runs."""
        d = self.distribution
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return d.choices[0], d.choices[-1]
        return d.low, d.high


@dataclass(frozen=True)
class SearchSpace:
    common: tuple[Dimension, ...]
    per_optimizer: dict[str, tuple[Dimension, ...]]

    def optimizers(self, default: str) -> list[str]:
        """Every optimizer a trial may train with."""
        group = next((d for d in self.common if d.key == GROUP_KEY), None)
        return [default] if group is None else list(group.distribution.choices)

    def dimensions(self, optimizer: str) -> list[Dimension]:
        """What a trial of `optimizer` samples: the group first, its own section over `space`."""
        own = {d.key: d for d in self.per_optimizer.get(optimizer, ())}
        return [own.pop(d.key, d) for d in self.common] + list(own.values())

    def sample(self, trial: optuna.Trial, default_optimizer: str) -> dict[str, Any]:
        """The trial's values, keyed like overrides: {"optimizer": "lion", "optimizer.lr": ...}."""
        values: dict[str, Any] = {}
        group = next((d for d in self.common if d.key == GROUP_KEY), None)
        optimizer = default_optimizer if group is None else group.suggest(trial)
        if group is not None:
            values[GROUP_KEY] = optimizer
        for d in self.dimensions(optimizer):
            if d.key != GROUP_KEY:
                values[d.key] = d.suggest(trial)
        return values


def read_space(space: Any, per_optimizer: Any, optimizers: Any) -> SearchSpace:
    """`search.space`, `.per_optimizer` and `.optimizers` as a SearchSpace; one-line UserError."""
    if not isinstance(space, dict) or not space:
        raise UserError("search.space must map config keys to {type: float|int|categorical, ...}")
    common = _dimensions(space, "search.space")
    if GROUP_KEY in {d.key for d in common}:
        raise UserError("search.space.optimizer cannot be a dimension; list search.optimizers")
    if optimizers is not None:
        if not (isinstance(optimizers, list) and optimizers) or not all(
            isinstance(o, str) for o in optimizers
        ):
            raise UserError(f"search.optimizers must list optimizer names, got {optimizers!r}")
        choice = optuna.distributions.CategoricalDistribution(optimizers)
        common = (Dimension(GROUP_KEY, choice), *common)
    if optimizers is not None:
        for name in per_optimizer or {}:
            if name not in optimizers:
                raise UserError(
                    f"search.per_optimizer.{name}: '{name}' is not in search.optimizers {optimizers}"
                )
    return SearchSpace(common, read_sections(per_optimizer, "search.per_optimizer"))


def read_sections(per_optimizer: Any, where: str) -> dict[str, tuple[Dimension, ...]]:
    """Per-optimizer spaces, each dimension named `<optimizer>/<key>` in the study."""
    if not isinstance(per_optimizer, dict | None):
        raise UserError(f"{where} must map optimizers to search spaces, got {per_optimizer!r}")
    return {
        name: tuple(
            Dimension(d.key, d.distribution, f"{name}/{d.key}")
            for d in _dimensions(section, f"{where}.{name}")
        )
        for name, section in (per_optimizer or {}).items()
    }


def _dimensions(tree: Any, where: str, prefix: str = "") -> tuple[Dimension, ...]:
    """The leaves of a nested mapping: each mapping with a `type` is one dimension."""
    if not isinstance(tree, dict):
        raise UserError(f"{where} must be {{type: float|int|categorical, ...}}, got {tree!r}")
    if "type" in tree:
        return (_dimension(prefix, tree, where),)
    found: tuple[Dimension, ...] = ()
    for key, sub in tree.items():
        found += _dimensions(
            sub, f"{where}.{key}", f"{prefix}{key}" if not prefix else f"{prefix}.{key}"
        )
    return found


def _dimension(key: str, entry: Any, where: str) -> Dimension:
    kind = entry.get("type")
    if kind not in _FIELDS:
        raise UserError(f"{where} must be {{type: float|int|categorical, ...}}, got {entry!r}")
    unknown = sorted(set(entry) - _FIELDS[kind])
    if unknown:
        raise UserError(
            f"{where}: unknown field {unknown[0]}; a {kind} entry takes "
            + ", ".join(sorted(_FIELDS[kind]))
        )
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}.choices must be a non-empty list, got {choices!r}")
        if not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
            raise UserError(
                f"{where}.choices must be numbers, strings, true/false or null, got {choices!r}"
            )
        return Dimension(key, optuna.distributions.CategoricalDistribution(choices))
    low, high, log, step = (entry.get(f) for f in ("low", "high", "log", "step"))
    log = False if log is None else log

    def number_ok(v: Any) -> bool:
        return is_number(v) if kind == "float" else isinstance(v, int) and not isinstance(v, bool)

    if not (number_ok(low) and number_ok(high)):
        raise UserError(f"{where} needs {kind} low and high, got low={low!r}, high={high!r}")
    if not low < high:
        raise UserError(f"{where} needs low < high, got low={low!r}, high={high!r}")
    if not isinstance(log, bool):
        raise UserError(f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise UserError(f"{where} is on a log scale, so low must be > 0, got {low!r}")
    if step is not None and (log or not number_ok(step) or step <= 0):
        raise UserError(f"{where}.step must be a positive {kind}, without log, got {step!r}")
    if step is not None and step > high - low:
        raise UserError(f"{where}.step={step!r} is wider than the range {low!r} to {high!r}")
    if kind == "float":
        dist = optuna.distributions.FloatDistribution(float(low), float(high), log=log, step=step)
    else:
        dist = optuna.distributions.IntDistribution(low, high, log=log, step=step or 1)
    return Dimension(key, dist)
