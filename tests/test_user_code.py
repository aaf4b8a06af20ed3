"""A user's own optimizer, schedule and model from a package outside optbench, by import path,
by --config-dir YAML and by entry point, through every command; checked against torch."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST
from helpers import compose_config, read_jsonl
from user_package import install_user_package, write_user_package

from optbench.cli import main
from optbench.optim.momentum import momentum_buffers, scale_momentum, set_momentum_coefficient
from optbench.run.build import build_run
from optbench.run.schedule_curve import schedule_curve
from optbench.train import checkpoint
from optbench.train.trainer import train

NO_MODEL = [o for o in FAST if not o.startswith("model")]  # FAST's problem, for model=custom
CUSTOM_OPTIMIZER = ["optimizer=custom", "optimizer.target=userpkg.opt.MyAdam"]
CUSTOM_ALL = [*CUSTOM_OPTIMIZER, "scheduler=custom", "scheduler.target=userpkg.sched.half_cosine",
              "model=custom", "model.target=userpkg.models.Net", "+model.hidden=16"]  # fmt: skip


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """The user's working folder, holding their package: the current folder, as at a shell."""
    work = write_user_package(tmp_path / "work")
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return work


def optbench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(["optbench", *args], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, **(env or {})})  # fmt: skip
    return out


def losses(run_dir: Path) -> list[float]:
    return [r["train_loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "train_loss" in r]


def test_a_hand_written_adam_trains_as_torchs_adam_does(user_dir):
    # Same groups (no decay on biases), same schedule, same LR per step: the same run.
    common = [*FAST, "trainer.epochs=2", "optimizer.lr=3e-3", "scheduler=warmup_cosine"]
    theirs = train(compose_config(*common, "optimizer=adam", "optimizer.weight_decay=0.01"),
                   user_dir / "adam")  # fmt: skip
    ours = train(compose_config(*common, *CUSTOM_OPTIMIZER, "+optimizer.weight_decay=0.01"),
                 user_dir / "mine")  # fmt: skip
    assert losses(user_dir / "mine") == pytest.approx(losses(user_dir / "adam"), rel=1e-6)
    assert ours["final_val_acc"] == pytest.approx(theirs["final_val_acc"])
    assert ours["final_val_loss"] == pytest.approx(theirs["final_val_loss"], rel=1e-6)


def test_a_schedule_function_is_torchs_lambda_lr_after_the_warm_up_on_every_group(user_dir):
    from userpkg.sched import half_cosine

    cfg = compose_config(*NO_MODEL, *CUSTOM_OPTIMIZER, "scheduler=custom", "trainer.epochs=3",
                         "scheduler.target=userpkg.sched.half_cosine", "scheduler.warmup=4",
                         "model=custom", "model.target=userpkg.models.Net",
                         "param_groups.lr_multipliers={head:10}")  # fmt: skip
    curve = schedule_curve(cfg)
    total = curve.total_steps
    params = [torch.zeros(1, requires_grad=True) for _ in curve.lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0} for p in params], lr=1.0)
    main_steps = total - 4
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: half_cosine(s, main_steps))
    expected = []
    for _ in range(main_steps):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    scales = {name: values[4] for name, values in curve.lrs.items()}  # the factor is 1 at 0
    assert min(scales.values()) == pytest.approx(1e-3)  # custom.yaml's LR
    assert max(scales.values()) == pytest.approx(1e-2)  # the head at 10x
    for name, values in curve.lrs.items():
        assert values[:4] == pytest.approx([scales[name] * s / 4 for s in range(4)])  # warm-up
        assert values[4:] == pytest.approx([scales[name] * f for f in expected], rel=1e-12)


