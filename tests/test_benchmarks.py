"""The benchmark scripts run end to end with tiny settings, and count optimizer state right.

The numbers themselves are the scripts' business (issue 2 and 3): these tests check that
they run and print what they promise, never how fast anything is.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_config
from torch import nn

from optbench.optim import OPTIMIZERS, build_optimizer, optimizer_config

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=SCRIPTS.parent,
    )


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPTS / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def throughput(*args: str, sides: tuple[str, str]) -> str:
    """Run bench_throughput.py on the tiny MLP; check both sides' rows and their ratio."""
    out = run_script(
        "bench_throughput.py",
        "--model", "mlp", "--images", "128", "--batch-size", "64", "--repeats", "1", *args,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for side in sides:
        row = re.search(rf"^{side}\s+cpu\s+mlp\s+64\s+.*?\s(\d+)\s+\d+-\d+\s", out.stdout, re.M)
        assert row and int(row.group(1)) > 0, out.stdout
    label = re.escape(f"ratio {sides[0]} / {sides[1]} (medians): ")
    ratio = re.search(rf"^{label}([0-9.]+)x$", out.stdout, re.M)
    assert ratio and math.isfinite(float(ratio.group(1))) and float(ratio.group(1)) > 0
    return out.stdout


def test_throughput_prints_both_sides_and_their_ratio():
    stdout = throughput("--workers", "1", "--threads", "1", sides=("optbench", "reference"))
    assert re.search(r"^\| \d{4}-\d\d-\d\d \| .+ \| .+x \|", stdout, re.M), stdout


@pytest.mark.slow
def test_throughput_over_two_ranks_prints_both_runs_and_their_ratio():
    throughput("--nproc", "2", "--threads", "1", sides=("2 ranks", "1 process"))


def test_optimizer_step_prints_every_optimizer_with_a_time_and_state():
    out = run_script(
        "bench_optimizer_step.py",
        "--width", "8", "--warmup", "1", "--steps", "1", "--repeats", "1", "--threads", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^(\w+)\s+(torch|library|reference)\s+(.*)$", line)
        if match:
            rows[match.group(1), match.group(2)] = match.group(3)
    expected = [("baseline", "torch")] + [(name, "library") for name in OPTIMIZERS]
    expected += [(name, "reference") for name, info in OPTIMIZERS.items() if info.reference]
    assert sorted(rows) == sorted(expected), out.stdout
    for key, rest in rows.items():
        numbers = re.match(r"^\S.*?\s+([0-9.]+)\s+[0-9.]+-[0-9.]+\s+([0-9.]+)x\s+([0-9.]+) x", rest)
        assert numbers, f"{key} did not run: {rest}"
        ms, ratio, state = (float(x) for x in numbers.groups())
        assert math.isfinite(ms) and ms > 0 and math.isfinite(ratio) and ratio > 0
        assert state >= 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("script", ["bench_throughput.py", "bench_optimizer_step.py"])
def test_cuda_without_cuda_exits_2_with_one_line(script):
    out = run_script(script, "--device", "cuda")
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "CUDA" in out.stderr


def stepped(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    optimizer.step()
    return optimizer


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda params: torch.optim.SGD(params, lr=0.1), 0.0),
        (lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9), 1.0),
        (lambda params: torch.optim.Adam(params, lr=1e-3), 2.0),
        (lambda params: torch.optim.Adam(params, lr=1e-3, foreach=True), 2.0),
    ],
    ids=["sgd", "momentum", "adam", "adam-foreach"],
)
def test_state_bytes_count_known_optimizers(make, expected):
    bench = load_script("bench_optimizer_step.py")
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = stepped(make(model.parameters()))
    ratio = bench.optimizer_state_bytes(optimizer) / bench.parameter_bytes(model)
    assert ratio == pytest.approx(expected, abs=0.01)  # Adam's step counters are a few bytes


def test_state_bytes_include_a_wrapped_optimizer_and_count_shared_tensors_once():
    bench = load_script("bench_optimizer_step.py")
    model = nn.Linear(64, 64)
    groups = compose_config("optimizer=lookahead").param_groups
    cfg = optimizer_config("lookahead")
    lookahead = stepped(build_optimizer(model, cfg, groups, torch.device("cpu")))
    # Lookahead's slow weights (1 x) and its AdamW base's two moments (2 x)
    ratio = bench.optimizer_state_bytes(lookahead) / bench.parameter_bytes(model)
    assert ratio == pytest.approx(3.0, abs=0.01)

    sgd = stepped(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    state = sgd.state[model.weight]
    state["alias"] = state["momentum_buffer"]  # the same storage twice counts once
    state["param"] = model.weight  # a parameter itself is not state
    assert bench.optimizer_state_bytes(sgd) == bench.parameter_bytes(model)


def test_lm_throughput_prints_tokens_per_second_of_both_sides_and_their_ratio():
    out = run_script(
        "bench_lm_throughput.py", "--dim", "16", "--depth", "1", "--heads", "2", "--block-size", "16",
        "--batch-size", "8", "--windows", "32", "--repeats", "1", "--threads", "1", "--tokens", "4000",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for side in ("reference", "optbench"):
        row = re.search(rf"^{side}\s+(\d+) tokens/s", out.stdout, re.M)
        assert row and int(row.group(1)) > 0, out.stdout
    ratio = re.search(r"^ratio optbench / reference \(medians\): ([0-9.]+)x$", out.stdout, re.M)
    assert ratio and float(ratio.group(1)) > 0


def test_gpu_benchmark_runs_on_a_cpu_and_prints_a_ratio_and_a_sync_count():
    out = run_script("bench_gpu.py", "--device", "cpu", "--quick")
    assert out.returncode == 0, out.stderr
    ratio = re.search(
        r"^ratio optbench / tutorial loop: ([0-9.]+)x \(target >= 3x\)$", out.stdout, re.M
    )
    assert ratio and math.isfinite(float(ratio.group(1))) and float(ratio.group(1)) > 0, out.stdout
    epoch = re.search(
        r"^\(b\) airbench94 recipe: ([0-9.]+) s per epoch, so ([0-9.]+) s for its 10",
        out.stdout,
        re.M,
    )
    assert epoch and float(epoch.group(2)) == pytest.approx(10 * float(epoch.group(1)), rel=0.01)
    muon = re.search(
        r"^\(b\) airbench94_muon recipe: ([0-9.]+) s per epoch, so ([0-9.]+) s for its 8",
        out.stdout,
        re.M,
    )
    assert muon and float(muon.group(2)) == pytest.approx(8 * float(muon.group(1)), rel=0.01)
    assert "reported by airbench: 94.01% in 3.83 s" in out.stdout
    syncs = re.search(
        r"^\(c\) host syncs per step between log points: ([0-9.]+) ", out.stdout, re.M
    )
    assert syncs and float(syncs.group(1)) == 0.0, out.stdout  # the deferred NaN check
    assert re.search(r"^\(d\) peak memory: n/a on cpu$", out.stdout, re.M)
