"""Shared fixtures: configs composed exactly as the CLI composes them, small and fast."""

from __future__ import annotations

import pytest
from helpers import compose_config
from omegaconf import DictConfig

# A small, learnable problem that trains in about a second on one CPU core.
FAST = [
    "dataset=synthetic",
    "dataset.train_size=512",
    "dataset.val_size=256",
    "dataset.test_size=256",
    "dataset.separation=0.4",
    "model=mlp",
    "model.hidden=[64]",
    "trainer.batch_size=64",
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.log_interval=4",
]


@pytest.fixture
def fast_cfg():
    """`fast_cfg("optimizer=adamw", ...)`: the FAST problem with extra overrides."""

    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(*FAST, *overrides, config_name=config_name)

    return make