def test_a_run_of_the_users_optimizer_schedule_and_model_resumes_bit_for_bit(user_dir):
    cfg = compose_config(*NO_MODEL, *CUSTOM_ALL, "trainer.epochs=3", "trainer.keep_checkpoints=3")
    whole = train(cfg, user_dir / "whole")
    cut = user_dir / "cut"
    train(cfg, cut)
    checkpoint.list_checkpoints(cut)[0].unlink()  # back to the end of epoch 2
    resumed = train(compose_config(*NO_MODEL, *CUSTOM_ALL, "trainer.epochs=3", "trainer.resume=auto"),
                    cut)  # fmt: skip
    assert resumed["status"] == "completed"
    assert resumed["final_val_loss"] == whole["final_val_loss"]
    _, done = checkpoint.load_latest(user_dir / "whole")
    _, again = checkpoint.load_latest(cut)
    for name, tensor in done["model"].items():
        assert torch.equal(tensor, again["model"][name]), name
    for (k, a), (_, b) in zip(done["optimizer"]["state"].items(),
                              again["optimizer"]["state"].items(), strict=True):  # fmt: skip
        assert all(torch.equal(torch.as_tensor(a[s]), torch.as_tensor(b[s])) for s in a), k


def test_momentum_control_finds_the_buffers_a_class_names(user_dir):
    run = build_run(compose_config(*FAST, "optimizer=custom", "optimizer.target=userpkg.opt.HeavyBall",
                                   "scheduler=cosine", "momentum.schedule=cyclic",
                                   "trainer.epochs=2"))  # fmt: skip
    opt = run.optimizer
    model = run.model
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    group = opt.param_groups[0]
    buffers = momentum_buffers(opt, group)
    assert len(buffers) == len(group["params"]) and any(b.abs().sum() > 0 for b in buffers)
    before, old = [b.clone() for b in buffers], group["momentum"]  # as the cyclic control set it
    set_momentum_coefficient(opt, group, 0.8, rescale_buffers=True)  # a sum: x (1-old)/(1-0.8)
    factor = (1 - old) / (1 - 0.8)
    assert all(torch.allclose(b, a * factor) for a, b in zip(before, buffers, strict=True))
    scale_momentum(opt, 0.0)
    assert all(b.abs().sum() == 0 for b in momentum_buffers(opt, group))


