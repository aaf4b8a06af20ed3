"""Seeding and the random states a checkpoint or a range-test snapshot puts back."""

from __future__ import annotations

import os
import random
from typing import Any

import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python and torch (CPU and every CUDA device); optionally demand deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS reads this when it first starts; without it deterministic matmuls raise.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Set both ways: in a sweep, jobs share one process.
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


def rng_state() -> dict[str, Any]:
    """Python's and torch's random states (CPU and every CUDA device)."""
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
