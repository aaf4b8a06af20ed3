"""Which checkpoint a run resumes from, and whether it may: the same config, bar bookkeeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from optbench.config import flatten, is_bookkeeping
from optbench.errors import UserError
from optbench.run.auto_lr import AUTO_KEYS, with_found_lr
from optbench.train import checkpoint

Resume = tuple[Path, dict[str, Any]]


def find_resume(setting: str | None, run_dir: Path) -> Resume | None:
    """The checkpoint `trainer.resume` points at: null (none), auto, a run directory or a file."""
    if setting is None:
        return None
    if setting == "auto":
        return checkpoint.load_latest(run_dir) if checkpoint.list_checkpoints(run_dir) else None
    path = Path(setting).expanduser()
    if path.is_file():
        return path, checkpoint.load_checkpoint(path)
    if not path.is_dir():
        raise UserError(f"trainer.resume={setting}: no such run directory or checkpoint file")
    return checkpoint.load_latest(path)


def check_resumable(cfg: DictConfig, payload: dict[str, Any], run_dir: Path) -> None:
    """A resumed run must compute what the interrupted one did: same config, bar bookkeeping."""

    def settings(config: DictConfig) -> dict[str, Any]:
        flat = flatten(OmegaConf.to_container(config, resolve=True))
        return {k: v for k, v in flat.items() if not is_bookkeeping(k)}

    saved, now = settings(OmegaConf.create(payload["config"])), settings(cfg)
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        details = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:4])
        raise UserError(f"cannot resume {run_dir}: its config differs in {details}")


def with_saved_lrs(cfg: DictConfig, payload: dict[str, Any]) -> DictConfig:
    """On resume, `auto` LRs are the values the first run found, not a new range test."""
    saved = OmegaConf.create(payload["config"])
    return with_found_lr(cfg, {key: OmegaConf.select(saved, key) for key in AUTO_KEYS})[0]
