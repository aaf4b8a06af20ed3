"""Checkpoint files: written atomically, loaded without executing code, corrupt ones skipped.

A checkpoint holds only tensors and plain containers, so `torch.load(weights_only=True)`
can read it: loading a checkpoint never runs code from the file. The newest `keep` files
are kept; a new one replaces nothing until it is complete.
"""

from __future__ import annotations

import io
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from optbench.errors import UserError
from optbench.tracking.files import atomic_write_bytes

log = logging.getLogger("optbench")

FORMAT_VERSION = 1
FOLDER = "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / FOLDER / f"step-{step:09d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint files, newest first."""
    return sorted((run_dir / FOLDER).glob("step-*.pt"), reverse=True)


def save_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write `payload` as the checkpoint of `step`, then delete all but the newest `keep`."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    path = checkpoint_path(run_dir, step)
    atomic_write_bytes(path, buffer.getvalue())
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read one checkpoint file; a corrupt, truncated or foreign file is a one-line UserError."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
    ) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} is corrupt or truncated ({reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise UserError(f"{path} is not an optbench checkpoint (format {FORMAT_VERSION})")
    return payload


def load_latest(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint of a run; corrupt newer ones are reported and skipped."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise UserError(f"no checkpoint in {run_dir / FOLDER}")
    for path in candidates:
        try:
            return path, load_checkpoint(path)
        except UserError as err:
            log.warning("skipping %s", err)
    raise UserError(
        f"no readable checkpoint in {run_dir / FOLDER}: all {len(candidates)} are corrupt"
    )
