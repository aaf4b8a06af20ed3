"""Every host read of a device value in the training loop goes through `to_host`, so the
syncs a step makes can be counted (tests/test_step.py checks a deferred step makes none)."""

from __future__ import annotations

from typing import Any

import torch

HOST_READS = [0]  # reads so far in this process


def to_host(tensor: torch.Tensor) -> Any:
    """`tensor.tolist()`: waits for the device to finish the work that produces it."""
    HOST_READS[0] += 1
    return tensor.tolist()
