"""AlgoPerf's scores (rules v0.6) against values worked out by hand, time to target at step
resolution, and the scores in `optbench report`."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from test_sensitivity import write_run

from optbench.cli import main
from optbench.errors import UserError
from optbench.report.comparison import compare
from optbench.report.groups import group_runs, shown_keys, swept_keys
from optbench.report.profiles import (
    geometric_mean_speedup,
    method_times,
    performance_profiles,
    profile_scores,
    workload_budgets,
)
from optbench.report.runs import Run
from optbench.report.summary import summarize
from optbench.report.targets import Hit, time_to_target

INF = math.inf
TIMES = {
    "w1": {"a": 10.0, "b": 20.0, "c": INF, "d": 40.0},  # ratios 1, 2, miss, 4
    "w2": {"a": 30.0, "b": 15.0, "c": 45.0},  # 2, 1, 3; d never ran here: a miss
    "w3": {"a": INF, "b": INF, "c": 5.0},  # c alone
    "w4": {"a": INF, "b": INF, "c": INF, "d": INF},  # nobody reached: 0 for all
    "w5": {"a": 7.0, "b": 7.0, "c": 70.0},  # a tie at the top; c 10x slower, past tau_max
}


def test_profile_scores_are_the_exact_area_under_the_profile():
    # (tau_max - r) / (tau_max - 1) / W per reached workload; tau_max 4, W 5.
    a = (1 + 2 / 3 + 1) / 5  # w1 r=1, w2 r=2, w5 r=1 (tie)
    b = (2 / 3 + 1 + 1) / 5  # w1 r=2, w2 r=1, w5 r=1 (tie)
    c = (1 / 3 + 1 + 0) / 5  # w2 r=3, w3 r=1, w5 r=10 > 4
    d = 0.0  # w1 r=4: in the profile at tau = 4 only, an area of 0
    assert profile_scores(TIMES) == pytest.approx({"a": a, "b": b, "c": c, "d": d})
    assert list(profile_scores(TIMES)) == ["a", "b", "c", "d"]
    # tau_max = 2: only ratios up to 2 count, (2 - r) / 1 / 5.
    assert profile_scores(TIMES, tau_max=2.0) == pytest.approx({"a": 2 / 5, "b": 2 / 5, "c": 1 / 5, "d": 0.0})  # fmt: skip


def test_one_workload_has_a_score_too():
    scores = profile_scores({"only": {"fast": 10.0, "slow": 25.0, "miss": INF}})
    assert scores == pytest.approx({"fast": 1.0, "slow": (4 - 2.5) / 3, "miss": 0.0})


def numerical_scores(times: dict, tau_max: float) -> dict[str, float]:
    """The trapezoid rule on a fine grid of the existing performance_profiles."""
    taus = np.linspace(1.0, tau_max, 120_001)
    areas = {
        method: np.sum((np.array(rho[1:]) + np.array(rho[:-1])) / 2 * np.diff(taus))
        for method, rho in performance_profiles(times, taus).items()
    }
    return {method: float(area / (tau_max - 1)) for method, area in areas.items()}


@pytest.mark.parametrize("tau_max", [4.0, 2.5])
def test_the_exact_integral_matches_a_fine_numerical_one(tau_max):
    rng = random.Random(0)
    times = {
        f"w{i}": {m: (INF if rng.random() < 0.2 else rng.uniform(1, 20)) for m in "abcdef"}
        for i in range(7)
    }
    for source in (TIMES, times):
        exact, numeric = profile_scores(source, tau_max), numerical_scores(source, tau_max)
        assert exact == pytest.approx(numeric, abs=1e-4)


def test_the_speedup_is_a_geometric_mean_with_misses_at_the_budget():
    times = {
        "w1": {"base": 10.0, "fast": 5.0, "slow": INF},
        "w2": {"base": INF, "fast": 20.0, "slow": 40.0, "late": 40.0},  # late ran on w2 only
    }
    budgets = {"w1": 100.0, "w2": 80.0}
    speedups = geometric_mean_speedup(times, "base", budgets)
    assert speedups == pytest.approx(
        {
            "base": 1.0,
            "fast": math.sqrt(10 / 5 * 80 / 20),  # the baseline's miss on w2 counts as 80
            "slow": math.sqrt(10 / 100 * 80 / 40),
            "late": math.sqrt(10 / 100 * 80 / 40),  # absent from w1: a miss there
        }
    )
    all_miss = {"w": {"base": INF, "other": INF}}
    assert geometric_mean_speedup(all_miss, "base", {"w": 5.0}) == {"base": 1.0, "other": 1.0}
    # No budget known (infinite): a miss against a hit is no speedup at all, two misses 1.
    unbounded = geometric_mean_speedup({"w1": times["w1"]}, "base", {"w1": INF})
    assert unbounded == {"base": 1.0, "fast": 2.0, "slow": 0.0}
    with pytest.raises(UserError, match="speedup baseline 'lion' is not a method timed here: 'base'"):  # fmt: skip
        geometric_mean_speedup(times, "lion", budgets)


def run_of(name: str, metrics: list[dict], results: dict, seed: int = 0) -> Run:
    """A run read from disk; results in schema 2 unless `results` says otherwise."""
    config = {"dataset.name": "synthetic", "model.name": "mlp", "optimizer.name": name, "trainer.seed": seed}  # fmt: skip
    results = {"status": "completed", "metric": "val_acc", "schema": 2} | results
    results = {k: v for k, v in results.items() if v is not None}
    return Run(Path("s", name, str(seed)), Path("s"), config, True, results, metrics)


def test_time_to_target_walks_epoch_and_mid_epoch_records():
    metrics = [
        {"epoch": 0.5, "step": 5, "examples": 160, "train_time_s": 1.0, "val_acc": 0.5},
        {
            "epoch": 1,
            "step": 10,
            "examples": 320,
            "train_time_s": 2.0,
            "train_loss": 1.0,
        },  # no eval
        {"epoch": 1.5, "step": 15, "examples": 480, "train_time_s": 3.0, "val_acc": 0.85},
        {"epoch": 2, "step": 20, "examples": 640, "train_time_s": 4.0, "val_acc": 0.9},
    ]
    run = run_of("adamw", metrics, {"final_val_acc": 0.9})
    assert time_to_target(run, 0.8) == Hit(1.5, 15, 480, 3.0)
    assert time_to_target(run, 0.9) == Hit(2, 20, 640, 4.0)
    assert time_to_target(run, 0.95) is None
    old_results = {"metric": "test_acc", "final_test_acc": 0.9, "schema": None}
    old = run_of("sgd", [{"epoch": 1, "train_time_s": 2.0, "test_acc": 0.9}], old_results)
    assert old.chosen_on_test and not run.chosen_on_test
    assert time_to_target(old, 0.8) == Hit(1, None, None, 2.0)  # older records: no step, examples


def test_budgets_are_the_longest_planned_training_of_a_workload():
    def run(name: str, seed: int, status: str, steps: int, seconds: float, hit_at: int) -> Run:
        metrics = [{"epoch": 1, "step": hit_at, "train_time_s": seconds * hit_at / steps, "val_acc": 0.9}]  # fmt: skip
        results = {"status": status, "final_val_acc": 0.9, "planned_steps": 100, "steps": steps, "train_time_s": seconds}  # fmt: skip
        return run_of(name, metrics, results, seed)

    runs = [
        run("fast", 0, "completed", 100, 50.0, hit_at=20),  # 0.5 s a step, target at step 20, 10 s
        run("fast", 1, "completed", 100, 60.0, hit_at=40),  # target at step 40, 24 s
        run("slow", 0, "diverged", 10, 8.0, hit_at=5),  # 0.8 s a step: 100 planned -> 80 s
    ]
    swept = swept_keys(runs)
    summaries = [summarize(g, 0.85) for g in group_runs(runs, swept, shown_keys(runs, swept))]
    seconds = method_times(summaries)
    assert seconds == {"synthetic/mlp": {"optimizer=fast": 17.0, "optimizer=slow": INF}}
    assert workload_budgets(summaries, seconds) == {"synthetic/mlp": 80.0}
    steps = method_times(summaries, "steps")
    assert steps == {"synthetic/mlp": {"optimizer=fast": 30.0, "optimizer=slow": INF}}
    assert workload_budgets(summaries, steps, "steps") == {"synthetic/mlp": 100.0}


def one_workload(root: Path, schema: int | None = 2) -> Path:
    """adamw reaches the target at its last evaluation, step 20 (10 s); sgd at its third, step
    15 (7.5 s); lion never. Two seeds each, 20 planned steps at 0.5 s a step."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("{}\n")
    for optimizer, final in (("adamw", 0.9), ("sgd", 1.0), ("lion", 0.5)):
        for seed in (0, 1):
            config = {"optimizer.name": optimizer}
            write_run(root, f"{optimizer},seed={seed}", config, final, seed, schema=schema)
    return root


