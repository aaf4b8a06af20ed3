"""`optbench report` on a real 2 x 2 sweep with 2 seeds, and its rules on hand-made runs."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from scipy import stats

from optbench.cli import main
from optbench.errors import UserError
from optbench.report.baselines import baseline_method, compare_to_baseline
from optbench.report.comparison import compare
from optbench.report.groups import Group, group_runs, shown_keys, swept_keys
from optbench.report.profiles import method_times, performance_profiles
from optbench.report.runs import Run, load_runs
from optbench.report.summary import summarize
from optbench.report.tables import interval_cell

FAST = ["dataset=synthetic", "dataset.train_size=512", "dataset.test_size=256", "model=mlp",
        "model.hidden=[64]", "trainer.epochs=3", "trainer.device=cpu", "trainer.progress=false"]  # fmt: skip
FIGURES = ["val_acc.png", "train_loss.png", "lr.png", "final.png"]


def optbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["optbench", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """optimizer {sgd, adamw} x scheduler {cosine, constant} x seed {0, 1}: 8 real runs."""
    root = tmp_path_factory.mktemp("outputs")
    out = optbench(
        "train", "-m", *FAST, "optimizer=sgd,adamw", "scheduler=cosine,constant",
        "trainer.seed=0,1", f"paths.output_dir={root}", cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (sweep_dir,) = (root / "multirun").glob("*/*")
    return sweep_dir


def copy_of(sweep: Path, dest: Path) -> Path:
    return Path(shutil.copytree(sweep, dest, ignore=shutil.ignore_patterns("report")))


def run_dir(sweep: Path, optimizer: str, scheduler: str, seed: int) -> Path:
    (found,) = sweep.glob(f"*optimizer={optimizer},scheduler={scheduler},*trainer.seed={seed}")
    return found


def test_a_sweep_report_has_one_row_per_setting_with_the_seed_means(sweep):
    out = optbench("report", str(sweep), cwd=sweep)
    assert out.returncode == 0, out.stderr
    assert "8 runs, 4 groups" in out.stdout
    assert "performance profiles: skipped" in out.stdout and "tensorboard --logdir" in out.stdout

    report = sweep / "report"
    rows = read_csv(report / "report.csv")
    assert len(rows) == 4
    assert {(r["optimizer.name"], r["scheduler.name"]) for r in rows} == {
        (o, s) for o in ("sgd", "adamw") for s in ("cosine", "constant")
    }
    assert "trainer.seed" not in rows[0] and not any(k.startswith("paths.") for k in rows[0])
    for row in rows:
        runs = [results_of(p) for p in sweep.glob("*/") if (p / "results.json").is_file()]
        mine = [r for r in runs if (r["optimizer"], r["scheduler"]) == (row["optimizer.name"], row["scheduler.name"])]  # fmt: skip
        assert sorted(r["seed"] for r in mine) == [0, 1] and row["completed"] == "2"
        for key in ("final_val_acc", "best_val_acc", "wall_time_s", "images_per_s"):
            values = [r[key] for r in mine]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values))
        assert int(row["reached_target"]) <= int(row["target_attempts"]) == 2

    assert len(read_csv(report / "runs.csv")) == 8
    markdown = (report / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| optimizer"))
    assert header.startswith("| optimizer | scheduler | runs ok | seeds | final val acc %")
    assert sum(line.startswith(("| adamw", "| sgd")) for line in markdown.splitlines()) == 4
    for figure in FIGURES:
        assert (report / figure).read_bytes().startswith(b"\x89PNG")
        assert f"]({figure})" in markdown
    assert not (report / "profile.png").exists()


def test_failed_and_diverged_runs_are_listed_not_averaged(sweep, tmp_path):
    copy = copy_of(sweep, tmp_path / "sweep")
    (run_dir(copy, "sgd", "cosine", 0) / "results.json").unlink()  # crashed mid-run
    crashed = copy / "9_crashed_at_start"  # crashed before the trainer wrote anything
    shutil.copytree(run_dir(copy, "sgd", "cosine", 1) / ".hydra", crashed / ".hydra")
    diverged = run_dir(copy, "adamw", "constant", 1) / "results.json"
    results = json.loads(diverged.read_text())
    results |= {"status": "diverged", "diagnosis": {"step": 5, "epoch": 1}}
    diverged.write_text(json.dumps(results))

    out = optbench("report", str(copy), "--target", "0.01", "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "failed/unfinished" in out.stdout and str(crashed) in out.stdout
    assert "diverged at step 5 (epoch 2)" in out.stdout

    rows = {(r["optimizer.name"], r["scheduler.name"]): r for r in read_csv(tmp_path / "out" / "report.csv")}  # fmt: skip
    sgd_cosine = rows["sgd", "cosine"]
    only = results_of(run_dir(copy, "sgd", "cosine", 1))
    assert (sgd_cosine["runs"], sgd_cosine["completed"], sgd_cosine["failed_unfinished"]) == ("3", "1", "2")  # fmt: skip
    assert float(sgd_cosine["final_val_acc_mean"]) == only["final_val_acc"]
    assert sgd_cosine["final_val_acc_std"] == ""  # one seed: no spread to report
    assert sgd_cosine["target_attempts"] == "1"  # failed runs neither reach nor miss
    assert sgd_cosine["final_val_acc_ci95_low"] == sgd_cosine["final_val_acc_p"] == ""
    adamw = rows["adamw", "constant"]
    kept = results_of(run_dir(copy, "adamw", "constant", 0))
    assert float(adamw["final_val_acc_mean"]) == kept["final_val_acc"]
    assert (adamw["diverged"], adamw["reached_target"], adamw["target_attempts"]) == ("1", "1", "2")

    statuses = [r["status"] for r in read_csv(tmp_path / "out" / "runs.csv")]
    assert sorted(statuses) == ["completed"] * 6 + ["diverged"] + ["failed/unfinished"] * 2
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Runs not in the means" in markdown and f"`{crashed}`" in markdown


def test_two_workloads_get_a_performance_profile(sweep, tmp_path):
    other = copy_of(sweep, tmp_path / "wide")
    for config in other.glob("*/config.yaml"):
        cfg = yaml.safe_load(config.read_text())
        cfg["model"]["name"] = "mlp_copy"
        config.write_text(yaml.safe_dump(cfg))
    out = optbench("report", str(sweep), str(other), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "16 runs, 8 groups" in out.stdout
    assert (tmp_path / "out" / "profile.png").read_bytes().startswith(b"\x89PNG")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "](profile.png)" in markdown
    assert "| synthetic/mlp (seconds) | synthetic/mlp_copy (seconds) |" in markdown
    scores = {r["method"]: r for r in read_csv(tmp_path / "out" / "scores.csv")}
    assert set(scores) == {"budget"} | {f"optimizer={o}, scheduler={s}" for o in ("sgd", "adamw") for s in ("cosine", "constant")}  # fmt: skip
    assert all(0 <= float(r["profile_score"]) <= 1 for m, r in scores.items() if m != "budget")


def test_performance_profiles_count_workloads_within_tau_of_the_best():
    times = {
        "w1": {"a": 10.0, "b": 20.0, "c": math.inf, "d": 40.0},
        "w2": {"a": 30.0, "b": 15.0, "c": 45.0},  # d never ran here: a miss
        "w3": {"a": math.inf, "b": math.inf, "c": 5.0},
        "w4": {"a": math.inf, "b": math.inf, "c": math.inf},  # nobody reached: counts for none
    }
    taus = [1.0, 1.99, 2.0, 3.0, 3.99, 4.0]
    profiles = performance_profiles(times, taus)
    assert list(profiles) == ["a", "b", "c", "d"]
    assert profiles["a"] == [0.25, 0.25, 0.5, 0.5, 0.5, 0.5]
    assert profiles["b"] == [0.25, 0.25, 0.5, 0.5, 0.5, 0.5]
    assert profiles["c"] == [0.25, 0.25, 0.25, 0.5, 0.5, 0.5]
    assert profiles["d"] == [0.0, 0.0, 0.0, 0.0, 0.0, 0.25]


def fake_run(
    name: str,
    seed: int,
    accs: list[float] | None,
    status: str = "completed",
    sweep: str = "s",
    **config,
) -> Run:
    """A run of method `name` whose test accuracy was `accs[i]` after epoch i + 1 (1 s each),
    in results.json schema 1 (before the validation split: no `metric`, ranked by test_acc)."""
    metrics = [
        {"epoch": i + 1, "test_acc": acc, "train_time_s": float(i + 1)}
        for i, acc in enumerate(accs or [])
    ]
    flat = {"dataset.name": "synthetic", "model.name": "mlp", "optimizer.name": name}
    flat |= {"trainer.seed": seed, "paths.output_dir": f"out{seed}"} | config
    results = None if accs is None else {"status": status, "final_test_acc": accs[-1]}
    return Run(Path(sweep, name, str(seed)), Path(sweep), flat, True, results, metrics)


def test_time_to_target_is_the_median_over_seeds_with_misses_as_infinite():
    runs = [
        fake_run("fast", 0, [0.5, 0.9]),
        fake_run("fast", 1, [0.9]),
        fake_run("fast", 2, [0.5, 0.6]),  # one miss of three: the median still reaches
        fake_run("fast", 3, None),  # crashed: not an attempt
        fake_run("half", 0, [0.5, 0.5, 0.9]),
        fake_run("half", 1, [0.9], status="diverged"),  # diverged: a miss
    ]
    swept = swept_keys(runs)
    groups = group_runs(runs, swept, shown_keys(runs, swept))
    summaries = [summarize(g, 0.8) for g in groups]
    assert method_times(summaries) == {"synthetic/mlp": {"optimizer=fast": 2.0, "optimizer=half": math.inf}}  # fmt: skip
    fast, half = summaries
    assert (fast.reached, fast.attempts, half.reached, half.attempts) == (2, 3, 1, 2)
    assert fast.stats["final_test_acc"].n == 3 and fast.stats["time_to_target_s"].mean == 1.5
    assert half.stats["final_test_acc"].mean == 0.9  # the diverged seed is not averaged in


def scipy_interval(values: list[float]) -> tuple[float, float]:
    return stats.t.interval(0.95, len(values) - 1, statistics.fmean(values), stats.sem(values))


def test_groups_are_tested_against_the_baseline_and_a_seed_or_a_miss_short_has_no_interval():
    base = [[0.5, 0.82], [0.84], [0.5, 0.6, 0.86]]  # final 0.82, 0.84, 0.86; target at 2, 1, 3 s
    fast = [[0.9], [0.92], [0.5, 0.94]]  # final 0.90, 0.92, 0.94; target at 1, 1, 2 s
    runs = [fake_run(name, seed, accs) for name, seeds in (("base", base), ("fast", fast)) for seed, accs in enumerate(seeds)]  # fmt: skip
    runs += [fake_run("one", 0, [0.95]), fake_run("miss", 0, [0.9]), fake_run("miss", 1, [0.5])]
    swept = swept_keys(runs)
    summaries = {g.method: summarize(g, 0.8) for g in group_runs(runs, swept, shown_keys(runs, swept))}  # fmt: skip
    assert (
        next(iter(summaries)) == "optimizer=base" == baseline_method(list(summaries.values()), None)
    )

    low, high = scipy_interval([82.0, 84.0, 86.0])
    assert (
        interval_cell(summaries["optimizer=base"], "final_test_acc") == f"[{low:.2f}, {high:.2f}]"
    )
    assert interval_cell(summaries["optimizer=one"], "final_test_acc") == "1 seed"
    assert interval_cell(summaries["optimizer=miss"], "final_test_acc") != "1 missed"
    assert interval_cell(summaries["optimizer=miss"], "time_to_target_s") == "1 missed"

    against = compare_to_baseline(list(summaries.values()), None, alpha=0.05)
    found = {(c.group.group.method, c.metric): c for c in against.contrasts}
    assert len(found) == 3 * 3 and against.unmatched == []
    final = found["optimizer=fast", "final_test_acc"]
    assert final.difference == pytest.approx(0.08)
    assert final.test.p == pytest.approx(stats.ttest_ind([0.9, 0.92, 0.94], [0.82, 0.84, 0.86], equal_var=False).pvalue)  # fmt: skip
    # d = 4 (0.08 over a spread of 0.02): simulated Welch tests at α = 0.05 reject 30% of the
    # time with 2 seeds a side and 88% with 3.
    assert against.significant(final) and final.seeds_needed == 3
    time = found["optimizer=fast", "time_to_target_s"]
    assert time.test.p == pytest.approx(stats.ttest_ind([1, 1, 2], [2, 1, 3], equal_var=False).pvalue)  # fmt: skip
    assert not against.significant(time) and time.seeds_needed > 3
    one = found["optimizer=one", "final_test_acc"]
    assert (one.difference, one.test, one.note) == (pytest.approx(0.11), None, "fewer than 2 seeds")
    missed = found["optimizer=miss", "time_to_target_s"]
    assert (missed.difference, missed.note) == (None, "target misses in this group")
    assert found["optimizer=fast", "best_test_acc"].note == "no values"  # not in these results

    assert baseline_method(list(summaries.values()), "optimizer = fast") == "optimizer=fast"
    with pytest.raises(UserError, match="no group 'lion'; the groups are: 'optimizer=base'; 'optimizer=fast'"):  # fmt: skip
        baseline_method(list(summaries.values()), "lion")


def test_a_workload_without_the_baseline_method_is_not_tested():
    runs = [fake_run(name, seed, [0.5 + seed / 10]) for name in ("a", "b") for seed in (0, 1)]
    runs += [fake_run("b", seed, [0.6], **{"model.name": "cnn"}) for seed in (0, 1)]
    swept = swept_keys(runs)
    summaries = [summarize(g, 0.8) for g in group_runs(runs, swept, shown_keys(runs, swept))]
    against = compare_to_baseline(summaries, "optimizer=a", alpha=0.01)
    assert against.unmatched == ["synthetic/cnn"]
    assert {(c.group.group.workload, c.group.group.method) for c in against.contrasts} == {("synthetic/mlp", "optimizer=b")}  # fmt: skip


def test_the_csv_and_markdown_test_each_group_against_the_chosen_baseline(sweep, tmp_path):
    out = optbench("report", str(sweep), "--baseline", "optimizer=sgd,scheduler=cosine", "--alpha", "0.05", "--out", str(tmp_path), cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "against the baseline optimizer=sgd, scheduler=cosine: Welch's t-test, * p < 0.05" in out.stdout  # fmt: skip

    runs = [results_of(p) for p in sweep.glob("*/") if (p / "results.json").is_file()]

    def accs(row: dict[str, str]) -> list[float]:
        mine = [r for r in runs if (r["optimizer"], r["scheduler"]) == (row["optimizer.name"], row["scheduler.name"])]  # fmt: skip
        return [r["final_val_acc"] for r in mine]

    rows = read_csv(tmp_path / "report.csv")
    (baseline,) = [r for r in rows if r["method"] == "optimizer=sgd, scheduler=cosine"]
    for row in rows:
        assert (row["baseline"], row["alpha"]) == ("optimizer=sgd, scheduler=cosine", "0.05")
        mine, theirs = accs(row), accs(baseline)
        if statistics.stdev(mine) > 0:
            low, high = scipy_interval(mine)
            assert float(row["final_val_acc_ci95_low"]) == pytest.approx(low)
            assert float(row["final_val_acc_ci95_high"]) == pytest.approx(high)
        if row is baseline:
            assert row["final_val_acc_difference"] == row["final_val_acc_p"] == ""
            continue
        difference = statistics.fmean(mine) - statistics.fmean(theirs)
        assert float(row["final_val_acc_difference"]) == pytest.approx(difference)
        if statistics.stdev(mine) + statistics.stdev(theirs) > 0:
            p = stats.ttest_ind(mine, theirs, equal_var=False).pvalue
            assert float(row["final_val_acc_p"]) == pytest.approx(p)
            assert row["final_val_acc_significant"] == str(p < 0.05)
        else:
            assert row["final_val_acc_p"] == "" and row["final_val_acc_seeds_needed"] == ""

    markdown = (tmp_path / "report.md").read_text()
    assert "## Against the baseline: optimizer=sgd, scheduler=cosine" in markdown
    assert "| group | metric | difference vs baseline | p (Welch) | Hedges' g | seeds needed | note |" in markdown  # fmt: skip
    section = markdown.split("## Against the baseline")[1].split("\n## ")[0]
    assert sum(line.startswith("| optimizer=") for line in section.splitlines()) == 3 * 3


def test_an_unknown_baseline_lists_the_groups_and_writes_nothing(sweep, tmp_path):
    out = optbench("report", str(sweep), "--baseline", "optimizer=lion", "--out", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "--baseline: no group 'optimizer=lion'; the groups are: 'optimizer=adamw, scheduler=constant'" in out.stderr  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_groups_ignore_seeds_and_bookkeeping_and_hide_implied_keys():
    runs = [
        fake_run("sgd", 0, [0.5], **{"optimizer.lr": 0.1, "trainer.device": "cpu"}),
        fake_run("sgd", 1, [0.6], **{"optimizer.lr": 0.1, "trainer.device": "cuda"}),
        fake_run("adamw", 0, [0.7], **{"optimizer.lr": 0.001, "trainer.device": "cpu"}),
    ]
    swept = swept_keys(runs)
    assert swept == ["optimizer.name", "optimizer.lr"]
    assert shown_keys(runs, swept) == ["optimizer.name"]  # the lr follows from optimizer=...
    groups: list[Group] = group_runs(runs, swept, shown_keys(runs, swept))
    assert [(g.method, len(g.runs)) for g in groups] == [("optimizer=adamw", 1), ("optimizer=sgd", 2)]  # fmt: skip
    runs.append(fake_run("sgd", 0, [0.8], **{"optimizer.lr": 0.01}))
    assert shown_keys(runs, swept_keys(runs)) == ["optimizer.name", "optimizer.lr"]


def test_a_key_some_runs_lack_differs_within_a_sweep_not_across_sweeps():
    old = [fake_run("sgd", seed, [0.5], sweep="old") for seed in (0, 1)]
    new = [
        fake_run("sgd", seed, [0.5], sweep="new", **{"trainer.new_option": 1}) for seed in (0, 1)
    ]
    assert swept_keys(old + new) == []  # the config gained a key between the sweeps
    plus = fake_run("sgd", 2, [0.5], sweep="new", **{"param_groups.lr_multipliers.head": 10.0})
    assert swept_keys([*old, *new, plus]) == [
        "trainer.new_option",
        "param_groups.lr_multipliers.head",
    ]


def test_a_resume_job_is_not_a_run(tmp_path):
    (tmp_path / "resume_job" / ".hydra").mkdir(parents=True)
    (tmp_path / "resume_job" / ".hydra" / "config.yaml").write_text("trainer:\n  resume: /runs/a\n")
    with pytest.raises(UserError, match="no runs found"):
        load_runs([tmp_path])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing_dir"], "missing_dir does not exist"),
        (["empty"], "no runs found under empty"),
        (["empty", "--target", "-1"], "--target: must be a positive number"),
        (["empty", "--target", "0"], "--target: must be a positive number"),
        (["empty", "--target", "high"], "--target: must be a positive number"),
        (["empty", "--alpha", "0"], "--alpha: must be in (0, 1)"),
        (["empty", "--alpha", "1"], "--alpha: must be in (0, 1)"),
        (["empty", "--alpha", "low"], "--alpha: must be a number"),
        (["empty", "--tolerance", "0"], "--tolerance: must be in (0, 1)"),
        (["empty", "--tolerance", "1"], "--tolerance: must be in (0, 1)"),
        (["empty", "--tolerance", "wide"], "--tolerance: must be a number in (0, 1)"),
        (["empty", "--time", "epochs"], "--time: invalid choice: 'epochs'"),
        ([], "the following arguments are required: DIR"),
    ],
)
def test_bad_input_is_one_line_on_stderr_exit_2(tmp_path, args, message):
    (tmp_path / "empty" / "nothing_here").mkdir(parents=True)
    out = optbench("report", *args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "empty" / "report").exists()


def test_an_accuracy_target_above_1_is_refused_as_a_percentage(sweep, tmp_path):
    out = optbench(
        "report", str(sweep), "--target", "93", "--out", str(tmp_path / "r"), cwd=tmp_path
    )
    assert out.returncode == 2 and "a fraction in (0, 1], not a %" in out.stderr
    assert not (tmp_path / "r").exists()


def test_a_malformed_results_file_is_flagged_and_never_averaged(sweep, tmp_path):
    copy = copy_of(sweep, tmp_path / "sweep")
    (run_dir(copy, "sgd", "cosine", 0) / "results.json").write_text('{"status": "completed"}')
    out = optbench("report", str(copy), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # Without a `metric`, it reads as a result from before the validation split: test_acc.
    assert "malformed results.json (completed without a number for final_test_acc)" in out.stdout
    assert "predate" not in out.stdout
    rows = {(r["optimizer.name"], r["scheduler.name"]): r for r in read_csv(tmp_path / "out" / "report.csv")}  # fmt: skip
    assert (rows["sgd", "cosine"]["completed"], rows["sgd", "cosine"]["malformed"]) == ("1", "1")
    # The group is still ranked by its readable seed's metric, val_acc.
    kept = results_of(run_dir(copy, "sgd", "cosine", 1))
    assert float(rows["sgd", "cosine"]["final_val_acc_mean"]) == kept["final_val_acc"]


TINY_CLASSIFIER = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64",
                   "model=mlp", "model.hidden=[16]", "trainer.epochs=1"]  # fmt: skip
TINY_GPT = ["dataset=markov", "dataset.vocab_size=8", "dataset.length=6000", "dataset.block_size=16",
            "model=gpt", "model.dim=16", "model.depth=1", "model.heads=2", "optimizer=adamw",
            "trainer.batch_size=32", "trainer.epochs=1"]  # fmt: skip


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory) -> Path:
    """A classifier's run (ranked by val_acc) and a language model's (val_loss), side by side."""
    root = tmp_path_factory.mktemp("two_tasks")
    for name, overrides in (("classifier", TINY_CLASSIFIER), ("gpt", TINY_GPT)):
        out = optbench(
            "train", *overrides, "trainer.device=cpu", "trainer.progress=false",
            f"hydra.run.dir={root / name}", cwd=root,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    return root


def table_under(markdown: str, title: str) -> list[str]:
    """The Markdown table that follows the line `title` starts."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    table = []
    for line in lines[start + 1 :]:
        if table and not line.startswith("|"):
            return table
        if line.startswith("|"):
            table.append(line)
    return table


