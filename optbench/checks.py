"""Checks of config values that turn a bad value into a one-line UserError naming its key."""

from __future__ import annotations

import math
import numbers
from typing import Any

from optbench.errors import UserError


def is_number(value: Any) -> bool:
    """A finite real number; True and False do not count."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def require_int(value: Any, key: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise UserError(f"{key} must be an integer <= {maximum}, got {value!r}")
    return int(value)


def require_number(value: Any, key: str) -> float:
    if not is_number(value):
        raise UserError(f"{key} must be a number, got {value!r}")
    return float(value)


def require_positive(value: Any, key: str) -> float:
    if not (is_number(value) and value > 0):
        raise UserError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def require_fraction(value: Any, key: str) -> float:
    """A value in [0, 1): a momentum, a beta, a decay rate."""
    if not (is_number(value) and 0 <= value < 1):
        raise UserError(f"{key} must be in [0, 1), got {value!r}")
    return float(value)