def test_toy_runs_a_users_rmsprop_beside_sgd_and_adam_on_torchs_path(user_dir, capsys):
    run_dir = user_dir / "toy"
    code = main(["toy", "optimizers=[sgd,adam,rmsprop,userpkg.opt.MyRMSprop]", "steps=200",
                 "lr={rmsprop:0.003,userpkg.opt.MyRMSprop:0.003}", f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert code == 0
    with (run_dir / "trajectories.csv").open() as f:
        rows = list(csv.DictReader(f))
    paths = {}
    for row in rows:
        paths.setdefault(row["optimizer"], []).append((float(row["x"]), float(row["y"])))
    assert set(paths) == {"sgd", "adam", "rmsprop", "userpkg.opt.MyRMSprop"}
    assert paths["userpkg.opt.MyRMSprop"] == pytest.approx(paths["rmsprop"], rel=1e-12, abs=1e-12)
    assert paths["userpkg.opt.MyRMSprop"] != pytest.approx(paths["adam"])


@pytest.mark.slow
def test_by_config_dir_a_sweep_lr_find_schedule_and_report(user_dir):
    small = [*NO_MODEL, "trainer.epochs=1", "model=custom", "model.target=userpkg.models.Net"]
    sweep = user_dir / "sweep"
    out = optbench("train", "--config-dir", "my_configs", "-m", *small, "optimizer=yaml_adam,adam",
                   "optimizer.lr=3e-3", "optimizer.weight_decay=0", f"hydra.sweep.dir={sweep}",
                   cwd=user_dir)  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = {
        r["optimizer"]: r
        for r in map(json.loads, map(Path.read_text, sweep.glob("*/results.json")))
    }
    assert set(results) == {"yaml_adam", "adam"}  # the YAML's own name labels the run
    assert results["yaml_adam"]["final_val_loss"] == pytest.approx(
        results["adam"]["final_val_loss"], rel=1e-6
    )
    report = optbench("report", str(sweep), "--out", str(user_dir / "report"), cwd=user_dir)
    assert report.returncode == 0, report.stderr
    text = (user_dir / "report" / "report.md").read_text()
    assert "differ in: optimizer" in text and "| yaml_adam |" in text

    found = optbench("lr-find", "--config-dir", "my_configs", *small, "optimizer=yaml_adam",
                     "lr_find.num_iter=20", f"hydra.run.dir={user_dir / 'lr'}", cwd=user_dir)  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert (user_dir / "lr" / "lr_find.csv").is_file()

    preview = optbench("schedule", *CUSTOM_ALL, *NO_MODEL, "trainer.epochs=2",
                       f"hydra.run.dir={user_dir / 'preview'}", cwd=user_dir)  # fmt: skip
    assert preview.returncode == 0, preview.stderr
    with (user_dir / "preview" / "schedule.csv").open() as f:
        lrs = [float(row[2]) for row in list(csv.reader(f))[1:]]
    steps = len(lrs)
    assert lrs == pytest.approx(
        [1e-3 * 0.5 * (1 + math.cos(math.pi * s / steps)) for s in range(steps)]
    )


@pytest.mark.slow
def test_by_entry_point_it_is_listed_and_train_lookahead_search_and_tune_run_it(tmp_path):
    site = install_user_package(tmp_path / "site")
    env = {"PYTHONPATH": str(site)}
    listed = optbench("optimizers", "--markdown", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("| my_adam |"))
    assert "userpkg.opt.MyAdam" in row and "(from the package userpkg)" in row
    for name, extra in (("ep", ["optimizer=my_adam"]),
                        ("la", ["optimizer=lookahead", "optimizer.base=my_adam"])):  # fmt: skip
        out = optbench("train", *FAST, "trainer.epochs=1", *extra,
                       f"hydra.run.dir={tmp_path / name}", cwd=tmp_path, env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads((tmp_path / name / "results.json").read_text())["status"] == "completed"
    assert "lr: 0.003" in (tmp_path / "ep" / ".hydra" / "config.yaml").read_text()  # its config
    search = optbench("search", "+experiment=lr_wd_search", *FAST, "trainer.epochs=1",
                      "optimizer=my_adam", "search.n_trials=2", "~search.space.optimizer.weight_decay",
                      f"hydra.sweep.dir={tmp_path / 'search'}", cwd=tmp_path, env=env)  # fmt: skip
    assert search.returncode == 0, search.stderr
    trials = json.loads((tmp_path / "search" / "search.json").read_text())["trials"]
    assert len(trials) == 2
    space = "{optimizer: {lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}}}"
    tune = optbench("tune", "+experiment=tuning", *FAST, "trainer.epochs=1", "tuning.trials=1",
                    "tuning.studies=1", "tuning.eval_seeds=[1]", "tuning.optimizers=[my_adam,adam]",
                    f"+tuning.spaces.my_adam={space}", f"hydra.sweep.dir={tmp_path / 'tune'}",
                    cwd=tmp_path, env=env)  # fmt: skip
    assert tune.returncode == 0, tune.stderr
    tuned = json.loads((tmp_path / "tune" / "tuning.json").read_text())["optimizers"]
    assert set(tuned) == {"my_adam", "adam"}


def test_verify_from_the_working_folder_through_the_console_script(user_dir):
    same = optbench("verify", "userpkg.opt.MyAdam", "--against", "adam", "--steps", "5",
                    "weight_decay=0.01", cwd=user_dir)  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr
    differs = optbench("verify", "userpkg.opt.MyAdam", "--against", "adamw", "--steps", "5",
                       "weight_decay=0.1", cwd=user_dir)  # fmt: skip
    assert differs.returncode == 1, differs.stdout + differs.stderr
    assert "L2" in differs.stdout  # Adam's decay is L2 in the gradient, AdamW's is decoupled
