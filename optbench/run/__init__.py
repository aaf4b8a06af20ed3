"""A run, built once from a config: plan, model, optimizer, schedule, task, data and step."""

from optbench.run.build import Run, build_run

__all__ = ["Run", "build_run"]
