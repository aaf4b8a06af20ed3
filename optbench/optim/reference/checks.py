"""Constructor-argument checks shared by the reference optimizers (after pytorch-optimizer).

Each raises `ValueError` with a message that names the argument, the rule and the value,
e.g. `lr must be positive, got -1`.
"""

from __future__ import annotations

from collections.abc import Sequence


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def check_non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be non-negative, got {value}")


def check_unit_interval(name: str, value: float) -> None:
    """`value` in [0, 1): a decay rate such as momentum, alpha or a beta."""
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def check_betas(betas: Sequence[float]) -> None:
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(betas)}")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
