"""Time per optimizer step and optimizer-state memory of every optimizer optbench has (issue 3).

What is measured, on the CIFAR ResNet-18 parameter set (`ResNet18(3, 10)`, 11.17 M parameters):
- ms per `optimizer.step()`: the step alone, not the backward pass. Every parameter gets a
  fixed random gradient once; a few warm-up steps allocate the state and are not timed;
  then `--repeats` times `--steps` consecutive steps are timed (wall clock around them, with
  `torch.cuda.synchronize()` before reading the clock on CUDA). Reported: the median of the
  repeats' per-step means, their min-max, and the ratio to torch AdamW measured in the same
  run (fused on CUDA, foreach on CPU, built directly over the same parameter groups).
- state memory: the bytes of every tensor the optimizer keeps in `optimizer.state` (and in
  the state of a wrapped optimizer, e.g. Lookahead's base), each storage counted once, as a
  multiple of the parameters' bytes, beside what the registry claims (`OptimizerInfo.state`).

Every optimizer is built as the trainer builds it (`build_optimizer` with its documented
defaults from `configs/optimizer/`; fused on CUDA where the class takes it); optbench's
from-scratch implementations (`impl=reference`) get rows of their own. Sophia is passed a
Hessian estimate (random, positive) on every step, the most work its step can do; Lookahead
wraps AdamW, and its slow-weight update every k=5 steps falls inside each timed window when
`--steps` is a multiple of 5.

Run:
    python scripts/bench_optimizer_step.py                 # CPU, 1 thread: 2 warm-up, 5 repeats x 5 steps (~80 s)
    python scripts/bench_optimizer_step.py --device cuda   # GPU: 10 warm-up, 20 repeats x 50 steps
    python scripts/bench_optimizer_step.py --only adamw muon --steps 20
    python scripts/bench_optimizer_step.py --threads 2     # all cores of an idle 2-core machine
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from optbench.models.resnet import ResNet18
from optbench.optim import OPTIMIZERS, build_optimizer, optimizer_config, parameter_groups
from optbench.run.plan import synchronize
from optbench.tracking.run_info import device_name

# The trainer's parameter grouping: no weight decay on biases and normalisation weights.
GROUPS_CFG = {
    "no_decay_bias_norm": True,
    "lr_multipliers": {},
    "layer_decay": None,
    "norm_lr_multiplier": 1.0,
    "decay_per_step": False,
}
# Defaults of (warm-up steps, timed steps per repeat, repeats) per device type.
DEFAULT_SCHEDULE = {"cpu": (2, 5, 5), "cuda": (10, 50, 20)}


@dataclass
class Row:
    name: str
    impl: str
    label: str  # the class that ran, or why nothing ran
    step_ms: list[float]  # per-step mean of each repeat; empty when it did not run
    state_ratio: float | None
    claim: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--warmup", type=int, help="untimed steps first (CPU 2, CUDA 10)")
    parser.add_argument("--steps", type=int, help="timed steps per repeat (CPU 5, CUDA 50)")
    parser.add_argument("--repeats", type=int, help="timed repeats (CPU 5, CUDA 20)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these optimizers only")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 width (64: 11.17 M)")
    parser.add_argument("--no-reference", action="store_true", help="skip the impl=reference rows")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: steady timings on a shared machine, where every parallel "
        "op of a multi-threaded step can wait for a descheduled thread)",
    )
    args = parser.parse_args(argv)
    warmup, steps, repeats = DEFAULT_SCHEDULE[args.device]
    args.warmup = warmup if args.warmup is None else args.warmup
    args.steps = steps if args.steps is None else args.steps
    args.repeats = repeats if args.repeats is None else args.repeats
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1 (warm-up allocates state)")
    unknown = sorted(set(args.only or ()) - set(OPTIMIZERS))
    if unknown:
        parser.error(f"unknown optimizer {', '.join(unknown)}; choose from {', '.join(OPTIMIZERS)}")
    return args


def _optimizers(optimizer: torch.optim.Optimizer) -> Iterator[torch.optim.Optimizer]:
    """The optimizer and any it wraps (Lookahead keeps its base as `.optimizer`)."""
    yield optimizer
    for attribute in ("optimizer", "base_optimizer"):
        inner = getattr(optimizer, attribute, None)
        if isinstance(inner, torch.optim.Optimizer) and inner is not optimizer:
            yield from _optimizers(inner)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of all tensors in the optimizer's state (recursively), each storage counted once.

    Storages shared between entries (bitsandbytes' quantisation maps) count once; tensors
    that are the parameters or their gradients themselves are not state and count zero.
    """
    seen: set[int] = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen.add(p.untyped_storage().data_ptr())
            if p.grad is not None:
                seen.add(p.grad.untyped_storage().data_ptr())
    total = 0

    def visit(value: object) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)

    for opt in _optimizers(optimizer):
        visit(opt.state)  # a dict keyed by the parameters: only its values are state
    return total


def parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def time_steps(
    step: Callable[[], None], device: torch.device, warmup: int, steps: int, repeats: int
) -> list[float]:
    """Milliseconds per step: the mean of `steps` consecutive steps, for each repeat."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        times.append((time.perf_counter() - start) / steps * 1e3)
    return times


def model_with_gradients(
    gradients: list[torch.Tensor], width: int, device: torch.device
) -> nn.Module:
    """A fresh ResNet-18 with the same initial weights each time, and the fixed gradients."""
    torch.manual_seed(0)
    model = ResNet18(3, 10, width=width).to(device)
    for p, g in zip(model.parameters(), gradients, strict=True):
        p.grad = g.clone()
    return model


def fixed_gradients(width: int, device: torch.device) -> list[torch.Tensor]:
    shapes = [p.shape for p in ResNet18(3, 10, width=width).parameters()]
    g = torch.Generator().manual_seed(1)
    return [torch.randn(shape, generator=g).to(device) for shape in shapes]


def step_function(optimizer: torch.optim.Optimizer, hessian: bool) -> Callable[[], None]:
    if not hessian:
        return optimizer.step
    params = [p for group in optimizer.param_groups for p in group["params"]]
    g = torch.Generator().manual_seed(2)
    estimate = [(torch.rand(p.shape, generator=g) + 0.1).to(p.device) for p in params]
    return lambda: optimizer.step(hessian=estimate)


def baseline_adamw(model: nn.Module, device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    """torch.optim.AdamW built directly: fused on CUDA, foreach on CPU; AdamW's documented defaults."""
    cfg = optimizer_config("adamw")
    groups = parameter_groups(model, weight_decay=cfg.weight_decay, no_decay_bias_norm=True)
    kind = {"fused": True} if device.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **kind)
    return optimizer, f"torch AdamW ({next(iter(kind))})"


def measure(
    name: str,
    impl: str,
    build: Callable[[nn.Module], tuple[torch.optim.Optimizer, str]],
    args: argparse.Namespace,
    gradients: list[torch.Tensor],
    device: torch.device,
) -> Row:
    claim = OPTIMIZERS["adamw" if name == "baseline" else name].state
    model = model_with_gradients(gradients, args.width, device)
    try:
        optimizer, label = build(model)
        hessian = name in OPTIMIZERS and OPTIMIZERS[name].hessian
        step = step_function(optimizer, hessian)
        times = time_steps(step, device, args.warmup, args.steps, args.repeats)
    except Exception as err:  # a row says why it cannot run here
        reason = str(err).splitlines()[0] if str(err) else ""
        return Row(name, impl, f"not run: {type(err).__name__}: {reason}"[:100], [], None, claim)
    ratio = optimizer_state_bytes(optimizer) / parameter_bytes(model)
    del optimizer, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Row(name, impl, label, times, ratio, claim)


def registry_builder(
    name: str, impl: str, device: torch.device
) -> Callable[[nn.Module], tuple[torch.optim.Optimizer, str]]:
    def build(model: nn.Module) -> tuple[torch.optim.Optimizer, str]:
        cfg: DictConfig = optimizer_config(name)
        if impl == "reference":
            cfg.impl = "reference"
        optimizer = build_optimizer(model, cfg, OmegaConf.create(GROUPS_CFG), device)
        label = type(optimizer).__name__
        if optimizer.defaults.get("fused") or any(g.get("fused") for g in optimizer.param_groups):
            label += " (fused)"
        return optimizer, label

    return build


def significant(value: float, digits: int) -> str:
    """`value` to `digits` significant figures in fixed notation: 1538, 22.68, 1.00, 0.00143."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.{digits - 1}f}"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    return f"{value:.{decimals}f}"


def format_table(rows: list[Row]) -> str:
    baseline = statistics.median(rows[0].step_ms) if rows[0].step_ms else math.nan
    header = (
        f"{'optimizer':<14} {'impl':<9} {'class':<26} {'ms/step':>9} {'min-max':>17} "
        f"{'x AdamW':>8} {'state':>10}  registry claim"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if not row.step_ms:
            lines.append(f"{row.name:<14} {row.impl:<9} {row.label}")
            continue
        median = statistics.median(row.step_ms)
        spread = f"{significant(min(row.step_ms), 4)}-{significant(max(row.step_ms), 4)}"
        ratio = significant(median / baseline, 3)
        lines.append(
            f"{row.name:<14} {row.impl:<9} {row.label:<26} {significant(median, 4):>9} "
            f"{spread:>17} {ratio:>7}x {row.state_ratio:>8.1f} x  {row.claim}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench_optimizer_step.py: --device cuda, but no CUDA device is available",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    gradients = fixed_gradients(args.width, device)
    n_params = sum(g.numel() for g in gradients)
    print(f"optimizer step benchmark, {datetime.date.today()}")
    print(f"device: {device} ({device_name(device)}), torch {torch.__version__}")
    print(
        f"parameters: CIFAR ResNet-18 width {args.width}, {n_params / 1e6:.2f} M "
        f"({sum(g.numel() * g.element_size() for g in gradients) / 2**20:.1f} MiB), fixed random gradients"
    )
    print(
        f"timing: optimizer.step() only; {args.warmup} warm-up steps (untimed), then "
        f"{args.repeats} repeats x {args.steps} steps, wall clock"
        + (" with torch.cuda.synchronize()" if device.type == "cuda" else "")
        + "; ms/step = median of the repeats' means"
    )
    print(
        "state: bytes of the tensors in optimizer.state (and a wrapped base's) / parameter bytes\n"
    )

    jobs: list[tuple[str, str, Callable]] = [
        ("baseline", "torch", lambda model: baseline_adamw(model, device))
    ]
    for name, info in OPTIMIZERS.items():
        if args.only and name not in args.only:
            continue
        jobs.append((name, "library", registry_builder(name, "library", device)))
        if info.reference and not args.no_reference:
            jobs.append((name, "reference", registry_builder(name, "reference", device)))
    rows = []
    for name, impl, build in jobs:
        rows.append(measure(name, impl, build, args, gradients, device))
        print(f"  measured {name} ({impl})", file=sys.stderr, flush=True)
    print(format_table(rows))
    print(f"\nx AdamW: median ms/step over that of {rows[0].label}, measured in the same run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
