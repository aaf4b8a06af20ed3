"""The command line end to end, as a subprocess, the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optbench.hydra_command import remove_refused_job_dir

FAST = ["dataset=synthetic", "dataset.train_size=256", "dataset.val_size=128", "dataset.test_size=128",
        "model=mlp",
        "model.hidden=[32]", "trainer.epochs=1", "trainer.batch_size=64", "trainer.device=cpu"]  # fmt: skip


def optbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["optbench", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_the_subcommands(tmp_path):
    out = optbench("--help", cwd=tmp_path)
    assert out.returncode == 0 and "train" in out.stdout
    module = subprocess.run(
        [sys.executable, "-m", "optbench", "--help"], capture_output=True, text=True
    )
    assert module.returncode == 0 and module.stdout == out.stdout


def test_version_names_optbench_and_the_installed_libraries(tmp_path):
    from importlib import metadata

    from optbench import __version__

    for flag in ("--version", "-V"):
        out = optbench(flag, cwd=tmp_path)
        assert out.returncode == 0 and out.stderr == ""
        line = out.stdout.strip()
        assert line.startswith(f"optbench {__version__} (")
        assert f"torch {metadata.version('torch')}" in line
        assert f"hydra-core {metadata.version('hydra-core')}" in line
    assert not list(tmp_path.iterdir())


def test_a_one_epoch_run_says_one_epoch(tmp_path):
    out = optbench("train", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert ": 1 epoch x 4 optimizer steps on cpu" in out.stdout + out.stderr


def test_train_help_shows_the_config_groups(tmp_path):
    out = optbench("train", "--help", cwd=tmp_path)
    assert out.returncode == 0
    assert (
        "optimizer: adafactor, adagrad, adam, adam8bit" in out.stdout
        and "scheduler: constant" in out.stdout
    )


def test_a_single_run_writes_its_run_directory(tmp_path):
    out = optbench("train", *FAST, "optimizer=adamw", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "outputs" / "train").glob("*/*")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["optimizer"] == "adamw"
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))


def test_a_multirun_sweep_runs_every_job(tmp_path):
    out = optbench("train", "-m", *FAST, "optimizer=sgd,adamw", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    results = [
        json.loads(p.read_text())
        for p in sorted((tmp_path / "outputs" / "multirun").glob("*/*/*/results.json"))
    ]
    assert sorted(r["optimizer"] for r in results) == ["adamw", "sgd"]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert f"optbench train: the sweep's 2 jobs are in {sweep}" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimizer=nope"], "unknown optimizer 'nope'"),
        (["optimizer.lr=-1"], "lr must be a positive number"),
        (["trainer.accumulation=0"], "trainer.accumulation must be an integer >= 1"),
        (["trainer.batch_size=0"], "trainer.batch_size must be an integer >= 1"),
        (["trainer.amp=fp16", "trainer.device=cpu"], "trainer.amp=fp16 needs a CUDA device"),
        (["trainer.device=tpu"], "trainer.device must be"),
        (["trainer.epochz=3"], "Key 'epochz' is not in struct"),
        (["scheduler.warmup=100000"], "leaves no room for the schedule"),
        (
            ["-m", "optimizer=sgd,adamw", "trainer.epochs=0"],
            "trainer.epochs must be an integer >= 1",
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr_exit_2_and_writes_nothing(tmp_path, args, message):
    out = optbench("train", *FAST, *args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


def test_an_unknown_command_exits_2(tmp_path):
    out = optbench("trian", cwd=tmp_path)
    assert out.returncode == 2 and "unknown command 'trian'" in out.stderr


def test_a_single_diverged_run_exits_3_and_a_sweep_of_them_exits_0(tmp_path):
    diverging = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64", "model=mlp",
                 "model.hidden=[8]", "trainer.device=cpu", "trainer.batch_size=32", "optimizer=sgd",
                 "optimizer.lr=1e6", "scheduler=constant"]  # fmt: skip
    single = optbench("train", *diverging, f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert single.returncode == 3, single.stderr
    assert json.loads((tmp_path / "one" / "results.json").read_text())["status"] == "diverged"
    sweep = optbench(
        "train",
        "-m",
        *diverging,
        "trainer.seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'm'}",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr
    statuses = [
        json.loads(p.read_text())["status"] for p in (tmp_path / "m").glob("*/results.json")
    ]
    assert statuses == ["diverged", "diverged"]


def test_a_job_refused_at_its_start_leaves_no_folder_but_keeps_real_outputs(tmp_path):
    root = tmp_path / "outputs"
    refused = root / "train" / "2026-12-02" / "10-00-00"
    (refused / ".hydra").mkdir(parents=True)
    (refused / ".hydra" / "config.yaml").write_text("a: 1\n")
    (refused / "train.log").write_text("")
    kept = root / "train" / "2026-12-02" / "10-00-01"
    (kept / "lr_find").mkdir(parents=True)  # a refusal that explains itself with a plot
    remove_refused_job_dir(refused, root)
    assert not refused.exists() and kept.exists()
    remove_refused_job_dir(kept, root)
    assert kept.exists()
    (kept / "lr_find").rmdir()
    remove_refused_job_dir(kept, root)
    assert root.is_dir() and not any(root.iterdir())  # empty date folders go, the root stays


@pytest.mark.slow
def test_a_second_trainer_on_a_run_directory_in_use_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    # Long enough to outlive the second process's start-up; terminated when the check is done.
    slow = [*FAST, "dataset.train_size=4096", "trainer.batch_size=8", "trainer.epochs=500",
            "trainer.progress=false", f"hydra.run.dir={run_dir}"]  # fmt: skip
    first = subprocess.Popen(["optbench", "train", *slow], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "run.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        hydra_files = {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
        for extra in ([], ["trainer.resume=auto"]):  # a new run, or one that would resume
            second = optbench("train", *slow, *extra, cwd=tmp_path)
            assert first.poll() is None  # the first was still training all along
            assert second.returncode == 2
            assert second.stderr.strip().endswith(f"another process is running in {run_dir}")
            assert len(second.stderr.strip().splitlines()) == 1
        # Refused before Hydra wrote a thing: the first run's .hydra/ files are its own.
        assert {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == hydra_files
    finally:
        first.terminate()
        first.wait(timeout=120)
    records = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line] if (
        run_dir / "metrics.jsonl").exists() else []  # fmt: skip
    epochs = [json.loads(r)["epoch"] for r in records]
    assert epochs == sorted(set(epochs))  # one writer: no epoch twice


@pytest.mark.slow
def test_a_command_that_logs_nothing_leaves_no_empty_log_file(tmp_path):
    for command in (["schedule", *FAST], ["toy", "steps=20"]):
        run_dir = tmp_path / command[0]
        out = optbench(*command, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert not list(run_dir.glob("*.log")) and any(run_dir.iterdir())
    out = optbench("train", *FAST, f"hydra.run.dir={tmp_path / 'train'}", cwd=tmp_path)
    assert out.returncode == 0 and (tmp_path / "train" / "train.log").stat().st_size > 0
