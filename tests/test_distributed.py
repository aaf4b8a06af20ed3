"""One run over two gloo processes on the CPU: the same run as one process, split.

The 2-rank runs are started by torchrun (tests/ddp_worker.py trains them all in one launch)
or by `optbench train trainer.devices=2`; every answer is the single-process run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import FAST
from helpers import compose_config, read_jsonl
from user_package import write_user_package

from optbench import distributed
from optbench.commands.launch import gpu_block
from optbench.data.batches import shard_slice
from optbench.train import checkpoint
from optbench.train.trainer import train

TESTS = Path(__file__).parent
# Every test here starts two or more processes (gloo ranks, torchrun, Slurm tasks).
pytestmark = pytest.mark.slow
EPOCHS = ["trainer.epochs=2"]
# One run per optimizer family, and accumulation for the three the issue names. FAST's
# global batch is 64: 32 per rank, or 2 x 16 with accumulation.
RUNS = {
    "momentum": ["optimizer=momentum"],
    "adamw": ["optimizer=adamw"],
    "muon": ["optimizer=muon"],
    "momentum_accum": ["optimizer=momentum", "trainer.batch_size=32", "trainer.accumulation=2"],
    "adamw_accum": ["optimizer=adamw", "trainer.batch_size=32", "trainer.accumulation=2"],
    "muon_accum": ["optimizer=muon", "trainer.batch_size=32", "trainer.accumulation=2"],
    "lion": ["optimizer=lion"],
    "lamb": ["optimizer=lamb"],
    "sophia": ["optimizer=sophia", "optimizer.update_period=2"],
    "schedule_free": ["optimizer=schedule_free"],
    "lookahead": ["optimizer=lookahead"],
    "adamw8bit": ["optimizer=adamw8bit"],
    "prodigy": ["optimizer=prodigy"],
    "soap": ["optimizer=soap"],
    # A user's own optimizer and schedule, by import path (tests/user_package.py).
    "custom": [
        "optimizer=custom",
        "optimizer.target=userpkg.opt.MyAdam",
        "scheduler=custom",
        "scheduler.target=userpkg.sched.half_cosine",
    ],
}
# Float rounding: two ranks sum each half of the batch, then average the halves.
ATOL = {"momentum": 1e-6, "momentum_accum": 1e-6}
ADAPTIVE_ATOL = 1e-4  # dividing by sqrt(v) magnifies a rounding difference in small gradients
# SOAP's eigenbases turn rounding into a rotation (weights 2.8e-2 apart after 16 steps): the
# ranks must still agree exactly, and train as well as one process does.
LOSS_ONLY = {"soap"}


# An LR that overflows within a few steps: the loss turns non-finite on every rank at once.
DIVERGING = [*FAST, *EPOCHS, "optimizer=momentum", "optimizer.lr=1e4"]


def overrides(name: str) -> list[str]:
    return [*FAST, *EPOCHS, *RUNS[name]]


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory) -> Iterator[Path]:
    """Every RUNS entry trained by 2 torchrun ranks; returns the folder of their weights."""
    root = tmp_path_factory.mktemp("ddp")
    package = write_user_package(root / "user")
    spec = root / "spec.json"
    spec.write_text(json.dumps({
        "root": str(root / "runs"), "weights": str(root),
        "runs": {name: overrides(name) for name in RUNS} | {"diverging": DIVERGING},
    }))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(TESTS / "ddp_worker.py"), str(spec)],
        capture_output=True, text=True, timeout=600,
        env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(package)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with pytest.MonkeyPatch.context() as patch:  # the single-process runs import it too
        patch.syspath_prepend(str(package))
        yield root


@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_end_with_the_single_process_weights(name, two_rank_runs, tmp_path):
    train(compose_config(*overrides(name)), tmp_path / name)
    single = checkpoint.load_latest(tmp_path / name)[1]["model"]
    rank0 = torch.load(two_rank_runs / f"{name}.rank0.pt")
    rank1 = torch.load(two_rank_runs / f"{name}.rank1.pt")
    saved = checkpoint.load_latest(two_rank_runs / "runs" / name)[1]["model"]
    atol = ATOL.get(name, ADAPTIVE_ATOL)
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        assert torch.equal(saved[key], rank0[key])
        if name in LOSS_ONLY:
            continue
        difference = (rank0[key].float() - value.float()).abs().max().item()
        assert difference <= atol, f"{key}: {difference:.2e} from the single process"
    if name in LOSS_ONLY:
        split = read_jsonl(two_rank_runs / "runs" / name / "metrics.jsonl")[-1]
        whole = read_jsonl(tmp_path / name / "metrics.jsonl")[-1]
        assert split["test_loss"] == pytest.approx(whole["test_loss"], rel=0.02)


def test_the_ranks_log_what_a_single_process_logs(two_rank_runs, tmp_path):
    train(compose_config(*overrides("adamw")), tmp_path / "adamw")
    split = read_jsonl(two_rank_runs / "runs" / "adamw" / "metrics.jsonl")
    whole = read_jsonl(tmp_path / "adamw" / "metrics.jsonl")
    assert [r.keys() for r in split] == [r.keys() for r in whole]
    for a, b in zip(split, whole, strict=True):  # losses and accuracies reduced over ranks
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-6)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_a_nonfinite_step_stops_every_rank_with_one_diagnosis(two_rank_runs, tmp_path):
    whole = train(compose_config(*DIVERGING), tmp_path / "whole")
    split = json.loads((two_rank_runs / "runs" / "diverging" / "results.json").read_text())
    assert whole["status"] == split["status"] == "diverged"
    assert split["diagnosis"]["step"] == whole["diagnosis"]["step"]
    assert split["diagnosis"]["nonfinite_grads"] == whole["diagnosis"]["nonfinite_grads"]
    rank0 = torch.load(two_rank_runs / "diverging.rank0.pt")
    rank1 = torch.load(two_rank_runs / "diverging.rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # both kept the last good state


def test_the_ranks_end_their_group_and_its_threads_before_exit(two_rank_runs):
    # torch's gloo workers must not outlive the interpreter: one that frees a tensor after
    # Python began finalizing aborts the rank (scripts/repro_gloo_abort.py).
    for rank in (0, 1):
        threads_file = two_rank_runs / f"threads.rank{rank}.json"
        if not threads_file.exists():
            pytest.skip("no /proc/self/task here")
        threads = json.loads(threads_file.read_text())
        assert not [name for name in threads if "gloo" in name], threads


def test_leave_without_a_group_does_nothing():
    distributed.leave()  # a single process: no group, no alarm


def test_leave_stuck_on_a_collective_ends_the_rank_after_its_timeout():
    # A rank that exits with a collective in flight (after an error) must not hang on it.
    script = (
        "import time, torch.distributed as dist\n"
        "from optbench import distributed\n"
        "distributed.LEAVE_TIMEOUT_S = 1\n"
        "dist.is_initialized = lambda: True\n"
        "dist.destroy_process_group = lambda: time.sleep(60)\n"
        "distributed.leave()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGALRM, done.stderr


def optbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["optbench", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


# Long epochs of tiny steps (per rank: 8 samples), so a signal after epoch 1 lands mid-epoch 2.
SLOW = [*FAST, "dataset.train_size=2048", "trainer.batch_size=16", "trainer.epochs=3",
        "optimizer=adamw", "trainer.devices=2"]  # fmt: skip


def test_sigterm_stops_both_ranks_and_resume_equals_the_uninterrupted_run(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = optbench("train", *SLOW, f"hydra.run.dir={whole}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(
        ["optbench", "train", *SLOW, f"hydra.run.dir={cut}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in proc.stdout:
        if "epoch 1/3" in line:  # logged after epoch 1's checkpoint: epoch 2 has begun
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, rest
    assert "Traceback" not in rest
    assert json.loads((cut / "results.json").read_text())["status"] == "interrupted"
    _, payload = checkpoint.load_latest(cut)
    assert payload["state"]["epoch"] == 1 and payload["state"]["batch"] > 0  # mid-epoch 2

    resumed = optbench("train", *SLOW, f"hydra.run.dir={cut}", "trainer.resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((cut / "results.json").read_text())["status"] == "completed"
    final = checkpoint.load_latest(cut)[1]["model"]
    for name, tensor in checkpoint.load_latest(whole)[1]["model"].items():
        assert torch.equal(tensor, final[name]), name


def slurm_task(rank: int, *args: str, cwd: Path) -> subprocess.Popen:
    """Task `rank` of a 2-task Slurm job step on this host, as `srun optbench ...` starts it."""
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1",
             "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "localhost", "SLURM_PROCID": str(rank),
             "SLURM_LOCALID": str(rank), "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.Popen(["optbench", *args], cwd=cwd, env=os.environ | slurm,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_slurm_tasks_run_one_run_and_only_rank_0_writes_a_single_process_runs_files(tmp_path):
    args = ["train", *FAST, "trainer.epochs=1", "optimizer=adamw", "paths.output_dir=out"]
    one = optbench(*args, f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    (tmp_path / "slurm").mkdir()
    tasks = [slurm_task(rank, *args, cwd=tmp_path / "slurm") for rank in (0, 1)]
    outputs = [task.communicate(timeout=300) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][1]
    runs = list((tmp_path / "slurm" / "out" / "train").glob("*/*"))
    assert len(runs) == 1  # both tasks took rank 0's time-stamped run directory

    def files(run_dir: Path) -> list[str]:
        return sorted(
            "events" if p.name.startswith("events.") else str(p.relative_to(run_dir))
            for p in run_dir.rglob("*") if p.is_file()
        )  # fmt: skip

    assert files(runs[0]) == files(tmp_path / "one")
    assert len(list(runs[0].glob("events.*"))) == 1
    assert outputs[1] == ("", "")  # rank 1 printed nothing
    single = checkpoint.load_latest(tmp_path / "one")[1]["model"]
    split = checkpoint.load_latest(runs[0])[1]["model"]
    for key, value in single.items():
        assert torch.allclose(split[key], value, atol=ADAPTIVE_ATOL), key


def test_lr_find_over_two_ranks_finds_the_single_process_lrs(tmp_path):
    args = [*FAST, "optimizer=momentum", "lr_find.num_iter=40"]
    one = optbench("lr-find", *args, f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    two = optbench(
        "lr-find", *args, "trainer.devices=2", f"hydra.run.dir={tmp_path / 'two'}", cwd=tmp_path
    )
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a, b = (json.loads((tmp_path / r / "lr_find.json").read_text()) for r in ("one", "two"))
    assert a["points"] == b["points"] and a["stop_reason"] == b["stop_reason"]
    for rule, suggestion in a["suggestions"].items():
        assert b["suggestions"][rule]["lr"] == pytest.approx(suggestion["lr"], rel=1e-6), rule


def test_the_shards_of_a_batch_tile_it_in_order():
    for start, end, ranks in [(0, 64, 2), (64, 100, 4), (10, 13, 3), (0, 5, 8)]:
        slices = [shard_slice(start, end, (r, ranks)) for r in range(ranks)]
        covered = [i for s in slices for i in range(s.start, s.stop)]
        assert covered == list(range(start, end))
        sizes = [s.stop - s.start for s in slices]
        assert max(sizes) - min(sizes) <= 1


def test_sweep_jobs_get_disjoint_blocks_of_gpus():
    assert gpu_block(None, 2, 8) is None  # a single run: every visible GPU
    assert [gpu_block(n, 2, 8) for n in range(5)] == ["0,1", "2,3", "4,5", "6,7", "0,1"]
    assert gpu_block(3, 4, 4) is None  # one block: the job's ranks take them all


# The README's two-rank command (Several GPUs: one run over N processes).
README_TWO_RANKS = ["train", "trainer.devices=2", "dataset=synthetic", "model=mlp",
                    "trainer.epochs=2"]  # fmt: skip


def test_ten_two_rank_launches_all_complete(tmp_path):
    # Before `distributed.leave`, 4 launches in 29 here ended with a rank aborting at exit
    # ("terminate called without an active exception", exit 250) after a completed run.
    for launch in range(10):
        run_dir = tmp_path / f"run{launch}"
        done = optbench(*README_TWO_RANKS, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert done.returncode == 0, f"launch {launch}: {done.stderr[-2000:]}"
        assert "terminate called" not in done.stderr
        assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
