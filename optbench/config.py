"""optbench's config files and keys, readable without torch (the report reads them too)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys that change how a run is carried out or recorded, not what it computes: a resumed run
# may change them, and runs that differ only in them are the same setting in a report.
BOOKKEEPING = (
    "paths",
    "dataset.root",
    "dataset.download",
    "dataset.search_dirs",
    "trainer.device",
    "trainer.devices",  # the global batch and its order do not depend on how it is split
    "trainer.progress",
    "trainer.log_interval",
    "trainer.diagnostics_interval",
    "trainer.resume",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
)


def is_bookkeeping(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in BOOKKEEPING)


def group_option(group: str, name: str) -> DictConfig:
    """The documented defaults of one option of a config group: configs/<group>/<name>.yaml."""
    return OmegaConf.create(
        (resources.files("optbench.configs") / group / f"{name}.yaml").read_text()
    )


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b.c": leaf}; lists and empty dicts become compact JSON text,
    so every value is hashable and two configs compare equal exactly when their settings do."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list | dict):
            flat[f"{prefix}{key}"] = json.dumps(value, separators=(",", ":"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
