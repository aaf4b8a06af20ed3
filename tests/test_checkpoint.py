"""Runs that survive: checkpoints, exact resume, signals, divergence, safe loading."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import read_jsonl

from optbench.errors import UserError
from optbench.tracking.files import atomic_write_json
from optbench.train import checkpoint
from optbench.train.interrupts import StopSignals
from optbench.train.trainer import train

TIMING = {"epoch_time_s", "images_per_s", "train_time_s"}

# Long epochs of tiny steps, so a signal sent after epoch 1 lands in the middle of epoch 2.
SLOW = ["dataset=synthetic", "dataset.train_size=4096", "dataset.test_size=256", "dataset.separation=0.4",
        "model=mlp", "model.hidden=[128]", "trainer.batch_size=8", "trainer.epochs=3", "trainer.device=cpu",
        "trainer.deterministic=true", "optimizer=momentum", "optimizer.lr=0.02", "scheduler=onecycle",
        "trainer.log_interval=50"]  # fmt: skip


def final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load_latest(run_dir)[1]["model"]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = subprocess.run(
        ["optbench", "train", *SLOW, f"hydra.run.dir={whole}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen(
        ["optbench", "train", *SLOW, f"hydra.run.dir={cut}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if "epoch 1/3" in line:  # logged after epoch 1's checkpoint: epoch 2 has begun
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    interrupted = json.loads((cut / "results.json").read_text())
    assert interrupted["status"] == "interrupted"
    _, payload = checkpoint.load_latest(cut)
    assert payload["state"]["epoch"] == 1 and payload["state"]["batch"] > 0  # stopped mid-epoch 2

    resumed = subprocess.run(
        ["optbench", "train", *SLOW, f"hydra.run.dir={cut}", "trainer.resume=auto"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((cut / "results.json").read_text())["status"] == "completed"
    for name, tensor in final_model(whole).items():
        assert torch.equal(tensor, final_model(cut)[name]), name
    assert without_timing(read_jsonl(cut / "metrics.jsonl")) == without_timing(
        read_jsonl(whole / "metrics.jsonl")
    )


def test_resume_skips_a_truncated_checkpoint_and_continues_from_the_older_one(fast_cfg, tmp_path):
    cfg = fast_cfg("trainer.epochs=3", "optimizer=adamw")
    whole = train(cfg, tmp_path / "whole")
    two_epochs = fast_cfg("trainer.epochs=3", "optimizer=adamw", "trainer.keep_checkpoints=3")
    run = tmp_path / "cut"
    train(two_epochs, run)
    newest, older, oldest = checkpoint.list_checkpoints(run)
    newest.unlink()
    older.write_bytes(older.read_bytes()[:1000])  # truncated: the newest left is unreadable
    with pytest.raises(UserError, match="corrupt or truncated"):
        checkpoint.load_checkpoint(older)
    assert checkpoint.load_latest(run)[0] == oldest

    resumed = train(fast_cfg("trainer.epochs=3", "optimizer=adamw", "trainer.resume=auto"), run)
    assert resumed["status"] == "completed"
    assert resumed["final_test_loss"] == whole["final_test_loss"]
    assert len(read_jsonl(run / "metrics.jsonl")) == 3


def test_resuming_with_a_different_config_is_refused(fast_cfg, tmp_path):
    train(fast_cfg("trainer.epochs=1"), tmp_path)
    with pytest.raises(UserError, match=r"optimizer\.lr"):
        train(
            fast_cfg("trainer.epochs=1", "optimizer.lr=0.5", f"trainer.resume={tmp_path}"),
            tmp_path / "new",
        )


def test_resuming_may_change_what_is_only_bookkeeping(fast_cfg, tmp_path):
    train(fast_cfg("trainer.epochs=2", "trainer.keep_checkpoints=2"), tmp_path)
    checkpoint.list_checkpoints(tmp_path)[0].unlink()  # back to the end of epoch 1
    resumed = train(
        fast_cfg(
            "trainer.epochs=2",
            "trainer.resume=auto",
            "trainer.diagnostics_interval=3",
            "trainer.log_interval=2",
        ),
        tmp_path,
    )
    assert resumed["status"] == "completed" and resumed["epochs"] == 2


def test_a_diverging_run_stops_with_a_diagnosis_and_keeps_the_last_good_state(fast_cfg, tmp_path):
    results = train(
        fast_cfg("optimizer=sgd", "optimizer.lr=1e6", "scheduler=constant", "trainer.epochs=2"),
        tmp_path,
    )
    assert results["status"] == "diverged"
    diagnosis = results["diagnosis"]
    assert diagnosis["step"] >= 1 and diagnosis["lr"] == [1e6, 1e6]
    assert diagnosis["nonfinite_grads"]  # names the parameters
    assert diagnosis["last_finite_loss"] is not None
    _, payload = checkpoint.load_latest(tmp_path)
    assert payload["state"]["step"] == diagnosis["step"]
    assert all(
        torch.isfinite(t).all() for t in payload["model"].values()
    )  # the state before the bad step


def test_skip_policy_counts_skipped_steps_and_finishes(fast_cfg, tmp_path):
    results = train(
        fast_cfg(
            "optimizer=sgd", "optimizer.lr=1e6", "trainer.epochs=1", "trainer.on_nonfinite=skip"
        ),
        tmp_path,
    )
    assert results["status"] == "completed"
    assert results["nonfinite_skipped_steps"] > 0
    assert results["steps"] == 8


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_loading_never_executes_code_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": 1, "x": Payload()}, protocol=2))
    with pytest.raises(UserError):
        checkpoint.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_a_failure_while_writing_leaves_no_partial_results(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"version": 1})

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(UserError, match=f"cannot write {target}: No space left on device"):
        atomic_write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left


def test_an_unwritable_output_path_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match=f"cannot write {blocker / 'results.json'}"):
        atomic_write_json(blocker / "results.json", {})


def test_a_signal_is_handed_on_to_the_handler_it_replaced_after_the_checkpoint():
    seen = []
    previous = signal.signal(
        signal.SIGUSR2, lambda signum, frame: seen.append(signum)
    )  # as submitit does
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert (
                stop.requested and not seen
            )  # ours first: the trainer finishes the step and saves
        stop.forward()
        assert seen == [signal.SIGUSR2] and stop.exit_code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, previous)
