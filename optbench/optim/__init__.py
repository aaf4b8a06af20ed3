"""Optimizers: the registry, parameter groups and the factory that builds one from config."""

from optbench.optim.factory import (
    build_optimizer,
    optimizer_config,
    optimizer_from_groups,
    with_resolved_optimizer,
)
from optbench.optim.param_groups import parameter_groups
from optbench.optim.registry import OPTIMIZERS, OptimizerInfo, info_of, optimizer_info

__all__ = [
    "OPTIMIZERS",
    "OptimizerInfo",
    "build_optimizer",
    "info_of",
    "optimizer_config",
    "optimizer_from_groups",
    "optimizer_info",
    "parameter_groups",
    "with_resolved_optimizer",
]
