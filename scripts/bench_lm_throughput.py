"""Training tokens/second of optbench's trainer on the GPT against a plain PyTorch loop.

Both sides train the same `model=gpt` (built by optbench's model registry from the same seed),
with AdamW (lr 1e-3, weight decay 0.1) on the same byte-level Markov text, batch x block_size
tokens per step, on the same device, in the same run:

- optbench: `optbench.train.trainer.train`, the loop `optbench train` runs; tokens/s is each
  epoch's `images_per_s` (windows per second, from metrics.jsonl: training steps only, timed
  between two synchronisations) times `block_size`.
- reference: nanoGPT's loop: `get_batch` stacks random windows of a CPU tensor and moves them
  to the device, then `logits = model(x); loss = F.cross_entropy(...); opt.zero_grad();
  loss.backward(); opt.step(); loss.item()` (its per-step sync).

One warm-up epoch per side, then `--repeats` timed epochs of `--windows` windows; printed: the
median tokens/s, the min-max, and the ratio of the medians.

    python scripts/bench_lm_throughput.py                          # CPU, the default GPT (0.8 M)
    python scripts/bench_lm_throughput.py --device cuda --dim 384 --depth 6 --heads 6 --block-size 256
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose
from omegaconf import DictConfig

from optbench.data import load_dataset
from optbench.hydra_command import initialize_configs
from optbench.models import build_model
from optbench.run.plan import plan_run, synchronize
from optbench.tracking.run_info import device_name
from optbench.train.trainer import train


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--windows", type=int, default=512, help="windows per epoch (512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs after a warm-up (3)")
    parser.add_argument("--tokens", type=int, default=200_000, help="text generated (200000)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    return parser.parse_args(argv)


def compose_config(args: argparse.Namespace) -> DictConfig:
    epochs = 1 + args.repeats
    overrides = [
        "dataset=markov", "dataset.vocab_size=256", f"dataset.block_size={args.block_size}",
        f"dataset.windows_per_epoch={args.windows}", f"dataset.length={args.tokens}", "model=gpt",
        f"model.dim={args.dim}", f"model.depth={args.depth}", f"model.heads={args.heads}",
        "optimizer=adamw", "optimizer.weight_decay=0.1", "scheduler=constant",
        f"trainer.epochs={epochs}", f"trainer.batch_size={args.batch_size}", "trainer.drop_last=true",
        f"trainer.device={args.device}", f"trainer.eval_interval={epochs}",
        "trainer.checkpoint_every=0", "trainer.progress=false",
    ]  # fmt: skip
    with initialize_configs():
        return compose("train", overrides=overrides)


def run_optbench(cfg: DictConfig) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        train(cfg, Path(tmp) / "run")
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    block = cfg.dataset.block_size
    return [r["images_per_s"] * block for r in map(json.loads, lines) if r["epoch"] > 1]


def run_reference(cfg: DictConfig, args: argparse.Namespace, device: torch.device) -> list[float]:
    data = load_dataset(cfg.dataset).train.long()
    block, batch = args.block_size, args.batch_size
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg.model, plan_run(cfg).dataset).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:  # nanoGPT's train.py
        ix = torch.randint(len(data) - block, (batch,))
        x = torch.stack([data[i : i + block] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + block] for i in ix])
        return x.to(device), y.to(device)

    def epoch() -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.windows // batch):
            x, y = get_batch()
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()
        synchronize(device)
        return (args.windows // batch) * batch * block / (time.perf_counter() - start)

    epoch()
    return [epoch() for _ in range(args.repeats)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench_lm_throughput.py: --device cuda, but no CUDA device is available",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = compose_config(args)
    print(f"GPT training throughput, {datetime.date.today()}")
    print(f"device: {device} ({device_name(device)}), torch {torch.__version__}")
    print(f"model: gpt dim {args.dim} depth {args.depth} heads {args.heads}, block {args.block_size}, "
          f"batch {args.batch_size}; 1 warm-up + {args.repeats} timed epochs of {args.windows} windows")  # fmt: skip
    sides = {"reference": run_reference(cfg, args, device), "optbench": run_optbench(cfg)}
    for name, values in sides.items():
        print(f"{name:<10} {statistics.median(values):>10.0f} tokens/s  "
              f"{min(values):.0f}-{max(values):.0f}")  # fmt: skip
    ratio = statistics.median(sides["optbench"]) / statistics.median(sides["reference"])
    print(f"ratio optbench / reference (medians): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
