"""Checkpoint files: written atomically, checked byte for byte, loaded without executing code.

A checkpoint file is one header line with the sha256 of everything after it, then what
`torch.save` wrote. Loading checks the digest before a single byte is unpickled, so a
flipped byte, a truncated or a foreign file is an error, never trained on; the payload holds
only tensors and plain containers, so `torch.load(weights_only=True)` can read it and
loading never runs code from the file. The newest `keep` files are kept; a new one
replaces nothing until it is complete, and what a killed write left behind is removed.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import torch

from optbench.errors import UserError
from optbench.tracking.files import atomic_write_bytes

log = logging.getLogger("optbench")

FORMAT_VERSION = 2  # 2: the sha256 header; 1 had none
FOLDER = "checkpoints"
HEADER = b"optbench checkpoint sha256 "
DIGEST_CHARS = 64  # hex digits of a sha256
BEST_NAME = "best.pt"  # the weights at the best validation point (trainer.keep_best)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / FOLDER / f"step-{step:09d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoint files, newest first (a write in progress has a
    temporary name)."""
    return sorted((run_dir / FOLDER).glob("step-*.pt"), reverse=True)


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that never finished (the process was
    killed before the rename); call only from the process that owns the run directory."""
    partial = sorted((run_dir / FOLDER).glob(".step-*.pt.*.tmp"))
    for path in partial:
        path.unlink(missing_ok=True)
        log.info("removed %s, left by a checkpoint write that never finished", path)
    return partial


def _write(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    body = buffer.getvalue()
    header = HEADER + hashlib.sha256(body).hexdigest().encode() + b"\n"
    atomic_write_bytes(path, header + body)


def save_best(run_dir: Path, weights: dict[str, torch.Tensor], step: int) -> Path:
    """Write the model's weights at the best validation point so far (`trainer.keep_best`):
    `checkpoints/best.pt`, readable with `load_checkpoint`."""
    path = run_dir / FOLDER / BEST_NAME
    _write(path, {"model": weights, "step": step})
    return path


def save_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write `payload` as the checkpoint of `step`, then delete all but the newest `keep`
    and the leftovers of killed writes."""
    path = checkpoint_path(run_dir, step)
    _write(path, payload)
    remove_partial_writes(run_dir)
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def _verified_body(path: Path) -> bytes:
    """The torch.save bytes of `path`, once its header and digest say they are intact."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except OSError as err:
        raise UserError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    if not data:
        raise UserError(f"checkpoint {path} is empty")
    if data.startswith(b"PK\x03\x04"):  # what torch.save writes: no digest to check it by
        raise UserError(
            f"{path} is a plain torch file, not an optbench checkpoint (format {FORMAT_VERSION} "
            "starts with a sha256 header; format 1 had none and cannot be verified)"
        )
    if not data.startswith(HEADER):
        raise UserError(
            f"{path} is not an optbench checkpoint (no '{HEADER.decode().strip()}' header)"
        )
    start = len(HEADER) + DIGEST_CHARS + 1
    digest, body = data[len(HEADER) : start - 1], data[start:]
    if data[start - 1 : start] != b"\n" or hashlib.sha256(body).hexdigest().encode() != digest:
        raise UserError(f"checkpoint {path} is corrupt or truncated (its sha256 does not match)")
    return body


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read one checkpoint file; a corrupt, truncated or foreign file is a one-line UserError."""
    body = _verified_body(Path(path))
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as err:  # whatever intact bytes that do not unpickle raise: the file's fault
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"checkpoint {path} cannot be read safely ({reason[:200]})") from None
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
