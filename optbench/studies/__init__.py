"""Studies over many training runs, driven by Optuna: `optbench search` (a sampler chooses each
trial) and the equal-budget tuning protocol of `optbench tune` (quasi-random trials enqueued
per optimizer and study)."""
