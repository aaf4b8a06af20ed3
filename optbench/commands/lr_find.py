"""`optbench lr-find`: check the config, run the range test, write and show its results."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from optbench.commands.launch import ranks_to_start, start_ranks
from optbench.lr_finder.finder import FinderSettings, find_lr
from optbench.lr_finder.outputs import JSON_NAME, suggestions_table, write_outputs
from optbench.run import build_run
from optbench.tracking.console import console, print_plain
from optbench.train.preflight import check_train_config


def check_lr_find_config(cfg: DictConfig) -> None:
    check_train_config(cfg)
    FinderSettings.from_config(cfg.lr_find)


def label(cfg: DictConfig) -> str:
    return f"{cfg.optimizer.name} on {cfg.model.name}/{cfg.dataset.name}"


def run_lr_find(cfg: DictConfig, run_dir: Path) -> float | None:
    if (ranks := ranks_to_start(cfg)) > 1:  # every rank in lockstep, one result
        if code := start_ranks("lr-find", run_dir, ranks):
            raise SystemExit(code)
        return json.loads((run_dir / JSON_NAME).read_text())["lr"]
    run = build_run(cfg)
    result = find_lr(run, cfg.lr_find)
    if not run.plan.world.main:
        return result.chosen.lr
    write_outputs(result, run_dir, label(cfg))
    console.print(suggestions_table(result, f"LR range test: {label(cfg)}"))
    print_plain(f"wrote {run_dir}/lr_find.png, lr_find.csv, lr_find.json")
    return result.chosen.lr
