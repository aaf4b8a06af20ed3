"""Test helpers that read what a run wrote."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optbench.hydra_command import initialize_configs


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """A config composed exactly as the CLI composes it."""
    with initialize_configs():
        return compose(config_name, overrides=list(overrides))


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs a run logged to TensorBoard under `tag`."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
