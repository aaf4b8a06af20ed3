"""Hyperparameter sensitivity in `optbench report`, on hand-made sweeps in results.json schema 2
(a validation split: the main metric is val_acc) whose answers are known by construction."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from optbench.cli import main
from optbench.report.comparison import compare
from optbench.report.headline import Headline
from optbench.report.sensitivity import Point, good_region

# log10(lr) -> validation accuracy of adamw at the end of training: nothing learned at 1e-4 (10
# classes: chance), a peak of 0.90 at 1e-2, diverged at 10. Within 5% of the peak (>= 0.855):
# 10^-2.5 (0.87) to 10^-1 (0.86); 1e-3 (0.80) and 10^-0.5 (0.70) are out. 1.5 decades.
ADAMW = {-4: 0.10, -3.5: 0.50, -3: 0.80, -2.5: 0.87, -2: 0.90, -1.5: 0.88, -1: 0.86,
         -0.5: 0.70, 0: 0.50, 0.5: 0.30, 1: None}  # fmt: skip
# sgd on the same grid: best at 10^-0.5 (0.88), a region of 10^-1 alone (0.84 >= 0.836) ... to
# 10^0 (0.85); diverged from 10^0.5 up.
SGD = {-4: 0.10, -3.5: 0.10, -3: 0.20, -2.5: 0.40, -2: 0.60, -1.5: 0.75, -1: 0.84,
       -0.5: 0.88, 0: 0.85, 0.5: None, 1: None}  # fmt: skip
SEEDS = {0: +0.005, 1: -0.005}  # a spread, and the mean exactly the table's value


def write_run(
    root: Path,
    name: str,
    config: dict,
    final: float | None,
    seed: int,
    schema: int | None = 2,
    steps_per_epoch: int = 10,
) -> Path:
    """A finished run in `root/name`: its config, metrics.jsonl (two epochs, a mid-epoch
    evaluation in each, validation accuracy rising to `final`) and results.json; `final` None:
    diverged in epoch 2, before its second evaluation."""
    run = root / name
    run.mkdir(parents=True)
    cfg = {"dataset": {"name": "synthetic"}, "model": {"name": "mlp"}, "trainer": {"seed": seed}}
    for key, value in config.items():
        section, field = key.split(".")
        cfg.setdefault(section, {})[field] = value
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    metric = "val_acc" if schema else "test_acc"
    curve = [0.1, 0.1, 0.1, 0.1] if final is None else [final / 4, final / 2, 0.9 * final, final]
    records = []
    for i, value in enumerate(curve[: 2 if final is None else 4]):
        step = (i + 1) * steps_per_epoch // 2
        record = {
            "epoch": (i + 1) / 2,
            "step": step,
            "examples": 32 * step,
            "train_time_s": 0.5 * step,
            metric: value,
            metric.replace("_acc", "_loss"): 2.0 - value,
        }
        if schema:
            record |= {"test_acc": value - 0.01, "test_loss": 2.01 - value}
        if i % 2:  # an epoch's record: the epoch as an integer, and its training means
            record |= {"epoch": (i + 1) // 2, "train_loss": 1.9 - value, "train_acc": value}
        records.append(record)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    done = len(records) * steps_per_epoch // 2
    results = {
        "status": "diverged" if final is None else "completed",
        "metric": metric,
        "higher_is_better": True,
        "seed": seed,
        "planned_steps": 2 * steps_per_epoch,
        "steps": done + (3 if final is None else 0),
        "train_time_s": 0.5 * done,
        "epochs": 2,
        "planned_epochs": 2,
        f"final_{metric}": records[-1][metric],
        f"best_{metric}": max(r[metric] for r in records),
        "diagnosis": {"step": done + 3, "epoch": 1} if final is None else None,
    }
    if schema:
        results |= {
            "schema": schema,
            "target_metric": metric,
            "data_split": {"train": 900, "val": 100, "test": 200},
            "best_step": done,
            "test_at_best": {"test_acc": records[-1]["test_acc"]},
        }
    (run / "results.json").write_text(json.dumps(results))
    return run


def lr_sweep(root: Path, optimizers: dict[str, dict[float, float | None]]) -> Path:
    (root / "multirun.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text("{}\n")
    i = 0
    for optimizer, accs in optimizers.items():
        for exponent, acc in accs.items():
            for seed, noise in SEEDS.items():
                config = {"optimizer.name": optimizer, "optimizer.lr": 10.0**exponent}
                final = None if acc is None else acc + noise
                write_run(root, f"{i}_{optimizer}_lr=1e{exponent}_seed={seed}", config, final, seed)
                i += 1
    return root


def test_the_best_lr_and_its_good_region_come_out_as_constructed(tmp_path):
    c = compare([lr_sweep(tmp_path / "sweep", {"adamw": ADAMW, "sgd": SGD})], None, None, 0.01)
    (s,) = c.sensitivities
    assert (s.key, s.log, s.others, s.headline.metric) == ("optimizer.lr", True, [], "val_acc")
    curves = {curve.label: curve for curve in s.curves}
    adamw, sgd = curves["optimizer=adamw"], curves["optimizer=sgd"]

    assert adamw.best.value == pytest.approx(1e-2) and adamw.best.mean == pytest.approx(0.90)
    low, high = adamw.region
    assert (low, high) == (pytest.approx(10**-2.5), pytest.approx(0.1))
    assert adamw.width == pytest.approx(1.5)
    assert adamw.best.interval[0] < 0.90 < adamw.best.interval[1]  # two seeds: a t-interval
    (diverged,) = [p for p in adamw.points if p.diverged]
    assert (diverged.value, diverged.diverged, diverged.mean) == (pytest.approx(10.0), 2, None)
    assert adamw.points[0].mean == pytest.approx(0.10)  # learned nothing: a point, just low

    assert sgd.best.value == pytest.approx(10**-0.5) and sgd.best.mean == pytest.approx(0.88)
    assert sgd.region == (pytest.approx(0.1), pytest.approx(1.0)) and sgd.width == pytest.approx(1)
    assert [p.value for p in sgd.points if p.diverged] == [
        pytest.approx(10**0.5),
        pytest.approx(10),
    ]


def test_a_looser_tolerance_widens_the_region(tmp_path):
    sweep = lr_sweep(tmp_path / "sweep", {"adamw": ADAMW})
    (s,) = compare([sweep], None, None, 0.01, tolerance=0.12).sensitivities
    (curve,) = s.curves  # >= 0.792: 1e-3 (0.80) joins, 10^-0.5 (0.70) does not
    assert curve.region == (
        pytest.approx(1e-3),
        pytest.approx(0.1),
    ) and curve.width == pytest.approx(2)


def test_a_value_where_every_seed_diverged_ends_the_region():
    loss = Headline("val_loss", higher_is_better=False)
    points = [
        Point(1.0, (1.00,), 0, 1, ""),
        Point(2.0, (), 1, 1, ""),  # diverged: no mean, so not inside, however good its neighbours
        Point(3.0, (0.95,), 0, 1, ""),
        Point(4.0, (0.99,), 0, 1, ""),  # <= 0.95 / 0.95 = 1.0: inside
        Point(5.0, (1.01,), 0, 1, ""),
    ]
    best, low, high = good_region(points, loss, 0.05)
    assert (best.value, low, high) == (3.0, 3.0, 4.0)


def test_a_second_numeric_key_is_optimised_out_at_each_value(tmp_path):
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text("{}\n")
    # Weight decay 0 is best at small LRs, 0.01 at large ones (0.05 never): at each LR the
    # curve takes the better one. 0 in the grid: a linear axis for the weight decay.
    table = {1e-3: {0.0: 0.80, 0.01: 0.70, 0.05: 0.60}, 1e-2: {0.0: 0.86, 0.01: 0.90, 0.05: 0.5},
             1e-1: {0.0: 0.60, 0.01: 0.75, 0.05: 0.4}}  # fmt: skip
    for lr, by_wd in table.items():
        for wd, acc in by_wd.items():
            for seed in (0, 1):
                config = {
                    "optimizer.name": "adamw",
                    "optimizer.lr": lr,
                    "optimizer.weight_decay": wd,
                }
                write_run(root, f"lr={lr},wd={wd},seed={seed}", config, acc, seed)
    by_key = {s.key: s for s in compare([root], None, None, 0.01).sensitivities}
    lr, wd = by_key["optimizer.lr"], by_key["optimizer.weight_decay"]
    assert (lr.log, lr.others, wd.log, wd.others) == (True, ["optimizer.weight_decay"], False, ["optimizer.lr"])  # fmt: skip
    (curve,) = lr.curves
    assert curve.label == "all runs"
    assert [p.mean for p in curve.points] == [pytest.approx(v) for v in (0.80, 0.90, 0.75)]
    assert [p.at for p in curve.points] == ["optimizer.weight_decay=0", "optimizer.weight_decay=0.01", "optimizer.weight_decay=0.01"]  # fmt: skip
    (curve,) = wd.curves
    assert curve.best.value == 0.01 and curve.region == (0.0, 0.01) and curve.width == 0.01


def test_the_report_plots_marks_and_tables_the_sensitivity(tmp_path, capsys):
    sweep = lr_sweep(tmp_path / "sweep", {"adamw": ADAMW, "sgd": SGD})
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sensitivity to optimizer.lr" in printed and "predate" not in printed

    png = out / "sensitivity_optimizer.lr.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 20_000
    with open(out / "sensitivity.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 11
    adamw = [r for r in rows if r["curve"] == "optimizer=adamw"]
    (best,) = [r for r in adamw if r["best"] == "True"]
    assert float(best["value"]) == pytest.approx(0.01) and float(best["region_width"]) == pytest.approx(1.5)  # fmt: skip
    (diverged,) = [r for r in adamw if r["diverged"] != "0"]
    assert float(diverged["value"]) == pytest.approx(10) and diverged["mean"] == ""
    assert sum(r["in_good_region"] == "True" for r in adamw) == 4
    markdown = (out / "report.md").read_text()
    assert (
        "## Hyperparameter sensitivity" in markdown
        and "](sensitivity_optimizer.lr.png)" in markdown
    )
    line = next(
        line for line in markdown.splitlines() if line.startswith("| optimizer=adamw | 0.01")
    )
    assert "| 90.00 [" in line and "| 0.00316228 to 0.1 | 1.50 | 10 (2/2 seeds) |" in line


def test_a_sweep_without_a_numeric_key_has_no_sensitivity(tmp_path):
    root = lr_sweep(tmp_path / "sweep", {"adamw": {-3: 0.8, -2: 0.9}, "sgd": {-3: 0.5, -2: 0.7}})
    c = compare([root], None, None, 0.01)
    assert c.sensitivities == []  # two LRs make a comparison, not a curve


def test_the_plot_marks_diverged_values_at_the_foot_and_the_best_with_a_star(tmp_path, monkeypatch):
    from optbench.report import plots

    figures = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig))
    (s,) = compare([lr_sweep(tmp_path / "sweep", {"adamw": ADAMW})], None, None, 0.01).sensitivities
    plots.plot_sensitivity(s, tmp_path / "unused.png")
    ((ax,),) = [f.axes for f in figures]
    crosses = [line for line in ax.lines if line.get_marker() == "x" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in crosses] == [[pytest.approx(10.0)]]
    assert all(line.get_color() == "red" for line in crosses)
    stars = [line for line in ax.lines if line.get_marker() == "*" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in stars] == [[pytest.approx(0.01)]]
    assert ax.get_xscale() == "log"
    legend = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert legend == ["all runs", "best mean", "diverged (one or more seeds)"]  # one optimizer
