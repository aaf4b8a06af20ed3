"""Training images/second of optbench's trainer against the usual PyTorch tutorial loop (issue 2).

What is measured: training throughput (images per second of training time; no evaluation)
of the same model class, data shape (3x32x32, 10 classes), batch size, optimizer (SGD,
momentum 0.9, weight decay 5e-4) and device, on both sides, in the same run, and the ratio
optbench / reference.

- optbench: `optbench.train.trainer.train`, the loop `optbench train` runs, with the config
  composed as the CLI composes it (`dataset=synthetic`, CIFAR-style crop and flip on,
  `trainer.drop_last=true`, `--amp`, `--compile`, `trainer.channels_last=auto`). Each epoch's
  `images_per_s` is read from the run's metrics.jsonl: the trainer times an epoch's training
  steps between two `synchronize()` calls, evaluation excluded.
- reference: fp32, NCHW, the same synthetic images served as torchvision serves CIFAR-10
  (uint8 HWC array -> `PIL.Image.fromarray` -> RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize), a `DataLoader(shuffle=True,
  num_workers=--workers, pin_memory=on CUDA, drop_last=True)` started afresh each epoch, and
  `x, y = x.to(dev), y.to(dev); opt.zero_grad(); loss = F.cross_entropy(model(x), y);
  loss.backward(); opt.step(); running += loss.item()`, with `cudnn.benchmark = True` as in
  kuangliu/pytorch-cifar. (Not `torchvision.datasets.FakeData`: it draws and converts every
  image in `__getitem__`, about 3x CIFAR-10's per-image cost, which would flatter optbench.)

With `--nproc N`, the comparison is the cost of splitting the run instead: the same optbench
run as N DDP ranks (`trainer.devices=N`: gloo on the CPU, NCCL on GPUs; the global batch is
`--batch-size`) against it in one process, on the same machine, one after the other.

Each side trains one warm-up epoch of `--images` images (not timed: cudnn autotuning,
torch.compile, worker start-up, allocator growth), then `--repeats` timed epochs of
`--images` images each (`--images // --batch-size` steps). Reported: the median of the
timed epochs' images/s, their min-max, and the ratio of the medians. The two sides run one
after the other, so on a shared machine compare the load averages printed at start and end.

Run:
    python scripts/bench_throughput.py                  # CPU: ResNet-18 width 16, 1024 images (~1 min idle)
    python scripts/bench_throughput.py --model fastcnn --amp bf16
    python scripts/bench_throughput.py --model vit --batch-size 64    # the ViT (6 x 256)
    python scripts/bench_throughput.py --workers 1 --threads 1   # 2 cores: no contention
    python scripts/bench_throughput.py --nproc 2 --workers 0   # 2 gloo ranks vs 1 process (CPU)
    python scripts/bench_throughput.py --device cuda --model resnet18 --batch-size 512 --amp bf16
        # the issue's target: CIFAR ResNet-18 (width 64), 50,000 images per epoch, 8 workers
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose
from omegaconf import DictConfig
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from optbench.data import load_dataset
from optbench.errors import UserError
from optbench.hydra_command import initialize_configs
from optbench.models import build_model
from optbench.run.build import uses_channels_last
from optbench.run.plan import plan_run, synchronize
from optbench.tracking.run_info import device_name
from optbench.train.trainer import train

# The normalisation constants of the CIFAR-10 tutorials.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
# Per device type: (--images, --workers, ResNet-18 --width).
DEFAULTS = {"cpu": (1024, 2, 16), "cuda": (50_000, 8, 64)}


@dataclass
class Side:
    name: str
    settings: str  # precision and layout
    data: str  # how batches are made
    images_per_s: list[float]  # one per timed epoch

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--model", choices=("resnet18", "fastcnn", "mlp", "vit"), default="resnet18"
    )
    parser.add_argument("--width", type=int, help="ResNet-18 width (CPU 16, CUDA 64: 11.17 M)")
    parser.add_argument("--batch-size", type=int, default=128, help="(128)")
    parser.add_argument(
        "--amp", choices=("none", "bf16", "fp16"), default="none", help="optbench side only"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile (optbench side)")
    parser.add_argument("--images", type=int, help="images per epoch (CPU 1024, CUDA 50000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs after the warm-up (3)")
    parser.add_argument("--workers", type=int, help="reference DataLoader workers (CPU 2, CUDA 8)")
    parser.add_argument(
        "--nproc", type=int, default=1, help="> 1: optbench over N DDP ranks vs 1 process (1)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help=f"torch CPU threads (default {torch.get_num_threads()}); on a loaded machine "
        "fewer threads avoid waits for descheduled ones",
    )
    args = parser.parse_args(argv)
    images, workers, width = DEFAULTS[args.device]
    args.images = images if args.images is None else args.images
    args.workers = workers if args.workers is None else args.workers
    if args.width is not None and args.model != "resnet18":
        parser.error("--width sets the ResNet-18 width; --model is " + args.model)
    args.width = width if args.width is None else args.width
    if (
        args.repeats < 1
        or args.batch_size < 1
        or (args.threads is not None and args.threads < 1)
        or args.workers < 0
        or args.nproc < 1
    ):
        parser.error(
            "--repeats, --batch-size, --threads and --nproc must be at least 1, --workers at least 0"
        )
    if args.images < args.batch_size:
        parser.error(f"--images {args.images} holds no full batch of {args.batch_size}")
    return args


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The `optbench train` overrides of this benchmark."""
    epochs = 1 + args.repeats
    overrides = [
        "dataset=synthetic",
        "dataset.shape=[3,32,32]",
        f"dataset.train_size={args.images}",
        "dataset.test_size=256",
        "dataset.augment.crop_padding=4",
        "dataset.augment.flip=true",
        f"model={args.model}",
        "optimizer=momentum",  # SGD, lr 0.1, momentum 0.9, weight decay 5e-4
        f"trainer.epochs={epochs}",
        f"trainer.batch_size={args.batch_size}",
        "trainer.drop_last=true",
        f"trainer.device={args.device}",
        f"trainer.amp={args.amp}",
        f"trainer.compile={str(args.compile).lower()}",
        f"trainer.eval_interval={epochs}",
        "trainer.checkpoint_every=0",
        "trainer.progress=false",
    ]
    if args.model == "resnet18":
        overrides.append(f"model.width={args.width}")
    return overrides


