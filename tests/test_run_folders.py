"""A run folder is never overwritten, and a sweep survives a job that crashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST

from optbench.cli import main
from optbench.commands import train as train_command
from optbench.hydra_command import FAILED_JOBS_EXIT_CODE

QUICK = [*FAST, "trainer.epochs=1", "trainer.diagnostics_interval=0"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_new_run_into_a_finished_run_s_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *QUICK, f"hydra.run.dir={run}"]) == 0
    before = snapshot(run)
    assert "results.json" in before and ".hydra/config.yaml" in before
    capsys.readouterr()
    for extra in ([], ["trainer.epochs=2"], ["optimizer=adamw"]):
        assert main(["train", *QUICK, *extra, f"hydra.run.dir={run}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"{run} already holds files; continue its run with "
                            "trainer.resume=auto, or write to a new folder")  # fmt: skip
        assert len(err.splitlines()) == 1
        assert snapshot(run) == before  # byte for byte, .hydra/ included
    # Resuming the finished run is allowed, and the run is still the one that finished.
    assert main(["train", *QUICK, "trainer.resume=auto", f"hydra.run.dir={run}"]) == 0
    assert json.loads((run / "results.json").read_text())["status"] == "completed"


def test_an_empty_run_folder_name_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *QUICK, "hydra.run.dir="]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("hydra.run.dir is empty; name the folder to write to")
    )
    assert list(tmp_path.iterdir()) == []


def test_the_trainer_itself_will_not_write_over_an_earlier_run(fast_cfg, tmp_path):
    from optbench.errors import UserError
    from optbench.train.trainer import train

    train(fast_cfg("trainer.epochs=1"), tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="holds an earlier run"):
        train(fast_cfg("trainer.epochs=2"), tmp_path)
    assert snapshot(tmp_path) == before


def test_a_sweep_runs_every_other_job_when_one_crashes(tmp_path, monkeypatch, capsys):
    real = train_command.train

    def crashes_for_lion(cfg, run_dir, **kwargs):
        if cfg.optimizer.name == "lion":
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        return real(cfg, run_dir, **kwargs)

    monkeypatch.setattr(train_command, "train", crashes_for_lion)
    sweep = tmp_path / "sweep"
    code = main(["train", "-m", *QUICK, "optimizer=sgd,lion,adamw", f"hydra.sweep.dir={sweep}"])
    assert code == FAILED_JOBS_EXIT_CODE
    results = {d.name.split("optimizer=")[1].split(",")[0]: json.loads((d / "results.json").read_text())
               for d in sweep.iterdir() if d.is_dir()}  # fmt: skip
    assert results["sgd"]["status"] == results["adamw"]["status"] == "completed"
    assert results["lion"]["status"] == "failed"
    assert (
        results["lion"]["error"] == "RuntimeError: CUDA error: an illegal memory access (simulated)"
    )
    err = capsys.readouterr().err
    assert "1 of 3 jobs failed" in err and "Traceback" not in err
    # The report lists the failed job and compares the others.
    assert main(["report", str(sweep)]) == 0
