"""Read the momentum coefficient of an optimizer's parameter group, whatever it is called."""

from __future__ import annotations

from typing import Any


def momentum_coefficient(group: dict[str, Any]) -> float | None:
    """`momentum` (SGD, RMSprop, LARS) or beta1 of `betas` (Adam family, Lion); None if neither."""
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return None
