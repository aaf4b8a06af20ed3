"""The shared trainer on the synthetic dataset: it learns, and writes what the README documents."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from helpers import read_jsonl, scalars

from optbench.run.plan import device_for_job
from optbench.tracking.results import REQUIRED, malformed
from optbench.train import checkpoint
from optbench.train.trainer import optimizer_steps, train

# The schema's fields, and the metric keys a classification run adds to them.
RESULT_FIELDS = {*REQUIRED, "final_val_acc", "final_val_loss", "final_test_acc",
                 "final_test_loss", "final_train_loss", "final_train_acc", "best_val_acc"}  # fmt: skip
METRIC_FIELDS = {
    "epoch", "step", "examples", "val_loss", "val_acc", "test_loss", "test_acc", "train_loss",
    "train_acc", "lr", "grad_norm", "epoch_time_s", "images_per_s", "train_time_s",
}  # fmt: skip


def test_run_learns_and_writes_documented_outputs(fast_cfg, tmp_path):
    cfg = fast_cfg("optimizer=adamw", "trainer.epochs=3", "trainer.targets=[0.3,0.999]")
    results = train(cfg, tmp_path)

    assert results["status"] == "completed"
    assert results["final_val_acc"] > 0.5  # ten classes: chance is 0.1
    assert results["final_test_acc"] > 0.5
    assert results["best_val_acc"] >= results["final_val_acc"]
    best = next(r for r in records_of(tmp_path) if r["step"] == results["best_step"])
    assert best["val_acc"] == results["best_val_acc"]
    assert results["test_at_best"] == {"test_acc": best["test_acc"], "test_loss": best["test_loss"]}
    assert results["data_split"] == {"train": 512, "val": 256, "test": 256}
    assert results["steps"] == 3 * 8  # 512 images / batch 64
    assert RESULT_FIELDS <= results.keys() and malformed(results) is None
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert results["time_to_target"]["0.3"]["epoch"] >= 1
    assert results["time_to_target"]["0.999"] is None  # never reached: a miss, not the final value

    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(METRIC_FIELDS <= r.keys() for r in records)
    assert records[-1]["test_acc"] == results["final_test_acc"]
    assert records[-1]["val_acc"] == results["final_val_acc"]
    assert [r["examples"] for r in records] == [512, 1024, 1536]
    assert records[0]["train_loss"] > records[-1]["train_loss"]

    snapshot = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert snapshot["optimizer"]["name"] == "adamw"
    assert "${" not in (tmp_path / "config.yaml").read_text()  # resolved
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert {"git", "torch", "device", "command"} <= info.keys()

    assert len(scalars(tmp_path, "train/loss_step")) == 24
    for tag in ("val/acc", "test/acc"):  # on the optimizer-step axis
        assert [s for s, _ in scalars(tmp_path, tag)] == [8, 16, 24]


def records_of(run_dir):
    return read_jsonl(run_dir / "metrics.jsonl")


def test_evaluation_interval_still_evaluates_the_last_epoch(fast_cfg, tmp_path):
    results = train(fast_cfg("trainer.epochs=3", "trainer.eval_interval=2"), tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert ["test_acc" in r and "val_acc" in r for r in records] == [False, True, True]
    assert results["final_test_acc"] == records[-1]["test_acc"]


def test_same_seed_same_run(fast_cfg, tmp_path):
    cfg = fast_cfg("optimizer=momentum", "trainer.epochs=1")
    first = train(cfg, tmp_path / "a")
    second = train(cfg, tmp_path / "b")
    assert first["final_test_loss"] == second["final_test_loss"]


@pytest.mark.parametrize(
    ("batches", "accumulation", "sizes"), [(7, 3, [3, 3, 1]), (6, 3, [3, 3]), (2, 1, [1, 1])]
)
def test_trailing_micro_batches_still_make_a_step(batches, accumulation, sizes):
    assert [len(g) for g in optimizer_steps(range(batches), accumulation)] == sizes


@pytest.mark.parametrize("accumulation", [1, 3])
def test_onecycle_ends_at_its_final_lr_on_the_last_optimizer_step(fast_cfg, tmp_path, accumulation):
    # 500 images in batches of 64: 8 batches, the last one short.
    cfg = fast_cfg(
        "dataset.train_size=500",
        "scheduler=onecycle",
        "optimizer=momentum",
        "optimizer.lr=0.2",
        "trainer.epochs=2",
        f"trainer.accumulation={accumulation}",
    )
    train(cfg, tmp_path)
    lrs = scalars(tmp_path, "lr/decay")
    steps_per_epoch = -(-8 // accumulation)
    assert [s for s, _ in lrs] == list(range(2 * steps_per_epoch))
    assert lrs[0][1] == pytest.approx(0.2 / 25)
    assert lrs[-1][1] == pytest.approx(0.2 / 25 / 1e4)
    assert max(v for _, v in lrs) <= 0.2 + 1e-9


@pytest.mark.parametrize(
    ("setting", "job", "gpus", "device"),
    [
        ("auto", 5, 4, "cuda:1"),
        ("auto", 0, 2, "cuda:0"),
        ("auto", 3, 1, "auto"),
        ("auto", None, 4, "auto"),
        ("cpu", 3, 4, "cpu"),
    ],
)
def test_sweep_jobs_spread_over_gpus(setting, job, gpus, device):
    assert device_for_job(setting, job, gpus) == device


def test_each_epochs_logged_lr_is_the_lr_its_last_step_used(fast_cfg, tmp_path):
    train(fast_cfg("scheduler=onecycle", "trainer.epochs=3", "trainer.log_interval=1"), tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    per_step = dict(scalars(tmp_path, "lr/decay"))
    for record in records:
        assert record["lr"]["decay"] == pytest.approx(per_step[record["step"] - 1], rel=1e-6)
    # 1cycle ends far below its start: the last record shows the run's real final LR.
    assert records[-1]["lr"]["decay"] < records[0]["lr"]["decay"] / 1000


def test_a_full_batch_run_takes_one_step_per_epoch(fast_cfg, tmp_path):
    results = train(fast_cfg("trainer.batch_size=512", "trainer.epochs=2"), tmp_path)  # all 512
    assert results["status"] == "completed" and results["steps"] == 2


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_deferred_check_run_diverges_or_skips_like_a_checked_one(fast_cfg, tmp_path, policy):
    cfg = fast_cfg("optimizer=sgd", "optimizer.lr=1e6", "scheduler=constant", "trainer.epochs=2",
                   "trainer.nonfinite_check=deferred", f"trainer.on_nonfinite={policy}")  # fmt: skip
    results = train(cfg, tmp_path)
    if policy == "stop":
        assert results["status"] == "diverged"
        first, last = results["diagnosis"]["checked_steps"]
        assert first == results["diagnosis"]["step"] <= last < results["steps"]
    else:
        assert results["status"] == "completed" and results["nonfinite_skipped_steps"] > 0
    weights = checkpoint.load_latest(tmp_path)[1]["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())  # never a NaN kept


def test_a_resumed_run_removes_the_leftovers_of_a_killed_checkpoint_write(fast_cfg, tmp_path):
    train(fast_cfg("trainer.epochs=1"), tmp_path)
    leftover = tmp_path / "checkpoints" / ".step-000000008.pt.kill.tmp"
    leftover.write_bytes(b"half a checkpoint")
    train(fast_cfg("trainer.epochs=1", "trainer.resume=auto"), tmp_path)
    assert not leftover.exists() and checkpoint.list_checkpoints(tmp_path)
