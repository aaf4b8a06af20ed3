"""Momentum you can inspect, scale, reset and schedule, whatever the optimizer calls it.

The coefficient is a group's `momentum` (SGD, RMSprop, LARS, Muon) or the first of its
`betas` (Adam family, Lion, Sophia). The state is the first-moment buffer: `momentum_buffer`
(SGD-style, a sum: v = mu v + g) or `exp_avg` (Adam-style, an average: m = b m + (1 - b) g).
A user's optimizer class whose buffers are named otherwise lists them in a class attribute,
`first_moment_keys = {"m": "average"}` (state key -> "sum" or "average").
"""

from __future__ import annotations

from typing import Any

import torch

from optbench.errors import UserError

SUM_BUFFER = "momentum_buffer"  # v = mu * v + g: its size depends on mu
AVERAGE_BUFFER = "exp_avg"  # m = b * m + (1 - b) * g: an average of gradients for any b
FIRST_MOMENT_KEYS = {SUM_BUFFER: "sum", AVERAGE_BUFFER: "average"}


def first_moment_keys(optimizer: torch.optim.Optimizer) -> dict[str, str]:
    """The state keys of the first-moment buffers and their form: torch's names, or those
    the optimizer's class declares."""
    return getattr(type(optimizer), "first_moment_keys", FIRST_MOMENT_KEYS)


def momentum_coefficient(group: dict[str, Any]) -> float | None:
    """`momentum` (SGD, RMSprop, LARS) or beta1 of `betas` (Adam family, Lion); None if neither."""
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return None


def set_momentum_coefficient(
    optimizer: torch.optim.Optimizer,
    group: dict[str, Any],
    value: float,
    rescale_buffers: bool = False,
) -> None:
    """Set a group's momentum (or beta1) to `value`.

    With `rescale_buffers`, SGD-style buffers are multiplied by (1 - old) / (1 - new): a sum
    v = mu v + g settles at g / (1 - mu), so this keeps the step it produces the same size.
    Adam-style averages need no rescaling: they average the gradient for any beta1.
    """
    old = momentum_coefficient(group)
    if old is None:
        raise UserError(f"{type(optimizer).__name__} keeps no momentum coefficient to set")
    if "betas" in group:
        group["betas"] = (value, *tuple(group["betas"])[1:])
    else:
        group["momentum"] = value
    if rescale_buffers and old != value:
        sums = [key for key, form in first_moment_keys(optimizer).items() if form == "sum"]
        for p in group["params"]:
            for key in sums:
                buffer = optimizer.state.get(p, {}).get(key)
                if buffer is not None:
                    buffer.mul_((1 - old) / (1 - value))


def momentum_buffers(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> list[torch.Tensor]:
    """The group's first-moment buffers that exist so far (none before the first step)."""
    buffers = []
    for p in group["params"]:
        state = optimizer.state.get(p, {})
        for key in first_moment_keys(optimizer):
            if isinstance(state.get(key), torch.Tensor):
                buffers.append(state[key])
    return buffers


def has_momentum_coefficient(optimizer: torch.optim.Optimizer) -> bool:
    """Every group has a coefficient to set (`momentum` or `betas`), even if it is 0."""
    return all(momentum_coefficient(g) is not None for g in optimizer.param_groups)


def momentum_in_use(optimizer: torch.optim.Optimizer) -> bool:
    """Momentum is on: betas, or a `momentum` above 0 in some group.

    1cycle and cyclic schedules cycle momentum only then: torch's would silently switch it
    on for SGD without it (and raise for Adagrad).
    """
    groups = optimizer.param_groups
    if any("betas" in g for g in groups):
        return True
    return has_momentum_coefficient(optimizer) and any(g.get("momentum", 0) > 0 for g in groups)


def _require_momentum(optimizer: torch.optim.Optimizer) -> None:
    if not has_momentum_coefficient(optimizer):
        raise UserError(
            f"{type(optimizer).__name__} keeps no momentum (no momentum or betas in its groups)"
        )


def scale_momentum(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Multiply every first-moment buffer by `factor` (0 resets it)."""
    _require_momentum(optimizer)
    with torch.no_grad():
        for group in optimizer.param_groups:
            for buffer in momentum_buffers(optimizer, group):
                buffer.mul_(factor)


def reset_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Zero every first-moment buffer; second moments and step counts are kept."""
    scale_momentum(optimizer, 0.0)


def momentum_norms(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The norm of each group's first-moment buffers, on the device (no sync)."""
    norms = {}
    for i, group in enumerate(optimizer.param_groups):
        buffers = momentum_buffers(optimizer, group)
        if buffers:
            norms[group.get("name", str(i))] = torch.linalg.vector_norm(
                torch.stack([b.norm() for b in buffers])
            )
    return norms