def test_a_report_over_two_tasks_reports_each_group_with_its_own_metric(two_tasks, tmp_path):
    gpt, classifier = results_of(two_tasks / "gpt"), results_of(two_tasks / "classifier")
    assert (gpt["metric"], gpt["higher_is_better"]) == ("val_loss", False)
    assert (classifier["metric"], classifier["higher_is_better"]) == ("val_acc", True)
    out = optbench("report", str(two_tasks), "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # The terminal: one table per metric, each titled with it.
    assert "2 runs, 2 groups; val loss (markov/gpt): 1 group" in out.stdout
    assert "2 runs, 2 groups; val acc (synthetic/mlp): 1 group" in out.stdout
    assert "markov/gpt: val_loss" in out.stdout and "synthetic/mlp: val_acc" in out.stdout

    rows = {r["workload"]: r for r in read_csv(tmp_path / "r" / "report.csv")}
    lm, cls = rows["markov/gpt"], rows["synthetic/mlp"]
    assert (lm["metric"], cls["metric"]) == ("val_loss", "val_acc")
    assert float(lm["final_val_loss_mean"]) == pytest.approx(gpt["final_val_loss"])
    assert float(lm["best_val_loss_mean"]) == pytest.approx(gpt["best_val_loss"])
    assert float(cls["final_val_acc_mean"]) == pytest.approx(classifier["final_val_acc"])
    assert float(cls["best_val_acc_mean"]) == pytest.approx(classifier["best_val_acc"])
    assert lm["final_val_acc_mean"] == cls["final_val_loss_mean"] == ""  # not the other's metric
    runs = {r["workload"]: r for r in read_csv(tmp_path / "r" / "runs.csv")}
    assert float(runs["markov/gpt"]["final_val_loss"]) == pytest.approx(gpt["final_val_loss"])
    assert float(runs["synthetic/mlp"]["final_val_acc"]) == pytest.approx(classifier["final_val_acc"])  # fmt: skip

    markdown = (tmp_path / "r" / "report.md").read_text()
    lm_table = table_under(markdown, "**val loss (markov/gpt): 1 group**")
    cls_table = table_under(markdown, "**val acc (synthetic/mlp): 1 group**")
    assert "| final val loss |" in lm_table[0] and "| final val acc % |" in cls_table[0]
    assert f"| {gpt['final_val_loss']:.4f} |" in lm_table[2]
    assert f"| {100 * classifier['final_val_acc']:.2f} |" in cls_table[2]
    for figure in ("val_loss.png", "val_acc.png", "final.png"):
        assert (tmp_path / "r" / figure).read_bytes().startswith(b"\x89PNG")
        assert f"]({figure})" in markdown


def task_run(root: Path, name: str, task: str, lr: float, final: float) -> None:
    """A finished run of `task` (classification: val_acc; language_model: val_loss)."""
    metric, higher = ("val_acc", True) if task == "classification" else ("val_loss", False)
    dataset, model = ("synthetic", "mlp") if task == "classification" else ("markov", "gpt")
    run = root / name
    run.mkdir(parents=True)
    config = {"dataset": {"name": dataset, "task": task}, "model": {"name": model},
              "optimizer": {"name": "adamw", "lr": lr}, "trainer": {"seed": 0}}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    record = {"epoch": 1, "step": 10, "examples": 320, "train_time_s": 1.0, metric: final}
    (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    results = {"schema": 2, "status": "completed", "task": task, "metric": metric,
               "higher_is_better": higher, "seed": 0, "steps": 10, "planned_steps": 10,
               "train_time_s": 1.0, f"final_{metric}": final, f"best_{metric}": final}  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))


