"""A Hydra callback that creates the sweep directory as a multirun starts.

Hydra creates it only when the launcher starts the first job, but the Optuna sweeper opens its
study before that: a `sqlite:///<sweep dir>/optuna.db` storage would fail with "unable to open
database file". Configured under `hydra.callbacks` (configs/hydra/sweeper/optuna_sqlite.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class CreateSweepDir(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
