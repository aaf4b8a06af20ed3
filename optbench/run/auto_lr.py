"""`auto` LRs: the settings a range test decides, and the config once it has decided."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

AUTO_KEYS = ("optimizer.lr", "scheduler.max_lr")


def auto_keys(cfg: DictConfig) -> list[str]:
    """The LR keys set to `auto`: the range test decides them."""
    return [key for key in AUTO_KEYS if OmegaConf.select(cfg, key) == "auto"]


def with_found_lr(cfg: DictConfig, lr: float | dict[str, float]) -> tuple[DictConfig, list[str]]:
    """`cfg` with every `auto` LR replaced by `lr` (or `lr[key]`), and the keys replaced."""
    cfg = cfg.copy()
    replaced = auto_keys(cfg)
    for key in replaced:
        OmegaConf.update(cfg, key, float(lr[key] if isinstance(lr, dict) else lr))
    return cfg, replaced
