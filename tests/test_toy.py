"""`optbench toy`: the test functions, the optimizer runs, the files and the command line."""

from __future__ import annotations

import csv
import math
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import compose_config
from PIL import Image

from optbench.commands.toy import check_toy_config, run_toy
from optbench.errors import UserError
from optbench.optim import OPTIMIZERS
from optbench.toy.functions import FUNCTIONS
from optbench.toy.trajectories import (
    UNSUPPORTED,
    ToyRun,
    default_lr,
    grid_rank,
    run_trajectory,
)

SUPPORTED = [name for name in OPTIMIZERS if name not in UNSUPPORTED]


def toy_config(*overrides: str):
    return compose_config(*overrides, config_name="toy")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_known_minimum_is_stationary_and_lowest_on_the_domain(name):
    function = FUNCTIONS[name]
    for minimum in function.minima:
        point = torch.tensor(minimum, dtype=torch.float64, requires_grad=True)
        value = function(point)
        (grad,) = torch.autograd.grad(value, point)
        assert float(grad.norm()) < 1e-6, (minimum, grad)
        assert abs(value.item()) < 1e-12  # shifted so that the minimum is 0
    (x0, x1), (y0, y1) = function.domain
    xx, yy = torch.meshgrid(
        torch.linspace(x0, x1, 301, dtype=torch.float64),
        torch.linspace(y0, y1, 301, dtype=torch.float64),
        indexing="xy",
    )
    assert float(function(torch.stack([xx, yy], dim=-1)).min()) >= -1e-12
    assert x0 < function.start[0] < x1 and y0 < function.start[1] < y1


def test_distance_is_to_the_nearest_of_several_minima():
    himmelblau = FUNCTIONS["himmelblau"]
    assert himmelblau.distance_to_minimum(
        torch.tensor([3.0, 2.5], dtype=torch.float64)
    ) == pytest.approx(0.5)


def test_adam_reaches_the_threshold_on_the_ravine_within_the_default_steps():
    cfg = toy_config("function=ravine")
    ravine = FUNCTIONS["ravine"]
    run = ToyRun(ravine, cfg.steps, ravine.start)
    trajectory = run_trajectory(run, "adam", ravine.lrs["adam"], "function")
    steps = trajectory.steps_to(cfg.threshold)
    assert trajectory.diverged_at is None
    assert steps is not None and steps <= cfg.steps
    assert float(trajectory.losses[steps]) < cfg.threshold <= float(trajectory.losses[steps - 1])


def test_sgd_with_too_large_an_lr_is_reported_as_diverged(tmp_path):
    cfg = toy_config(
        "function=ravine",
        "optimizers=[sgd,adam]",
        "lr={sgd:1.0}",
        "steps=100",
        "plot.loss_panel=false",
    )
    summary = run_toy(cfg, tmp_path)
    sgd = summary["sgd"]
    assert sgd["status"] == "diverged" and 1 <= sgd["diverged_at_step"] <= 100
    assert sgd["final_loss"] is None and sgd["lr"] == 1.0 and sgd["lr_source"] == "config"
    assert summary["adam"]["status"] == "ok"
    (row,) = [r for r in read_csv(tmp_path / "summary.csv") if r["optimizer"] == "sgd"]
    assert row["status"] == "diverged" and int(row["diverged_at_step"]) == sgd["diverged_at_step"]
    # Every recorded point is finite and within the bound: the run stopped where it diverged.
    sgd_rows = [r for r in read_csv(tmp_path / "trajectories.csv") if r["optimizer"] == "sgd"]
    assert len(sgd_rows) == sgd["diverged_at_step"]
    assert all(math.isfinite(float(r["x"])) and abs(float(r["y"])) <= cfg.bound for r in sgd_rows)


def test_the_csv_matches_the_saved_trajectories_and_the_png_is_written(tmp_path):
    cfg = toy_config(
        "function=ravine", "optimizers=[sgd,adam,radam,lion]", "steps=200", "+lr.sgd=1.0",
        "plot.gif=true", "plot.gif_frames=4",
    )  # fmt: skip
    run_toy(cfg, tmp_path)
    png = Image.open(tmp_path / "trajectories.png")
    assert png.format == "PNG" and png.width > 1000
    gif = Image.open(tmp_path / "trajectories.gif")
    assert gif.format == "GIF" and gif.n_frames >= 2
    rows = read_csv(tmp_path / "trajectories.csv")
    summary = {r["optimizer"]: r for r in read_csv(tmp_path / "summary.csv")}
    assert list(summary) == ["sgd", "adam", "radam", "lion"]
    outcomes = set()
    for name, row in summary.items():
        losses = [float(r["loss"]) for r in rows if r["optimizer"] == name]
        steps = [int(r["step"]) for r in rows if r["optimizer"] == name]
        assert steps == list(range(len(losses)))
        first_below = next(
            (step for step, loss in zip(steps, losses, strict=True) if loss < cfg.threshold), None
        )
        assert row["steps_to_threshold"] == ("never" if first_below is None else str(first_below))
        if row["status"] == "ok":
            assert len(losses) == cfg.steps + 1
            assert float(row["final_loss"]) == pytest.approx(losses[-1], rel=1e-12, abs=1e-300)
        outcomes.add("never" if row["status"] == "ok" and first_below is None else row["status"])
    assert outcomes == {"ok", "never", "diverged"}  # every kind of row was checked