def test_sensitivity_over_two_tasks_reads_each_metric_its_own_way_up(tmp_path):
    # The loss is lowest at the smallest LR, the accuracy highest at the largest.
    losses = {0.001: 1.0, 0.01: 1.02, 0.1: 3.0}
    accuracies = {0.001: 0.2, 0.01: 0.5, 0.1: 0.9}
    for lr in losses:
        task_run(tmp_path / "runs", f"lm_{lr}", "language_model", lr, losses[lr])
        task_run(tmp_path / "runs", f"cls_{lr}", "classification", lr, accuracies[lr])
    c = compare([tmp_path / "runs"], None, None, 0.01)
    by_metric = {s.headline.metric: s for s in c.sensitivities}
    assert set(by_metric) == {"val_loss", "val_acc"}
    (lm,), (cls,) = by_metric["val_loss"].curves, by_metric["val_acc"].curves
    assert (lm.workload, lm.best.value, lm.region) == ("markov/gpt", 0.001, (0.001, 0.01))
    assert (cls.workload, cls.best.value, cls.region) == ("synthetic/mlp", 0.1, (0.1, 0.1))
    figures = {s.figure for s in c.sensitivities}
    assert figures == {"sensitivity_optimizer.lr_val_loss.png", "sensitivity_optimizer.lr_val_acc.png"}  # fmt: skip

    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert all((out / figure).read_bytes().startswith(b"\x89PNG") for figure in figures)
    rows = {(r["metric"], r["value"]): r for r in read_csv(out / "sensitivity.csv")}
    assert rows["final_val_loss", "0.001"]["best"] == rows["final_val_acc", "0.1"]["best"] == "True"
    assert "### optimizer.lr, val loss" in (out / "report.md").read_text()


