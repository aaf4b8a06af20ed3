"""Experiment presets, launchers and sweepers: they compose, and they run what they promise.

Runs are tiny (synthetic data, a one-layer MLP, one epoch); most of the time goes into starting
processes: the launchers' workers and submitit's tasks (the tuning protocol: tests/test_tune.py).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose
from omegaconf import OmegaConf

from optbench.errors import UserError
from optbench.hydra_command import initialize_configs, job_overrides, preflight
from optbench.train.preflight import check_train_config

FAST = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128", "model=mlp",
        "model.hidden=[32]", "trainer.epochs=1", "trainer.batch_size=64", "trainer.device=cpu",
        "trainer.progress=false"]  # fmt: skip
# Presets run as `optbench train -m +experiment=<name>`, each with its whole sweep declared.
PRESETS = {  # name -> jobs its declared sweep runs
    "scheduler_ablation": 15,
    "optimizer_comparison": 18,
    "large_batch": 12,
    "adam_vs_adamw": 18,
    "recipes": 6,
    "recipes/resnet_nesterov_cosine": 3,
    "recipes/adamw_warmup_cosine": 3,
    "recipes/gan_adam_betas": 3,
    "vit_optimizers": 18,
    "airbench94": 1,
    "airbench94_muon": 1,
    "lm_optimizers": 21,
    "lr_wd_search": 1,  # optbench search chooses the trials: train runs the base config
    "lr_sensitivity": 66,
}


def run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def compose_job(*overrides: str):
    with initialize_configs():
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def run_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent.parent for p in sweep.glob("*/.hydra/overrides.yaml"))


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def saved_config(run_dir: Path):
    return OmegaConf.load(run_dir / "config.yaml")


# --- presets -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "jobs"), PRESETS.items())
def test_every_job_of_every_preset_composes_and_passes_the_run_checks(name, jobs):
    assert len(preflight("train", [f"+experiment={name}"], True, check_train_config)[0]) == jobs


def test_every_preset_file_is_checked_here():
    root = Path(__file__).resolve().parents[1] / "configs" / "experiment"
    files = {p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")}
    parts = {f for f in files if f.startswith(("workload/", "large_batch/"))}  # not run alone
    assert files - parts == {*PRESETS, "amp", "tuning"}


def test_the_amp_preset_composes_and_its_fp16_jobs_need_cuda():
    assert len(preflight("train", ["+experiment=amp"], True, lambda cfg: None)[0]) == 9
    cpu = ["+experiment=amp", "trainer.amp=none,bf16", "trainer.device=cpu"]
    assert len(preflight("train", cpu, True, check_train_config)[0]) == 6
    with pytest.raises(UserError, match=r"^trainer.amp=fp16 needs a CUDA device"):
        preflight("train", ["+experiment=amp", "trainer.device=cpu"], True, check_train_config)


def test_a_preset_prints_with_cfg_job(tmp_path):
    out = run("optbench", "train", "+experiment=large_batch", "experiment/large_batch@_global_=lars",
              "--cfg", "job", cwd=tmp_path)  # fmt: skip
    cfg = OmegaConf.create(out.stdout)
    assert cfg.optimizer.name == "lars" and cfg.trainer.batch_size == 1024
    assert not (tmp_path / "outputs").exists()


def test_the_large_batch_variants_are_four_configs_at_effective_batch_1024_with_sqrt_scaled_lrs():
    base = {
        "momentum": 0.1,
        "lars": 1.0,
        "lamb": 5e-3,
    }  # each optimizer's documented LR at batch 128
    with initialize_configs():
        jobs = job_overrides("train", ["+experiment=large_batch"], multirun=True)
        cfgs = [compose("train", overrides=job) for job in jobs]
    variants = {
        (c.optimizer.name, c.trainer.batch_size, c.trainer.accumulation, c.optimizer.lr)
        for c in cfgs
    }
    assert len(variants) == 4 and len(cfgs) == 12  # 4 variants x 3 seeds, not a product
    assert {(name, batch, accumulation) for name, batch, accumulation, _ in variants} == {
        ("momentum", 64, 16), ("momentum", 1024, 1), ("lars", 1024, 1), ("lamb", 1024, 1)
    }  # fmt: skip
    for name, batch, accumulation, lr in variants:
        assert batch * accumulation == 1024
        assert lr == pytest.approx(base[name] * math.sqrt(1024 / 128), rel=5e-3)  # 3 digits
    assert {c.trainer.seed for c in cfgs} == {0, 1, 2}


def test_the_lr_wd_search_preset_searches_both_on_a_log_scale():
    from optbench.studies.optuna_study import read_settings

    cfg = compose_job("+experiment=lr_wd_search")
    settings = read_settings(OmegaConf.to_container(cfg.search, resolve=True))
    dims = {d.key: d.distribution for d in settings.space.dimensions("adamw")}
    assert set(dims) == {"optimizer.lr", "optimizer.weight_decay"}
    assert all(d.log for d in dims.values()) and settings.sampler == "tpe"
    assert settings.storage_url(Path("s")) == f"sqlite:///{Path('s') / 'optuna.db'}"


def test_a_declared_seed_sweep_gives_mean_and_spread_in_the_report(tmp_path):
    # scheduler=cosine on the command line replaces the preset's five-schedule sweep; its
    # declared seeds 0,1,2 stay.
    run("optbench", "train", "-m", "+experiment=scheduler_ablation", "scheduler=cosine", *FAST,
        "paths.output_dir=out", cwd=tmp_path)  # fmt: skip
    (sweep,) = (tmp_path / "out" / "multirun").glob("*/*")
    runs = [results(d) for d in run_dirs(sweep)]
    assert sorted(r["seed"] for r in runs) == [0, 1, 2]
    assert {r["scheduler"] for r in runs} == {"cosine"}
    run("optbench", "report", str(sweep), "--out", "report", cwd=tmp_path)
    (row,) = csv.DictReader((tmp_path / "report" / "report.csv").open())
    assert row["seeds"] == "3" and row["best_val_acc_n"] == "3"
    assert float(row["best_val_acc_mean"]) > 0 and row["best_val_acc_std"] != ""


# --- launchers -----------------------------------------------------------------------------


def test_the_parallel_launcher_runs_jobs_at_once_in_separate_processes(tmp_path):
    # A command-line sweep of trainer.seed replaces the preset's declared seeds (Hydra's basic
    # sweeper lets the command line win, as the preflight does): exactly two jobs.
    log_format = "'[%(asctime)s][pid %(process)d][%(name)s] %(message)s'"
    main = subprocess.Popen(
        ["optbench", "train", "-m", "hydra/launcher=parallel", "+experiment=scheduler_ablation",
         "scheduler=cosine", "trainer.seed=5,6", *FAST, "paths.output_dir=out",
         f"hydra.job_logging.formatters.simple.format={log_format}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = main.communicate(timeout=300)[0]
    assert main.returncode == 0, output[-3000:]
    (sweep,) = (tmp_path / "out" / "multirun").glob("*/*")
    runs = run_dirs(sweep)
    assert sorted(results(d)["seed"] for d in runs) == [5, 6]
    assert all(results(d)["status"] == "completed" for d in runs)
    # Each job's span: Hydra writes .hydra/ as the job starts, the trainer results.json as it ends.
    spans = [((d / ".hydra" / "overrides.yaml").stat().st_mtime, (d / "results.json").stat().st_mtime) for d in runs]  # fmt: skip
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, f"the jobs ran one after the other: {spans}"
    pids = {
        int(m) for d in runs for m in re.findall(r"\[pid (\d+)\]", (d / "train.log").read_text())
    }
    assert len(pids) == 2 and main.pid not in pids


def test_the_slurm_launcher_config_becomes_the_sbatch_script_it_documents(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    # submitit refuses to build a Slurm executor where no srun exists; this one is never run.
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    cfg = compose_job("hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                      f"hydra.sweep.dir={tmp_path}/sweep", "hydra.job.name=train")  # fmt: skip
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    # As hydra_submitit_launcher's BaseSubmititLauncher.launch passes them to submitit:
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m optbench", "uid")
    for line in ["--partition=gpu", "--time=240", "--gpus-per-node=1", "--cpus-per-task=8",
                 "--mem=32GB", "--signal=USR2@120", "--open-mode=append"]:  # fmt: skip
        assert f"#SBATCH {line}\n" in script
    assert f"#SBATCH --output={tmp_path}/sweep/.submitit/%j/%j_0_log.out\n" in script
    assert executor._executor.max_num_timeout == 5


def _submitit_task(marker: str) -> int:
    """The pid of the one submitit task process whose command line names `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "submitit.core._submit" in cmdline and any(marker in part for part in cmdline):
            found.append(int(proc.name))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes_in_its_run_directory(tmp_path):
    main = subprocess.Popen(
        ["optbench", "train", "-m", "hydra/launcher=submitit_local", "trainer.seed=0",
         *FAST, "dataset.train_size=1024", "model.hidden=[256]", "trainer.batch_size=32",
         "trainer.epochs=4", "trainer.resume=auto", "paths.output_dir=out"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not list((tmp_path / "out").glob("multirun/*/*/0_*/checkpoints/step-*.pt")):
            assert main.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
        # What Slurm does at preemption (the signal submitit asks sbatch for): submitit's
        # handler resubmits the job and exits; the local executor restarts it.
        os.kill(_submitit_task(str(tmp_path)), signal.SIGUSR2)
        output = main.communicate(timeout=240)[0]
    finally:
        if main.poll() is None:
            main.kill()
    assert main.returncode == 0, output[-3000:]
    (sweep,) = (tmp_path / "out" / "multirun").glob("*/*")
    (run_dir,) = run_dirs(sweep)  # the requeued job trained in the same directory
    done = results(run_dir)
    assert done["status"] == "completed" and done["epochs"] == 4
    assert "resuming" in (run_dir / "train.log").read_text()
    submitit_log = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.err"))
    assert "Caught signal SIGUSR2" in submitit_log and "preempted" in submitit_log