def compose_config(args: argparse.Namespace) -> DictConfig:
    """The benchmark's config, composed exactly as the CLI composes it."""
    with initialize_configs():
        return compose("train", overrides=train_overrides(args))


def run_optbench(cfg: DictConfig) -> list[float]:
    """images/s of each epoch after the first, as `optbench train` measures and logs them."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        run_dir = Path(tmp) / "run"
        train(cfg, run_dir)
        records = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
    return [r["images_per_s"] for r in records if r["epoch"] > 1]


def run_optbench_ranks(args: argparse.Namespace) -> list[float]:
    """The same, as `optbench train trainer.devices=--nproc` runs it: images/s of all ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "optbench", "train", *train_overrides(args),
                   f"trainer.devices={args.nproc}", f"hydra.run.dir={run_dir}"]  # fmt: skip
        threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ | threads)
        if done.returncode:
            raise UserError(done.stderr.strip().splitlines()[-1])
        records = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
    return [r["images_per_s"] for r in records if r["epoch"] > 1]


class CifarLikeImages(Dataset):
    """uint8 HWC images served exactly as `torchvision.datasets.CIFAR10.__getitem__` does."""

    def __init__(self, data: np.ndarray, targets: list[int], transform: transforms.Compose):
        self.data, self.targets, self.transform = data, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img)
        return self.transform(img), target


def reference_loader(
    cfg: DictConfig, batch_size: int, workers: int, device: torch.device
) -> DataLoader:
    split = load_dataset(cfg.dataset).train  # the images optbench trains on
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    data = split.images.permute(0, 2, 3, 1).contiguous().numpy()
    dataset = CifarLikeImages(data, split.labels.tolist(), transform)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )


def reference_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device
) -> float:
    """One epoch of the tutorial loop; returns its images/s."""
    model.train()
    running, images = 0.0, 0
    synchronize(device)
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()  # the tutorial's running loss: a host-device sync per step
        images += len(y)
    synchronize(device)
    return images / (time.perf_counter() - start)


def run_reference(cfg: DictConfig, args: argparse.Namespace, device: torch.device) -> list[float]:
    """images/s of each epoch after a warm-up epoch."""
    torch.backends.cudnn.benchmark = True
    loader = reference_loader(cfg, args.batch_size, args.workers, device)
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg.model, plan_run(cfg).dataset).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    reference_epoch(model, loader, optimizer, device)
    return [reference_epoch(model, loader, optimizer, device) for _ in range(args.repeats)]


def optbench_settings(cfg: DictConfig, device: torch.device) -> str:
    model = build_model(cfg.model, plan_run(cfg).dataset)
    layout = (
        "channels_last" if uses_channels_last(cfg.trainer.channels_last, device, model) else "NCHW"
    )
    precision = "fp32" if cfg.trainer.amp == "none" else f"{cfg.trainer.amp} autocast"
    return f"{precision}, {layout}, " + ("compiled" if cfg.trainer.compile else "eager")


