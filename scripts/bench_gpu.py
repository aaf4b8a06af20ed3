"""Issue 15's speed figures in one run, on synthetic CIFAR-shaped data (3x32x32, 10 classes).

(a) optbench's ResNet-18, bf16, batch 512, against the PyTorch tutorial loop: images/s and
    their ratio (target >= 3x). Both sides are scripts/bench_throughput.py's, unchanged.
(b) the airbench94 and airbench94_muon recipes (`+experiment=airbench94`, `..._muon`): seconds
    per training epoch of 50,000 images after a warm-up epoch, and the implied time of their
    10 and 8 epochs; beside them the time of airbench's own trainer when the `airbench`
    package is importable, else the figures airbench reports (they are not measured here).
(c) host-device syncs per optimizer step between log points, counted by
    optbench/run/sync.py's `to_host` over the airbench run's steps (target 0).
(d) that run's peak GPU memory, and how many such runs fit on the GPU by memory alone.

On CUDA every optbench side runs with bf16, channels-last and trainer.compile=step; the
whole script takes a few minutes on one recent GPU (compilation included). `--device cpu
--quick` runs the same code on tiny sizes, eager and fp32, for the tests: its figures say
nothing about speed.

Run:
    python scripts/bench_gpu.py                      # CUDA
    python scripts/bench_gpu.py --device cpu --quick # a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_throughput as throughput  # a script beside this one

from optbench.hydra_command import initialize_configs
from optbench.run import sync
from optbench.run.plan import synchronize
from optbench.run.step import TrainStep
from optbench.tracking.run_info import device_name
from optbench.train.trainer import train

# Reported by airbench (Keller Jordan, cifar10-airbench README), on one A100: not measured here.
AIRBENCH_REPORTED = "94.01% in 3.83 s eager / 3.09 s compiled (airbench94_muon: 2.59 s), A100"
RECIPE_EPOCHS = {"airbench94": 10, "airbench94_muon": 8}
# Per mode: ResNet-18 width, images per epoch, timed epochs, reference workers, airbench images.
SIZES = {"full": (64, 50_000, 2, 8, 50_000), "quick": (8, 128, 1, 1, 512)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    return parser.parse_args(argv)


def resnet_side_by_side(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(a): images/s of optbench and of the tutorial loop, as bench_throughput.py measures them."""
    width, images, repeats, workers, _ = SIZES["quick" if args.quick else "full"]
    cuda = device.type == "cuda"
    options = throughput.parse_args(
        ["--device", device.type, "--model", "resnet18", "--width", str(width),
         "--batch-size", "64" if args.quick else "512", "--images", str(images),
         "--repeats", str(repeats), "--workers", str(workers), "--amp", "bf16" if cuda else "none"]
    )  # fmt: skip
    options.compile = "step" if cuda else False
    cfg = throughput.compose_config(options)
    reference = throughput.run_reference(cfg, options, device)
    ours = throughput.run_optbench(cfg)
    return min(ours), max(reference)  # the worse of ours against the better of theirs


def airbench_config(args: argparse.Namespace, device: torch.device, run_dir: Path, recipe: str):
    images = SIZES["quick" if args.quick else "full"][4]
    cuda = device.type == "cuda"
    overrides = [
        f"+experiment={recipe}", "dataset=synthetic", "dataset.shape=[3,32,32]",
        f"dataset.train_size={images}", f"dataset.test_size={images // 5}",
        "trainer.epochs=2", "trainer.eval_interval=2", "trainer.checkpoint_every=0",
        "trainer.progress=false", f"trainer.device={device.type}", "trainer.nonfinite_check=deferred",
        f"trainer.amp={'bf16' if cuda else 'none'}", f"trainer.compile={'step' if cuda else 'false'}",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    if args.quick:
        overrides += ["model.widths=[8,16,16]", "trainer.batch_size=128"]
    with initialize_configs():
        return compose("train", overrides=overrides)


def airbench_recipe(args: argparse.Namespace, device: torch.device, name: str) -> dict[str, float]:
    """(b), (c), (d): the recipe's timed second epoch, its syncs per step, its peak memory."""
    reads: list[int] = []  # host reads inside each optimizer step
    original = TrainStep.__call__

    def counted(self, micro_batches, step=0):
        before = sync.HOST_READS[0]
        result = original(self, micro_batches, step)
        reads.append(sync.HOST_READS[0] - before)
        return result

    TrainStep.__call__ = counted
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            run_dir = Path(tmp) / "run"
            results = train(airbench_config(args, device, run_dir, name), run_dir)
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    finally:
        TrainStep.__call__ = original
    # The deferred check's first step, which makes the optimizer state, is checked on the host.
    return {
        "epoch_s": records[-1]["epoch_time_s"],
        "syncs_per_step": sum(reads[1:]) / len(reads[1:]),
        "peak_mb": results["peak_memory_mb"] or float("nan"),
        "accuracy": results["final_test_acc"],
    }


def airbench_own_time() -> str:
    """airbench's trainer on this GPU (it downloads CIFAR-10), or why it did not run."""
    if importlib.util.find_spec("airbench") is None:
        return f"airbench not installed; reported by airbench: {AIRBENCH_REPORTED}"
    import airbench

    try:
        airbench.warmup94()
        synchronize(torch.device("cuda"))
        start = time.perf_counter()
        airbench.train94()
        synchronize(torch.device("cuda"))
    except Exception as err:  # its data download, its API: report and carry on
        return f"airbench's own trainer failed ({type(err).__name__}: {err}); reported by airbench: {AIRBENCH_REPORTED}"
    return f"airbench's own train94 here: {time.perf_counter() - start:.2f} s (with its evaluation)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu.py: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    print(f"bench_gpu.py, {datetime.date.today()}, {'quick' if args.quick else 'full'} sizes")
    print(f"device: {device} ({device_name(device)}), torch {torch.__version__}", flush=True)
    ours, reference = resnet_side_by_side(args, device)
    print(f"(a) resnet18 images/s: optbench {ours:.0f}, tutorial loop {reference:.0f}")
    print(f"ratio optbench / tutorial loop: {ours / reference:.2f}x (target >= 3x)", flush=True)
    recipes = {name: airbench_recipe(args, device, name) for name in RECIPE_EPOCHS}
    for name, epochs in RECIPE_EPOCHS.items():
        print(
            f"(b) {name} recipe: {recipes[name]['epoch_s']:.3f} s per epoch, so "
            f"{epochs * recipes[name]['epoch_s']:.2f} s for its {epochs} epochs (training "
            f"only; synthetic data, accuracy {recipes[name]['accuracy']:.4f} means nothing)"
        )
    recipe = recipes["airbench94"]
    if device.type == "cuda":
        print(f"    {airbench_own_time()}")
    else:
        print(f"    reported by airbench: {AIRBENCH_REPORTED}")
    print(f"(c) host syncs per step between log points: {recipe['syncs_per_step']:.2f} "
          "(to_host reads inside each optimizer step after the first; target 0)")  # fmt: skip
    if device.type == "cuda":
        total_mb = torch.cuda.get_device_properties(device).total_memory / 2**20
        fits = int(0.9 * total_mb // recipe["peak_mb"])
        print(f"(d) peak memory: {recipe['peak_mb']:.0f} MiB of {total_mb:.0f} MiB; "
              f"runs that fit on one GPU by memory (90%): {fits}")  # fmt: skip
    else:
        print("(d) peak memory: n/a on cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
