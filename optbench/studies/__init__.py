"""Sweeps beyond one Hydra sweeper: the equal-budget tuning protocol, and the sweep folder an
Optuna study's SQLite file needs before its first job runs."""