def test_the_lr_grid_picks_a_grid_lr_at_least_as_good_as_the_default(tmp_path):
    cfg = toy_config(
        "function=ravine", "optimizers=[sgd,adagrad]", "steps=150", "lr_grid.enabled=true"
    )
    summary = run_toy(cfg, tmp_path)
    ravine = FUNCTIONS["ravine"]
    run = ToyRun(ravine, cfg.steps, ravine.start)
    for name, result in summary.items():
        default = ravine.lrs[name]
        assert result["lr_source"] == "grid"
        assert any(math.isclose(result["lr"], default * f) for f in cfg.lr_grid.factors)
        picked = run_trajectory(run, name, result["lr"], "grid")
        at_default = run_trajectory(run, name, default, "function")
        assert grid_rank(picked, cfg.threshold) <= grid_rank(at_default, cfg.threshold)
    # Adagrad's default LR is safe but slow here: the grid finds a faster one.
    adagrad = run_trajectory(run, "adagrad", ravine.lrs["adagrad"], "function")
    assert summary["adagrad"]["steps_to_threshold"] < adagrad.steps_to(cfg.threshold)
    assert {r["lr_source"] for r in read_csv(tmp_path / "summary.csv")} == {"grid"}


@pytest.mark.parametrize("name", SUPPORTED)
def test_every_supported_optimizer_runs_on_a_2d_point(name):
    # Self-tuning optimizers grow their step until it overshoots (D-Adaptation's does on the bowl
    # within 20 steps, from loss 0.96 to 2.3): they descend the convex ravine instead.
    function = FUNCTIONS["ravine" if OPTIMIZERS[name].self_tuning else "bowl"]
    lr, source = default_lr(function, name)  # the function's LR, else the documented one
    trajectory = run_trajectory(ToyRun(function, 20, function.start), name, lr, source)
    assert trajectory.diverged_at is None and len(trajectory.points) == 21
    assert float(trajectory.losses[-1]) < float(trajectory.losses[0])


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_optimizers_without_meaning_on_a_2d_point_are_refused_up_front(name):
    with pytest.raises(UserError, match=f"optimizer {name} cannot run on a 2-D test function: "):
        check_toy_config(toy_config(f"optimizers=[adam,{name}]"))


def test_impl_reference_without_an_implementation_is_refused_up_front():
    name = next(n for n in SUPPORTED if OPTIMIZERS[n].reference is None)
    with pytest.raises(UserError, match=f"optimizer={name} has no reference implementation"):
        check_toy_config(toy_config(f"optimizers=[{name}]", "impl=reference"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["function=nope"], "unknown function 'nope'; choose from rosenbrock, beale, himmelblau"),
        (["optimizers=[adam,nope]"], "unknown optimizer 'nope'"),
        (["optimizers=[]"], "optimizers must be a list of optimizer names"),
        (["optimizers=[adam,adam]"], "optimizers lists an optimizer twice"),
        (["steps=0"], "steps must be an integer >= 1, got 0"),
        (["threshold=0"], "threshold must be a positive number, got 0"),
        (["bound=-1"], "bound must be a positive number"),
        (["start=[1]"], "start must be [x, y]"),
        (["impl=fast"], "impl must be one of library, reference"),
        (["optimizers=[adam]", "lr={adam:-1}"], "lr.adam must be a positive number, got -1"),
        (["optimizers=[adam]", "lr={sgd:0.1}"], "lr.sgd is set, but sgd is not in optimizers"),
        (["lr_grid.factors=[1,0]"], "every lr_grid.factors entry must be a positive number"),
        (["plot.gif_frames=1"], "plot.gif_frames must be an integer >= 2"),
    ],
)
def test_bad_values_are_one_line_user_errors(overrides, message):
    with pytest.raises(UserError) as err:
        check_toy_config(toy_config(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def optbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["optbench", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_command_writes_its_run_directory(tmp_path):
    out = optbench(
        "toy", "function=himmelblau", "optimizers=[sgd,adam]", "steps=60", f"paths.output_dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "out" / "toy").glob("*/*")
    assert {"summary.csv", "trajectories.csv", "trajectories.png"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert [r["optimizer"] for r in read_csv(run_dir / "summary.csv")] == ["sgd", "adam"]
    assert "himmelblau" in out.stdout and "adam" in out.stdout


def test_an_unknown_function_exits_2_with_one_line_and_writes_nothing(tmp_path):
    out = optbench("toy", "function=nope", f"paths.output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "optbench toy: error: unknown function 'nope'; choose from rosenbrock, beale, himmelblau, ravine, saddle, bowl"
    ]
    assert not (tmp_path / "out").exists() and not (tmp_path / "outputs").exists()