def test_unreadable_runs_are_listed_with_the_reason_and_never_averaged(sweep, tmp_path):
    copy = copy_of(sweep, tmp_path / "sweep")
    (run_dir(copy, "sgd", "cosine", 0) / "results.json").write_text("[1, 2]")
    (run_dir(copy, "sgd", "constant", 0) / "config.yaml").write_text("optimizer: [sgd,\n")
    metrics = run_dir(copy, "adamw", "cosine", 0) / "metrics.jsonl"
    first, *rest = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join([first, "{not json}\n", *rest]))
    cut = run_dir(copy, "adamw", "constant", 0) / "metrics.jsonl"
    cut.write_text(cut.read_text() + '{"epoch": 4, "val_')  # half a last line: left out
    crashed = run_dir(copy, "adamw", "constant", 1) / "results.json"
    crashed.write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of memory"}))

    out = optbench("report", str(copy), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "malformed results.json (not a JSON object)" in out.stdout
    assert "malformed config.yaml (not valid YAML: " in out.stdout
    assert "malformed metrics.jsonl (line 2 is not valid JSON)" in out.stdout
    assert "failed (RuntimeError: out of memory)" in out.stdout
    rows = {(r["optimizer.name"], r["scheduler.name"]): r for r in read_csv(tmp_path / "out" / "report.csv")}  # fmt: skip
    for key in (("sgd", "cosine"), ("sgd", "constant"), ("adamw", "cosine")):
        assert (rows[key]["runs"], rows[key]["completed"], rows[key]["malformed"]) == (
            "2",
            "1",
            "1",
        )
    kept = results_of(run_dir(copy, "sgd", "cosine", 1))
    assert float(rows["sgd", "cosine"]["final_val_acc_mean"]) == kept["final_val_acc"]
    adamw = rows["adamw", "constant"]
    assert (adamw["completed"], adamw["failed_unfinished"], adamw["malformed"]) == ("1", "1", "0")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "malformed metrics.jsonl (line 2 is not valid JSON)" in markdown


def test_a_search_or_tuning_summary_that_cannot_be_read_is_named_not_shown(sweep, tmp_path):
    copy = copy_of(sweep, tmp_path / "sweep")
    (copy / "search.json").write_text('{"n_finished": ')
    (copy / "tuning.json").write_text(json.dumps({"studies": 3, "optimizers": {"adam": {}}}))
    out = optbench("report", str(copy), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"`{copy / 'search.json'}`: not valid JSON (Expecting value" in markdown
    assert f"`{copy / 'tuning.json'}`: not a tuning summary, not shown." in markdown