def test_the_report_scores_one_workload_in_seconds_or_steps(tmp_path, capsys):
    sweep = one_workload(tmp_path / "sweep")
    c = compare([sweep], 0.88, "optimizer=adamw", 0.01)
    assert c.scoring.times == {"synthetic/mlp": {"optimizer=adamw": 10.0, "optimizer=lion": INF, "optimizer=sgd": 7.5}}  # fmt: skip
    assert c.scoring.scores == pytest.approx({"optimizer=adamw": (4 - 10 / 7.5) / 3, "optimizer=lion": 0.0, "optimizer=sgd": 1.0})  # fmt: skip
    assert c.scoring.speedups == pytest.approx({"optimizer=adamw": 1.0, "optimizer=lion": 1.0, "optimizer=sgd": 10 / 7.5})  # fmt: skip
    assert not c.profiled  # one workload: scores, no profile plot

    out = tmp_path / "report"
    args = ["report", str(sweep), "--target", "0.88", "--baseline", "optimizer=adamw"]
    assert main([*args, "--time", "steps", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scores: time to target in steps" in printed and "predate" not in printed
    with open(out / "scores.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["optimizer=sgd"]["time:synthetic/mlp"]) == 15.0
    assert float(rows["optimizer=sgd"]["geomean_speedup"]) == pytest.approx(20 / 15)
    assert rows["optimizer=lion"]["time:synthetic/mlp"] == "inf"
    assert float(rows["budget"]["time:synthetic/mlp"]) == 20.0
    assert rows["optimizer=adamw"]["time_unit"] == "steps"
    markdown = (out / "report.md").read_text()
    assert "## Scores: time to target across methods" in markdown
    assert "| optimizer=sgd | 1.000 | 1.33x | 1/1 | 15 |" in markdown
    with open(out / "runs.csv", newline="") as f:
        runs = {r["method"]: r for r in csv.DictReader(f)}
    assert (runs["optimizer=sgd"]["steps_to_target"], runs["optimizer=sgd"]["examples_to_target"]) == ("15", "480")  # fmt: skip


def test_older_results_load_with_one_note(tmp_path, capsys):
    sweep = one_workload(tmp_path / "sweep", schema=None)
    assert main(["report", str(sweep), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    note = "note: 6 runs predate the validation split: their best/targets were chosen on test (results.json schema 1)"  # fmt: skip
    assert printed.count(note) == 1 and "target test acc" in printed
    assert note in (tmp_path / "report" / "report.md").read_text()
    results = json.loads(next(sweep.glob("*/results.json")).read_text())
    assert "schema" not in results and results["metric"] == "test_acc"


def test_a_report_over_older_and_newer_results_notes_the_older_once(tmp_path, capsys):
    old = one_workload(tmp_path / "old", schema=None)
    new = tmp_path / "new"
    new.mkdir()
    (new / "multirun.yaml").write_text("{}\n")
    for seed in (0, 1):
        write_run(new, f"muon,seed={seed}", {"optimizer.name": "muon"}, 0.95, seed)
    assert main(["report", str(old), str(new), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("note: 6 runs predate the validation split") == 1
    assert "target test acc / val acc" in printed  # each workload's target on its own metric