def model_label(args: argparse.Namespace) -> str:
    return f"resnet18 w{args.width}" if args.model == "resnet18" else args.model


def format_table(sides: list[Side], device: torch.device, args: argparse.Namespace) -> str:
    header = (
        f"{'side':<10} {'device':<6} {'model':<13} {'batch':>5}  {'precision':<30} "
        f"{'images/s':>9} {'min-max':>15}  data"
    )
    lines = [header, "-" * len(header)]
    for side in sides:
        spread = f"{min(side.images_per_s):.0f}-{max(side.images_per_s):.0f}"
        lines.append(
            f"{side.name:<10} {device.type:<6} {model_label(args):<13} {args.batch_size:>5}  "
            f"{side.settings:<30} {side.median:>9.0f} {spread:>15}  {side.data}"
        )
    ratio = sides[0].median / sides[1].median
    lines.append(f"ratio {sides[0].name} / {sides[1].name} (medians): {ratio:.2f}x")
    return "\n".join(lines)


def markdown_row(sides: list[Side], device: torch.device, args: argparse.Namespace) -> str:
    ours, ref = sides
    columns = [
        "date",
        "device",
        "torch",
        "model",
        "batch",
        "optbench",
        "img/s",
        "reference",
        "img/s",
        "ratio",
        "timing",
    ]
    values = [
        str(datetime.date.today()),
        device_name(device),
        torch.__version__,
        model_label(args),
        str(args.batch_size),
        ours.settings,
        f"{ours.median:.0f}",
        f"{ref.settings}, {args.workers} workers",
        f"{ref.median:.0f}",
        f"{ours.median / ref.median:.2f}x",
        f"median of {args.repeats} epoch(s) x {args.images} images after 1 warm-up epoch",
    ]
    return "\n".join(
        "| " + " | ".join(cells) + " |" for cells in (columns, ["---"] * len(columns), values)
    )


def oversubscription_note(args: argparse.Namespace, device: torch.device) -> str | None:
    """On a small CPU the reference's workers compete with its own compute threads: say so."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    if device.type != "cpu" or args.workers == 0 or args.workers + threads <= (cores or 1):
        return None
    return (
        f"note: the reference's {args.workers} DataLoader workers and its {threads} compute "
        f"threads share {cores} CPU cores; its images/s then measure that contention "
        "(compare --workers 1 --threads 1)"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench_throughput.py: --device cuda, but no CUDA device is available", file=sys.stderr
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        cfg = compose_config(args)
        settings = optbench_settings(cfg, device)
    except UserError as err:
        print(f"bench_throughput.py: {err}", file=sys.stderr)
        return 2
    steps = args.images // args.batch_size
    print(f"training throughput, {datetime.date.today()}")
    print(f"device: {device} ({device_name(device)}), torch {torch.__version__}")
    print(
        f"each side: 1 warm-up epoch, then {args.repeats} timed epochs of {steps} steps x "
        f"{args.batch_size} images, 3x32x32, 10 classes"
    )
    print(
        "optimizer: SGD lr 0.1, momentum 0.9, weight decay 5e-4; optbench builds it with its "
        "factory (fused on CUDA, no decay on biases and norms), the reference as the tutorial does"
    )
    note = oversubscription_note(args, device) if args.nproc == 1 else None
    if note:
        print(note)
    print(f"load average at start: {load_average()}", flush=True)
    if args.nproc > 1:
        return compare_ranks(args, cfg, settings, device)
    reference = Side(
        "reference",
        "fp32, NCHW, eager",
        f"PIL + torchvision transforms, DataLoader, {args.workers} workers",
        run_reference(cfg, args, device),
    )
    try:
        ours = Side("optbench", settings, "on-device uint8, batched crop+flip", run_optbench(cfg))
    except UserError as err:
        print(f"bench_throughput.py: {err}", file=sys.stderr)
        return 2
    print(f"load average at end: {load_average()}\n")
    sides = [ours, reference]
    print(format_table(sides, device, args))
    print("\nMarkdown:")
    print(markdown_row(sides, device, args))
    return 0


def compare_ranks(
    args: argparse.Namespace, cfg: DictConfig, settings: str, device: torch.device
) -> int:
    """--nproc N: optbench over N ranks against optbench in one process."""
    data = "on-device uint8, batched crop+flip"
    try:
        split = Side(f"{args.nproc} ranks", f"{settings}, DDP", data, run_optbench_ranks(args))
        whole = Side("1 process", settings, data, run_optbench(cfg))
    except UserError as err:
        print(f"bench_throughput.py: {err}", file=sys.stderr)
        return 2
    print(f"load average at end: {load_average()}\n")
    print(format_table([split, whole], device, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
